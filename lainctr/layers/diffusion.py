"""DMIG, DiffuMIN's diffusion multi-interest generator: a DDPM over interest vectors, x0-parametrised.

* :class:`NoiseSchedule`: beta_t (linear or cosine), abar_t = prod_{u <= t} (1 - beta_u), the forward process
  q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I), the respaced reverse steps and their posterior;
* :class:`Denoiser`: f_theta(x, t, j), post-LN blocks of self-attention over the channel interests (slot j =
  x), cross-attention to the channel vector o_j and an FFN; returns the estimate of x_0;
* :class:`DiffusionInterestGenerator`: the denoising loss (training) and the generation r*_j (training and
  inference), with its randomness under control: training noise comes from a generator the module owns
  (seeded from the global seed when it is built, saved in the state dict), inference noise from a fixed
  bank indexed by the sample, so a prediction depends on the sample only.

Spec: ``shared/docs/DIFFUMIN_SPEC.md`` section 3.2 (the public code's sampler defects, section 10, items 2-3).
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional, Tuple, cast

import torch
from torch import nn

from .transformer import LAYER_NORM_EPS, FeedForward, MultiHeadAttention

BETA_SCHEDULES = ("linear", "cosine")
COSINE_OFFSET, MAX_BETA = 0.008, 0.999          # Nichol & Dhariwal's s and beta clip
DIFFUSION_SEED_OFFSET = 104729                  # the training-noise stream starts at the global seed + this
BANK_KEY = (1000003, 10007)                     # bank row = (user * 1000003 + item * 10007 + seq_len) mod M
SAMPLE_STARTS = ("respaced", "fixed")           # reverse steps: t_s .. 0 respaced (spec) | S - 1 .. 0 (public code)
EVAL_SAMPLINGS = ("bank", "mean")               # eval noise: the sample's bank row | none, t_s = T_d // 2
SAMPLE_GRADS = ("full", "last")                 # gradients through every reverse iteration | the last one only


def beta_schedule(name: str, num_steps: int, beta_start: float, beta_end: float) -> torch.Tensor:
    """beta_t, t = 0..T_d - 1, float64: ``linear`` from beta_start to beta_end, or ``cosine`` (abar_t =
    cos^2(((t + 1) / T_d + s) / (1 + s) * pi / 2) / cos^2(s / (1 + s) * pi / 2), betas clipped at 0.999)."""
    if name == "linear":
        return torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)
    if name == "cosine":
        grid = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
        abar = torch.cos((grid + COSINE_OFFSET) / (1 + COSINE_OFFSET) * math.pi / 2) ** 2
        return (1 - abar[1:] / abar[:-1]).clamp(max=MAX_BETA)
    raise ValueError(f"beta_schedule must be one of {BETA_SCHEDULES}, got '{name}'")


class NoiseSchedule(nn.Module):
    """The forward process and the respaced reverse steps of a DDPM with T_d steps.

    Args:
        num_steps: T_d (>= 2); schedule / beta_start / beta_end: see :func:`beta_schedule`.
    """

    def __init__(self, num_steps: int, schedule: str = "linear", beta_start: float = 1e-4, beta_end: float = 0.02):
        super().__init__()
        if num_steps < 2:
            raise ValueError(f"diffusion_steps must be >= 2, got {num_steps}")
        betas = beta_schedule(schedule, num_steps, beta_start, beta_end)
        if not bool(((betas > 0) & (betas < 1)).all()):
            raise ValueError(f"every beta must be in (0, 1); got [{betas.min():g}, {betas.max():g}]")
        self.num_steps = num_steps
        # float64: 1 - abar and 1 - abar_t / abar_t' near t = 0 lose 3 digits in float32 (the coefficients are
        # (B, c) tensors, cast to the interests' dtype)
        self.register_buffer("alphas_cumprod", torch.cumprod(1 - betas, 0), persistent=False)

    def add_noise(self, x0: torch.Tensor, step: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps: x0, noise (..., d), step (...) long -> (..., d)."""
        abar = cast(torch.Tensor, self.alphas_cumprod)[step].unsqueeze(-1)
        return abar.sqrt().to(x0.dtype) * x0 + (1 - abar).sqrt().to(x0.dtype) * noise

    def posterior_coefficients(self, step: torch.Tensor, previous: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """(c_0, c_t, sigma), float64, of q(x_{t'} | x_t, x_0) = N(c_0 x_0 + c_t x_t, sigma^2 I) between respaced steps
        t > t' (...): with a = abar_t, a' = abar_t', beta' = 1 - a / a',
        c_0 = sqrt(a') beta' / (1 - a), c_t = sqrt(1 - beta') (1 - a') / (1 - a), sigma^2 = beta' (1 - a') / (1 - a)."""
        table = cast(torch.Tensor, self.alphas_cumprod)
        a, a_prev = table[step], table[previous]
        beta = 1 - a / a_prev
        return (a_prev.sqrt() * beta / (1 - a), (1 - beta).sqrt() * (1 - a_prev) / (1 - a),
                (beta * (1 - a_prev) / (1 - a)).clamp(min=0).sqrt())

    def posterior_step(self, x: torch.Tensor, x0: torch.Tensor, step: torch.Tensor, previous: torch.Tensor,
                       noise: torch.Tensor) -> torch.Tensor:
        """A draw of x_{t'} given x_t = x and the estimate x0, with standard normal ``noise`` (..., d)."""
        c0, ct, sigma = (c.unsqueeze(-1).to(x.dtype) for c in self.posterior_coefficients(step, previous))
        return c0 * x0 + ct * x + sigma * noise

    @staticmethod
    def respaced_steps(start: torch.Tensor, num_steps: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """The reverse schedule of every row: K = min(S, t_s + 1) distinct steps, evenly spaced from
        tau_K = t_s down to tau_1 = 0 (tau_k = (k - 1) t_s // (K - 1); one step at t_s when K = 1).

        Rows with K < S are padded at the front with inactive iterations (at t_s) so that all rows run S
        iterations; the last iteration is active in every row.

        Args:
            start: (...) long t_s >= 0; num_steps: S >= 0.
        Returns:
            steps (..., S) long (iteration order, the first active one at t_s) and active (..., S) bool.
        """
        start = start.unsqueeze(-1)
        count = start.clamp(max=num_steps - 1) + 1                                       # K
        iteration = torch.arange(num_steps, device=start.device)
        active = iteration >= num_steps - count
        k = count - (iteration - (num_steps - count))                                    # K .. 1 when active
        spaced = (k - 1) * start // (count - 1).clamp(min=1)
        steps = torch.where(active & (count > 1), spaced, start.expand_as(spaced))
        return steps, active


class TimestepEmbedding(nn.Module):
    """gamma(t) = MLP([sin(t w); cos(t w)]), w_i = exp(-i ln(10^4) / (d/2 - 1)), i < d/2; MLP d -> 4d (SiLU) -> d."""

    def __init__(self, dim: int):
        super().__init__()
        half = dim // 2
        self.register_buffer("frequencies", torch.exp(-torch.arange(half) * math.log(1e4) / max(half - 1, 1)),
                             persistent=False)
        self.mlp = nn.Sequential(nn.Linear(2 * half, 4 * dim), nn.SiLU(), nn.Linear(4 * dim, dim))

    def forward(self, step: torch.Tensor) -> torch.Tensor:
        """step: (...) long -> (..., d)."""
        angle = step.unsqueeze(-1).float() * cast(torch.Tensor, self.frequencies)
        return self.mlp(torch.cat([torch.sin(angle), torch.cos(angle)], dim=-1))


class DenoiserBlock(nn.Module):
    """``Z = LN(Z + MHA(Z, Z, Z)); Z = LN(Z + MHA(Z, o, o)); Z = LN(Z + FFN(Z))`` (post-LN, no mask).

    The cross-attention has a single key, the channel vector o, so its softmax is 1 for every query and
    head: MHA(Z, o, o) = W_o W_v o for every token. It is computed as that product (bias-free W_v, W_o);
    the query and key projections would receive no gradient.
    """

    def __init__(self, dim: int, num_heads: int, ffn_factor: int):
        super().__init__()
        self.self_attention = MultiHeadAttention(dim, num_heads)
        self.self_norm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.cross_value = nn.Linear(dim, dim, bias=False)
        self.cross_output = nn.Linear(dim, dim, bias=False)
        self.cross_norm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.ffn = FeedForward(dim, ffn_factor)
        self.ffn_norm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)

    def forward(self, tokens: torch.Tensor, channel: torch.Tensor, query: Optional[torch.Tensor] = None) -> torch.Tensor:
        """tokens: (N, c, d); channel: (N, d) the cross-attention's single key o; query: (N, m, d) the rows to
        update, default ``tokens`` (the last block passes the own slot alone, as the denoiser reads only that
        one) -> (N, m, d)."""
        query = tokens if query is None else query
        query = self.self_norm(query + self.self_attention(query, tokens))
        query = self.cross_norm(query + self.cross_output(self.cross_value(channel)).unsqueeze(1))
        return self.ffn_norm(query + self.ffn(query))


class Denoiser(nn.Module):
    """f_theta(x, t, j): the estimate of x_0 for channel j from its noisy x_t, the other channels' interests
    (the contextual interests) and the channel vector o_j.

    Z = [r_1 .. x (slot j) .. r_c] + gamma(t) goes through the blocks, cross-attending to o_j; the output is
    slot j. The c channels are folded into the batch: (B * c, c, d).

    Args:
        dim: d; num_layers: N_d; num_heads / ffn_factor: the blocks'.
    """

    def __init__(self, dim: int, num_layers: int, num_heads: int, ffn_factor: int):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"denoiser_layers must be >= 1, got {num_layers}")
        self.timestep_embedding = TimestepEmbedding(dim)
        self.blocks = nn.ModuleList(DenoiserBlock(dim, num_heads, ffn_factor) for _ in range(num_layers))

    def forward(self, x: torch.Tensor, step: torch.Tensor, context: torch.Tensor,
                channels: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: (B, c, d) the noisy interest of every channel; step: (B, c) long, its diffusion step.
            context: (B, c, d) the channels' (unit) interests; channels: (B, c, d) O.
        Returns:
            (B, c, d) the estimate of x_0 of every channel.
        """
        batch, count, dim = x.shape
        own_slot = torch.eye(count, dtype=torch.bool, device=x.device).view(1, count, count, 1)
        tokens = torch.where(own_slot, x.unsqueeze(2), context.unsqueeze(1))                   # B x j x slot x d
        tokens = (tokens + self.timestep_embedding(step).unsqueeze(2)).view(batch * count, count, dim)
        channel = channels.reshape(batch * count, dim)
        for block in self.blocks[:-1]:
            tokens = block(tokens, channel)
        own = torch.diagonal(tokens.view(batch, count, count, dim), dim1=1, dim2=2).transpose(1, 2)
        return self.blocks[-1](tokens, channel, own.reshape(batch * count, 1, dim)).view(batch, count, dim)


class SamplingNoise(NamedTuple):
    """The randomness of one generation: start (B, c) long t_s in 1..T_d - 1; noise (B, max(S, 1), c, d)
    standard normal: [:, 0] noises the start, [:, i] is the posterior draw of reverse iteration i - 1."""
    start: torch.Tensor
    noise: torch.Tensor


class DiffusionInterestGenerator(nn.Module):
    """DMIG: generates an augmented interest r*_j for every channel from a noised copy of the real one.

    Generation: x = sqrt(abar_{t_s}) r_j + sqrt(1 - abar_{t_s}) eps, then S reverse iterations over the
    respaced steps t_s = tau_K > ... > tau_1 = 0 (:meth:`NoiseSchedule.respaced_steps`): x0 = f_theta(x,
    tau_k, j) and, but at the last, x <- a posterior draw of x_{tau_(k-1)} given x and x0; r*_j = the last
    x0 (S = 0: the noised start itself). The start noise level and the first reverse step are the same t_s,
    and f_theta's output is read as x_0 in training and sampling alike (the public code noised to t_s but
    reversed from 9, and read the x_0 estimate as noise). Gradients flow through every iteration.

    Randomness: in training (t_s, eps, xi) and the denoising loss's (t, eps) follow ``noise_generator``, a
    CPU ``torch.Generator`` seeded from the global seed (+ 104729) when the module is built and kept in the
    state dict (``get_extra_state``), so a resumed run draws what the original would have
    (:meth:`training_stream`). In eval they come from a fixed bank of ``noise_bank_size`` draws (from ``noise_bank_seed``;
    rebuilt at construction, not saved) at row (user * 1000003 + item * 10007 + seq_len) mod M: a
    prediction depends on its sample only, not on the batch or on earlier calls.

    Other readings (spec section 10, for ablations): ``sample_start: fixed`` reverses over the steps S - 1 .. 0
    whatever t_s, as the public code does (D3); ``eval_sampling: mean`` generates in eval without noise
    (eps = xi = 0) from t_s = T_d // 2 (D4); ``sample_grad: last`` lets gradients through the last reverse
    iteration only, its input detached (D5).

    Args:
        dim: d; num_channels: c; diffusion_steps / beta_schedule / beta_start / beta_end: the schedule.
        sample_steps: S, reverse iterations of a generation (0..T_d).
        num_layers / num_heads / ffn_factor: the denoiser.
        noise_bank_size / noise_bank_seed: the eval bank (memory: M * max(S, 1) * c * d floats).
        sample_start / eval_sampling / sample_grad: see above (defaults: the spec's readings).
    """

    def __init__(self, dim: int, num_channels: int, diffusion_steps: int = 1000, beta_schedule: str = "linear",
                 beta_start: float = 1e-4, beta_end: float = 0.02, sample_steps: int = 10, num_layers: int = 2,
                 num_heads: int = 2, ffn_factor: int = 3, noise_bank_size: int = 1024, noise_bank_seed: int = 0,
                 sample_start: str = "respaced", eval_sampling: str = "bank", sample_grad: str = "full"):
        super().__init__()
        if not 0 <= sample_steps <= diffusion_steps:
            raise ValueError(f"sample_steps must be in [0, diffusion_steps = {diffusion_steps}], got {sample_steps}")
        if noise_bank_size < 1:
            raise ValueError(f"noise_bank_size must be >= 1, got {noise_bank_size}")
        for key, value, choices in (("sample_start", sample_start, SAMPLE_STARTS),
                                    ("eval_sampling", eval_sampling, EVAL_SAMPLINGS),
                                    ("sample_grad", sample_grad, SAMPLE_GRADS)):
            if value not in choices:
                raise ValueError(f"{key} must be one of {choices}, got '{value}'")
        self.dim, self.num_channels, self.sample_steps = dim, num_channels, sample_steps
        self.sample_start, self.eval_sampling, self.sample_grad = sample_start, eval_sampling, sample_grad
        self.schedule = NoiseSchedule(diffusion_steps, beta_schedule, beta_start, beta_end)
        self.denoiser = Denoiser(dim, num_layers, num_heads, ffn_factor)
        self.noise_generator = torch.Generator().manual_seed((torch.initial_seed() + DIFFUSION_SEED_OFFSET) % 2 ** 63)
        bank = self.draw(noise_bank_size, torch.Generator().manual_seed(noise_bank_seed))
        self.register_buffer("bank_start", bank.start, persistent=False)
        self.register_buffer("bank_noise", bank.noise, persistent=False)

    def output_dim(self) -> int:
        """c * d, the width of the flattened generated interests [r*_1 .. r*_c]."""
        return self.num_channels * self.dim

    # ----- randomness ---------------------------------------------------------------------------
    def draw(self, batch_size: int, generator: torch.Generator) -> SamplingNoise:
        """A fresh :class:`SamplingNoise` for ``batch_size`` rows, on the generator's device."""
        shape, device = (batch_size, self.num_channels), generator.device
        start = torch.randint(1, self.schedule.num_steps, shape, generator=generator, device=device)
        noise = torch.randn(batch_size, max(self.sample_steps, 1), *shape[1:], self.dim, generator=generator,
                            device=device)
        return SamplingNoise(start, noise)

    def training_stream(self, device: torch.device) -> torch.Generator:
        """A generator on ``device`` seeded by the next draw of ``noise_generator``: the noise is drawn where it
        is used (no host-to-device copy of (B, S, c, d) floats per step), yet the whole stream follows the one
        CPU state that the state dict keeps (the numbers differ between CPU and CUDA, not between runs)."""
        seed = int(torch.randint(0, 2 ** 62, (1,), generator=self.noise_generator))
        return torch.Generator(device=device).manual_seed(seed)

    def bank_rows(self, user: torch.Tensor, item: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
        """The bank row of every sample: (B,) user, target item row, seq_len -> (B,) long."""
        key = user.long() * BANK_KEY[0] + item.long() * BANK_KEY[1] + length.long()
        return key % cast(torch.Tensor, self.bank_start).shape[0]

    def sampling_noise(self, rows: torch.Tensor) -> SamplingNoise:
        """Training: fresh draws (:meth:`training_stream`); eval: the bank's ``rows`` (B,), or with
        ``eval_sampling: mean`` no noise from t_s = T_d // 2."""
        if self.training:
            return self.draw(rows.shape[0], self.training_stream(rows.device))
        start, noise = cast(torch.Tensor, self.bank_start)[rows], cast(torch.Tensor, self.bank_noise)[rows]
        if self.eval_sampling == "mean":
            return SamplingNoise(torch.full_like(start, self.schedule.num_steps // 2), torch.zeros_like(noise))
        return SamplingNoise(start, noise)

    def get_extra_state(self) -> torch.Tensor:
        return self.noise_generator.get_state()

    def set_extra_state(self, state: torch.Tensor) -> None:
        self.noise_generator.set_state(state)

    # ----- generation and loss ----------------------------------------------------------------
    def sample(self, x: torch.Tensor, start: torch.Tensor, noise: torch.Tensor, context: torch.Tensor,
               channels: torch.Tensor) -> torch.Tensor:
        """The reverse chain from x at t_s = ``start``: x (B, c, d), start (B, c) long, noise (B, >= S - 1, c, d)
        posterior draws (iteration i uses noise[:, i]); context, channels (B, c, d) -> x0 (B, c, d)
        (x itself when S = 0)."""
        steps, active = self.reverse_steps(start)
        estimate = x
        for i in range(self.sample_steps):
            last = i + 1 == self.sample_steps
            with torch.set_grad_enabled(torch.is_grad_enabled() and (self.sample_grad == "full" or last)):
                if last and self.sample_grad == "last":
                    x = x.detach()
                estimate = self.denoiser(x, steps[..., i], context, channels)
                if not last:
                    stepped = self.schedule.posterior_step(x, estimate, steps[..., i], steps[..., i + 1], noise[:, i])
                    x = torch.where(active[..., i:i + 1], stepped, x)
        return estimate

    def reverse_steps(self, start: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Steps (B, c, S) long and active (B, c, S) bool of the chains from ``start`` (B, c):
        :meth:`NoiseSchedule.respaced_steps`, or with ``sample_start: fixed`` S - 1 .. 0 in every row."""
        if self.sample_start == "respaced":
            return self.schedule.respaced_steps(start, self.sample_steps)
        steps = torch.arange(self.sample_steps - 1, -1, -1, device=start.device).expand(*start.shape, -1)
        return steps, torch.ones_like(steps, dtype=torch.bool)

    def generate(self, interests: torch.Tensor, channels: torch.Tensor, filled: torch.Tensor,
                 rows: torch.Tensor) -> torch.Tensor:
        """r* of every channel: interests (B, c, d) unit r_j (also the denoiser's context); channels (B, c, d) O;
        filled (B, c) bool, channels with a non-empty S_j (the others get r* = 0); rows (B,) bank rows (eval).
        Returns (B, c, d)."""
        draws = self.sampling_noise(rows)
        x = self.schedule.add_noise(interests, draws.start, draws.noise[:, 0])
        generated = self.sample(x, draws.start, draws.noise[:, 1:], interests, channels)
        return torch.where(filled.unsqueeze(-1), generated, torch.zeros_like(generated))

    def denoising_loss(self, interests: torch.Tensor, channels: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """L_d = mean over (b, j) with real behaviours of ||f_theta(x_t, t, j) - r_j||^2 / d, t ~ U{0..T_d - 1}
        and eps ~ N(0, I) per sample and channel (:meth:`training_stream`): interests, channels (B, c, d),
        real (B, c) bool -> scalar (0 without a real channel)."""
        batch, generator = interests.shape[0], self.training_stream(interests.device)
        step = torch.randint(0, self.schedule.num_steps, (batch, self.num_channels), generator=generator,
                             device=interests.device)
        noise = torch.randn(batch, self.num_channels, self.dim, generator=generator, device=interests.device)
        estimate = self.denoiser(self.schedule.add_noise(interests, step, noise), step, interests, channels)
        error = (estimate - interests).pow(2).mean(-1)
        return torch.where(real, error, torch.zeros_like(error)).sum() / real.sum().clamp(min=1)
