"""Training step time with and without background prefetching of the next batches.

    .venv/bin/python benchmarks/prefetch_benchmark.py --gpu 0 --models DIN TWIN --max_len 1000 5000   # CUDA
    .venv/bin/python benchmarks/prefetch_benchmark.py                                                  # CPU

A step here is what the trainer's loop does per batch: take the next batch from the loader (gather, pad,
and on CUDA pin and copy ``non_blocking``) and run a train step. ``plain`` reads the loader in the training
thread; ``prefetch`` reads it through :class:`lainctr.data.prefetch.PrefetchingLoader` (batches built
``--depth`` ahead in a thread, pinned on CUDA: what the trainer uses on CUDA). Both run in one process on the
benchmark's synthetic data (every history longer than ``--max_len``), alternating over ``--rounds`` rounds of
``--steps`` steps each; the medians of ms/step and their ratio are printed. On the CPU the prefetch thread
competes with the step for the same cores, so the gain there is small or negative; the trainer prefetches
on CUDA only.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]
from lainctr.runtime import configure_cpu_runtime  # noqa: E402

configure_cpu_runtime()


def seconds_per_step(trainer, batches, steps: int) -> float:
    """Mean seconds per step over ``steps`` batches from the iterator ``batches`` (loading included)."""
    import torch
    start = time.perf_counter()
    for index in range(steps):
        trainer.train_step(next(batches), index, steps)
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def measure(model_name: str, data: str, args) -> dict:
    """Median ms/step of the plain and the prefetching loader for one model and max_len."""
    from benchmark import build_ours

    from lainctr import config
    from lainctr.data.dataset import load_dataset
    from lainctr.data.loader import SequenceBatchLoader
    from lainctr.data.prefetch import PrefetchingLoader
    from lainctr.experiment import load_feature_map

    params = config.load_config(f"{model_name}_synthetic")
    params.update(max_len=args.max_len_cell, batch_size=args.batch_size, verbose=0, model_root=tempfile.mkdtemp())
    trainer = build_ours(model_name, params, load_feature_map("bench", data, params), args.gpu)
    loader = SequenceBatchLoader(load_dataset(data, splits=("train",), validate=False), "train", args.batch_size,
                                 args.max_len_cell, shuffle=True, seed=0, times=trainer.model.reads_time())
    on_cuda = trainer.device.type == "cuda"
    sources = {"plain": lambda: (batch.to(trainer.device, non_blocking=on_cuda) for batch in loader),
               "prefetch": lambda: iter(PrefetchingLoader(loader, args.depth, pin_memory=on_cuda))}
    trainer.model.train()
    seconds_per_step(trainer, sources["plain"](), 2)   # warm-up
    times: dict = {name: [] for name in sources}
    for round_index in range(args.rounds):
        for name in (("plain", "prefetch") if round_index % 2 == 0 else ("prefetch", "plain")):
            times[name].append(seconds_per_step(trainer, sources[name](), args.steps))
    return {name: 1000 * statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["DIN", "TWIN"])
    parser.add_argument("--max_len", type=int, nargs="+", default=[1000])
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=8, help="steps per round (fewer than an epoch's batches)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--depth", type=int, default=2, help="batches prepared ahead")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--gpu", type=int, default=-1)
    args = parser.parse_args()
    import torch
    torch.set_num_threads(args.threads)
    from benchmark import build_data
    print(f"device: {'cuda:%d' % args.gpu if args.gpu >= 0 else 'cpu, %d threads' % args.threads}, batch "
          f"{args.batch_size}, prefetch depth {args.depth}\n")
    print("| model | max_len | ms/step plain | ms/step prefetch | prefetch / plain |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for max_len in args.max_len:
            data = build_data(os.path.join(folder, f"T{max_len}"), max_len)
            args.max_len_cell = max_len
            for model in args.models:
                ms = measure(model, data, args)
                print(f"| {model} | {max_len} | {ms['plain']:.1f} | {ms['prefetch']:.1f} | "
                      f"{ms['prefetch'] / ms['plain']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
