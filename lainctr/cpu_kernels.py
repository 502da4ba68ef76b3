"""Which rounding this machine's CPU kernels do: :func:`kernel_fingerprint`, recorded with every run
(``versions.cpu_kernels``) and keying the bit-exact regression fixture (``tests/regression/``)."""
from __future__ import annotations

import hashlib

import torch


def kernel_fingerprint() -> str:
    """``<CPU capability>-<12 hex>``: a hash of the bits that one fixed training step of the zoo's op mix (MLP, masked
    target attention, GRU, layer norm, sin/cos features, BCE, Adam) produces on this machine at the current thread
    count.

    The CPU capability alone does not fix the rounding: two AVX512 machines (an earlier one, and an AMD EPYC with
    AVX512-BF16) gave different tiny-run metrics for 11 of the 14 models, by up to 2.6e-2 (SDIM); MKL, for one,
    chooses its GEMM code by CPU model, not by ATen's capability. Machines with equal fingerprints round these
    ops alike."""
    generator = torch.Generator().manual_seed(0)
    digest = hashlib.sha256()

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator)

    with torch.random.fork_rng(devices=[]):       # the modules' default initialisation leaves the global RNG alone
        mlp = torch.nn.Sequential(torch.nn.Linear(88, 200), torch.nn.ReLU(), torch.nn.Linear(200, 80),
                                  torch.nn.Sigmoid(), torch.nn.Linear(80, 1))
        gru = torch.nn.GRU(16, 16, batch_first=True)
    parameters = [*mlp.parameters(), *gru.parameters()]
    with torch.no_grad():
        for parameter in parameters:
            parameter.copy_(randn(*parameter.shape) * 0.1)
    query, keys = randn(256, 1, 16).requires_grad_(), randn(256, 100, 16).requires_grad_()
    mask = torch.arange(100) < torch.randint(0, 101, (256, 1), generator=generator)
    scores = torch.bmm(query, keys.transpose(1, 2)).squeeze(1).masked_fill(~mask, -1e9) / 4.0
    weights = torch.softmax(scores, dim=-1)
    pooled = torch.bmm(weights.unsqueeze(1), keys).squeeze(1)
    states, _ = gru(keys[:, :20])
    normed = torch.nn.functional.layer_norm(states.mean(1), (16,))
    fourier = randn(256, 20) * 3.0                # LAIN's spectral length encoder and DiffuMIN's step embedding
    features = torch.cat([pooled, normed, torch.tanh(pooled) * torch.exp(-pooled.abs()), torch.sin(fourier),
                          torch.cos(fourier)], dim=1)
    logit = mlp(features).squeeze(1)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logit, (randn(256) > 0).float())
    loss.backward()
    torch.optim.Adam(parameters, lr=1e-3).step()
    for tensor in (scores, weights, pooled, states, logit, loss, query.grad, keys.grad, *parameters):
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    return f"{torch.backends.cpu.get_cpu_capability()}-{digest.hexdigest()[:12]}"
