"""SparseCTR's EvoAttention stack vs a dense causal self-attention stack of the same width, heads and depth,
over sequence length: train and inference samples/s and peak memory.

    .venv/bin/python benchmarks/sparse_scaling.py                                   # CPU, 2 threads
    .venv/bin/python benchmarks/sparse_scaling.py --lengths 256 1024 4096 8192 --batch_size 16 --threads 2
    .venv/bin/python benchmarks/sparse_scaling.py --gpu 0 --lengths 1024 8192 32768

Both stacks take the same random tokens (B, T + 1, D) (T behaviours and the candidate), the SparseCTR
defaults (D 32, H 8, N 2, P 16, m 2, w 64, SwiGLU x3, all three time terms on random increasing times) and,
like the model, compute only the candidate's row in the last layer. The dense reference is pre-norm blocks of
``scaled_dot_product_attention(is_causal=True)`` (the candidate alone: over every token) with the same SwiGLU.
A train step is forward, a sum of the candidate's state, backward and an Adam step; inference is a no-grad
forward in eval mode. Every (stack, T) cell runs in its own process, so its peak RSS (VmHWM, which includes
the ~0.3 GB of an imported torch) or, on CUDA, ``torch.cuda.max_memory_allocated`` is that cell's. Times are
medians over ``--repeats`` batches after one warm-up. A cell that fails or runs past ``--timeout`` shows why.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]
STACKS = ("sparse", "dense")


def sparse_stack(config):
    """(module, inputs(B, T) -> forward arguments) of SparseCTR's stack."""
    import torch

    from lainctr.layers.evo_attention import Memory, sparse_layout
    from lainctr.layers.lain import NO_LMA
    from lainctr.layers.sparse_transformer import SparseStack
    from lainctr.layers.temporal_bias import time_features
    from lainctr.layers.time_chunking import chunk_layout, gap_chunks
    stack = SparseStack(config, lma=NO_LMA)

    def arguments(tokens, times):
        mask = torch.ones(times.shape[0], times.shape[1] - 1, dtype=torch.bool, device=times.device)
        chunks = chunk_layout(gap_chunks(times[:, :-1], mask, config.num_chunks), config.num_chunks,
                              config.tail_tokens)
        layout = sparse_layout(mask, chunks, time_features(times), config.local_window, config.time_terms)
        profile = torch.zeros(tokens.shape[0], 1, tokens.shape[2], device=tokens.device)
        return tokens, Memory(profile, None), layout, None
    return stack, arguments


def dense_stack(config):
    """(module, inputs -> forward arguments) of the dense causal reference."""
    from torch import nn

    from lainctr.layers.sparse_transformer import RMS_EPS, SwiGLU

    class DenseBlock(nn.Module):
        """Pre-norm causal self-attention (SDPA) and SwiGLU: (B, n, D) -> (B, n, D), or (B, 1, D)."""

        def __init__(self):
            super().__init__()
            dim = config.model_dim
            self.attention_norm, self.ffn_norm = nn.RMSNorm(dim, eps=RMS_EPS), nn.RMSNorm(dim, eps=RMS_EPS)
            self.W_qkv, self.W_o = nn.Linear(dim, 3 * dim, bias=False), nn.Linear(dim, dim, bias=False)
            self.ffn = SwiGLU(dim, config.ffn_factor)

        def forward(self, x, candidate_only: bool):
            q, k, v = self.W_qkv(self.attention_norm(x)).unflatten(-1, (3, config.num_heads, -1)).unbind(2)
            q, k, v = (t.transpose(1, 2) for t in (q, k, v))                         # B x H x n x d_h
            if candidate_only:                     # the candidate sees every token: no mask
                out = nn.functional.scaled_dot_product_attention(q[:, :, -1:], k, v)
            else:
                out = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = (x[:, -1:] if candidate_only else x) + self.W_o(out.transpose(1, 2).flatten(2))
            return x + self.ffn(self.ffn_norm(x))

    class DenseStack(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList(DenseBlock() for _ in range(config.num_layers))

        def forward(self, x):
            for depth, block in enumerate(self.blocks):
                x = block(x, candidate_only=depth == len(self.blocks) - 1)
            return x[:, -1], None

    return DenseStack(), lambda tokens, times: (tokens,)


def worker(args) -> dict:
    """One cell: samples/s of train steps and inference of one stack at one length, and its peak memory."""
    import torch

    from lainctr.layers.sparse_transformer import SparseConfig
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(f"cuda:{args.gpu}" if args.gpu >= 0 else "cpu")
    config = SparseConfig()
    stack, arguments = (sparse_stack if args.stack == "sparse" else dense_stack)(config)
    stack = stack.to(device)
    optimizer = torch.optim.Adam(stack.parameters(), lr=1e-3)
    batches = []
    for _ in range(args.repeats + 1):
        gaps = torch.distributions.Exponential(1 / 3600.0).sample((args.batch_size, args.length + 1)).long()
        times = (1_700_000_000 + gaps.cumsum(1)).to(device)
        tokens = torch.randn(args.batch_size, args.length + 1, config.model_dim, device=device)
        batches.append((tokens, times))

    def train(batch):
        stack.train()
        optimizer.zero_grad()
        stack(*arguments(*batch))[0].sum().backward()
        optimizer.step()

    def infer(batch):
        stack.eval()
        with torch.no_grad():
            stack(*arguments(*batch))

    from benchmark import peak_rss_mb, timed
    out = {phase: args.batch_size / timed(fn, batches, device) for phase, fn in (("train", train), ("infer", infer))}
    out["peak_mb"] = peak_rss_mb()
    if device.type == "cuda":
        out["peak_mb"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
    return out


def run_cell(args, stack: str, length: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", stack, "--lengths", str(length), "--batch_size", str(args.batch_size),
           "--repeats", str(args.repeats), "--threads", str(args.threads), "--gpu", str(args.gpu)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout {args.timeout}s"}
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        return {"error": lines[-1][:120] if lines else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(args, results: dict) -> str:
    """The Markdown table of every length's cells."""
    def cell(stack, length, key):
        value = results[(stack, length)].get(key)
        return "" if value is None else f"{value:,.1f}"

    def ratio(length, key):
        sparse, dense = results[("sparse", length)].get(key), results[("dense", length)].get(key)
        return f"{sparse / dense:.2f}" if sparse and dense else ""

    memory = "peak GPU MB" if args.gpu >= 0 else "peak RSS MB"
    lines = [f"batch {args.batch_size}, {args.threads} torch threads, device "
             f"{'cuda:%d' % args.gpu if args.gpu >= 0 else 'cpu'}, median of {args.repeats} batches after 1 warm-up; "
             "samples/s (ratio: sparse / dense)", "",
             f"| T | train sparse | train dense | ratio | infer sparse | infer dense | ratio | {memory} sparse | "
             f"{memory} dense |", "|---|---|---|---|---|---|---|---|---|"]
    for length in args.lengths:
        errors = " ".join(f"{s}: {results[(s, length)]['error']}" for s in STACKS if "error" in results[(s, length)])
        lines.append(f"| {length} | {cell('sparse', length, 'train')} | {cell('dense', length, 'train')} | "
                     f"{ratio(length, 'train')} | {cell('sparse', length, 'infer')} | {cell('dense', length, 'infer')} | "
                     f"{ratio(length, 'infer')} | {cell('sparse', length, 'peak_mb')} | "
                     f"{cell('dense', length, 'peak_mb')} |" + (f" {errors}" if errors else ""))
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 1024, 4096, 8192], help="T, behaviours")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--gpu", type=int, default=-1, help="CUDA device (default: CPU)")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    parser.add_argument("--worker", default=None, choices=STACKS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        args.stack, args.length = args.worker, args.lengths[0]
        print(json.dumps(worker(args)))
        return
    results = {}
    for length in args.lengths:
        for stack in STACKS:
            results[(stack, length)] = run_cell(args, stack, length)
            print(f"done {stack} @ {length}: {results[(stack, length)]}", file=sys.stderr, flush=True)
    print(table(args, results))


if __name__ == "__main__":
    main()
