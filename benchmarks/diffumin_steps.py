"""DiffuMIN's inference cost per sampling step: ms per batch and samples/s as a function of ``sample_steps``.

    .venv/bin/python benchmarks/diffumin_steps.py                              # CPU, 2 threads, max_len 200
    .venv/bin/python benchmarks/diffumin_steps.py --max_len 1000 --train       # also a training step per S
    .venv/bin/python benchmarks/diffumin_steps.py --gpu 0 --batch_size 4096    # CUDA

Builds the benchmark's synthetic data (every history longer than ``--max_len``, so every batch is max_len wide;
``benchmarks/benchmark.py``) and, for every S in ``--sample_steps``, the ``--expid`` model (default
``DiffuMIN_synthetic``) with ``sample_steps: S`` and the same seed, hence the same weights. Inference = an eval-mode
forward without autograd (the eval noise bank, as in validation and test); ``--train`` adds a training step
(forward with the chain's gradients, BCE + auxiliary losses, backward, Adam step) on ``--train_batch_size`` rows.
Times are medians over ``--repeats`` rounds after one warm-up round; each round times every S once, in turn, so
load changes of a shared machine hit every S alike. Prints a Markdown table (S = 0: r* is the noised start, no
denoiser pass).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]
from benchmark import build_data, build_ours, step_functions, timed_each  # noqa: E402 (sets the CPU runtime first)

STEPS = [0, 1, 2, 5, 10, 20, 50]


def code_commit() -> str:
    """The zoo's short commit (``+dirty`` with uncommitted changes), or '' outside a git checkout."""
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=HERE, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""
    commit = git("rev-parse", "--short", "HEAD")
    return commit + ("+dirty" if commit and git("status", "--porcelain", "--untracked-files=no") else "")


def step_timings(args, data: str) -> dict:
    """{S: {"infer": [seconds per round], "train": [...]}} over the warm-up round and ``--repeats`` rounds."""
    import numpy as np
    import torch

    from lainctr import config
    from lainctr.data.dataset import load_dataset
    from lainctr.data.loader import SequenceBatchLoader
    from lainctr.experiment import load_feature_map

    device = torch.device(f"cuda:{args.gpu}" if args.gpu >= 0 else "cpu")
    dataset = load_dataset(data, splits=("train",), validate=False)
    params = config.load_config(args.expid)
    params.update(max_len=args.max_len, verbose=0, model_root=tempfile.mkdtemp())
    feature_map = load_feature_map("bench", data, params)
    batches = {}
    for phase, size in (("infer", args.batch_size), ("train", args.train_batch_size)):
        loader = SequenceBatchLoader(dataset, "train", size, args.max_len)
        batches[phase] = [loader.make_batch(np.arange(i * size, (i + 1) * size) % loader.num_samples)
                          for i in range(args.repeats + 1)]
    phases = ("infer", "train") if args.train else ("infer",)
    functions = {}
    for steps in args.sample_steps:
        trainer = build_ours(str(params["model"]), dict(params, sample_steps=steps), feature_map, args.gpu)
        train_step, infer = step_functions(trainer, False)
        functions[steps] = {"infer": infer, "train": train_step}
    seconds = {steps: {phase: [] for phase in phases} for steps in args.sample_steps}
    for round_index in range(args.repeats + 1):
        for steps in args.sample_steps:
            for phase in phases:
                batch = batches[phase][round_index]
                seconds[steps][phase] += timed_each(functions[steps][phase], [batch], device)
    return seconds


def table(args, seconds: dict) -> str:
    """The Markdown table: ms per batch and samples/s of every S (medians after the warm-up round)."""
    import torch
    headers = ["sample_steps", "infer ms / batch", "infer samples/s"] + (
        ["train ms / batch", "train samples/s"] if args.train else [])
    lines = [f"{args.expid}, max_len {args.max_len}, inference batch {args.batch_size}"
             + (f", train batch {args.train_batch_size}" if args.train else "")
             + f", {args.threads} torch threads, device {'cuda:%d' % args.gpu if args.gpu >= 0 else 'cpu'}, "
             f"torch {torch.__version__}, commit {code_commit() or '?'}; median of {args.repeats} rounds after 1 warm-up",
             "", "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for steps, timings in seconds.items():
        cells = [str(steps)]
        for phase, size in (("infer", args.batch_size), ("train", args.train_batch_size)):
            if phase in timings:
                median = statistics.median(timings[phase][1:])
                cells += [f"{1000 * median:,.1f}", f"{size / median:,.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sample_steps", type=int, nargs="+", default=STEPS)
    parser.add_argument("--max_len", type=int, default=200)
    parser.add_argument("--expid", default="DiffuMIN_synthetic", help="a DiffuMIN or DiffuMIN_LAIN expid")
    parser.add_argument("--batch_size", type=int, default=1024, help="inference batch (the expids' eval_batch_size)")
    parser.add_argument("--train", action="store_true", help="also time a training step per S")
    parser.add_argument("--train_batch_size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--gpu", type=int, default=-1, help="-1 = CPU, N = cuda:N")
    args = parser.parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        seconds = step_timings(args, build_data(os.path.join(tmp, "data"), args.max_len))
    print(table(args, seconds))


if __name__ == "__main__":
    main()
