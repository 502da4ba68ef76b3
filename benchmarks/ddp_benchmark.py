"""Data-parallel training throughput: one process vs N torchrun processes on the same global batches.

    .venv/bin/python benchmarks/ddp_benchmark.py                                  # DIN, TWIN at max_len 1000, CPU
    .venv/bin/python benchmarks/ddp_benchmark.py --gpu 0 --nproc 1 2 4 8 --max_len 1000 5000

Every cell starts ``torchrun --standalone --nproc_per_node N`` (N = 1 is the single process, run the same way)
on the benchmark's synthetic data (every history longer than ``--max_len``, so every batch is full width):
the ranks read their shards of the same global batches (``batch_size`` stays global) and time ``--steps``
optimizer steps after ``--warmup``. It prints global train samples/s per world size, the speed-up over one
process, and the peak RSS of rank 0 (and peak GPU memory on CUDA). On the CPU gloo is used and the cores are
shared out: each of N processes gets ``--threads / N`` threads (at least 1), so every cell uses the same cores
and the speed-up says what data parallelism gains over intra-op threads; on CUDA each rank has its own GPU.
Cells of a model alternate between world sizes over ``--rounds`` rounds; the medians are printed.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]
from lainctr.runtime import configure_cpu_runtime  # noqa: E402

configure_cpu_runtime()


def worker(args) -> None:
    """One rank of one cell: time ``args.steps`` train steps; rank 0 prints the cell's JSON line.

    The process group is left only after :func:`measure` has returned: its DDP wrapper holds gloo's backend, and
    a backend outliving ``destroy_process_group`` could abort its rank when the other rank exited."""
    import torch

    from lainctr.distributed import init_from_environment, leave_process_group

    torch.set_num_threads(args.threads)
    group = init_from_environment(args.gpu)
    result = measure(args, group)
    if group.is_writer:
        print(json.dumps(result), flush=True)
    leave_process_group()


def measure(args, group) -> dict:
    """Samples/s over ``args.steps`` train steps after ``args.warmup``, and this rank's peak memory."""
    import torch
    from benchmark import build_ours, peak_rss_mb

    from lainctr import config
    from lainctr.data.dataset import load_dataset
    from lainctr.data.loader import SequenceBatchLoader
    from lainctr.experiment import load_feature_map

    gpu = int(os.environ.get("LOCAL_RANK", "0")) if args.gpu >= 0 else -1
    params = config.load_config(f"{args.model}_synthetic")
    params.update(max_len=args.max_len, batch_size=args.batch_size, verbose=0, model_root=tempfile.mkdtemp())
    dataset = load_dataset(args.data, splits=("train",), validate=False)
    trainer = build_ours(args.model, params, load_feature_map("bench", args.data, params), gpu)
    if group.distributed:   # build_ours made a single-process trainer: rebuild it on the process group
        from lainctr.trainer import Trainer
        trainer = Trainer(trainer.model, trainer.options, group=group)
    loader = SequenceBatchLoader(dataset, "train", args.batch_size, args.max_len, shuffle=True, seed=0,
                                 times=trainer.model.reads_time(), group=group)
    batches = iter(loader)
    trainer.model.train()
    for index in range(args.warmup + args.steps):
        if index == args.warmup:
            group.barrier()
            start = time.perf_counter()
        trainer.train_step(next(batches), index, args.warmup + args.steps)
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    group.barrier()
    seconds = time.perf_counter() - start
    out = {"samples_per_s": args.steps * args.batch_size / seconds, "peak_rss_mb": peak_rss_mb()}
    if trainer.device.type == "cuda":
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated(trainer.device) / 2 ** 20
    return out


def run_cell(args, model: str, nproc: int, data: str) -> dict:
    threads = max(1, args.threads // nproc) if args.gpu < 0 else args.threads
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
               os.path.abspath(__file__), "--worker", "--model", model, "--data", data, "--gpu", str(args.gpu),
               "--max_len_cell", str(args.max_len_cell), "--batch_size", str(args.batch_size), "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--threads", str(threads)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=os.path.dirname(HERE))
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{model} with {nproc} process(es) failed:\n{done.stderr[-8000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["DIN", "TWIN"])
    parser.add_argument("--max_len", type=int, nargs="+", default=[1000])
    parser.add_argument("--nproc", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch_size", type=int, default=256, help="the global batch")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads of a cell, shared by its processes")
    parser.add_argument("--gpu", type=int, default=-1, help="-1 = CPU (gloo); >= 0: CUDA (NCCL), rank r on cuda:r")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--max_len_cell", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.max_len = args.max_len_cell
        worker(args)
        return
    from benchmark import build_data
    print(f"| model | max_len | processes | threads each | train samples/s | speed-up | peak RSS rank 0 (MB) "
          f"|{' peak GPU (MB) |' if args.gpu >= 0 else ''}")
    print(f"|---|---|---|---|---|---|---|{'---|' if args.gpu >= 0 else ''}")
    with tempfile.TemporaryDirectory() as folder:
        for max_len in args.max_len:
            data = build_data(os.path.join(folder, f"T{max_len}"), max_len)
            args.max_len_cell = max_len
            for model in args.models:
                cells: dict = {n: [] for n in args.nproc}
                for round_index in range(args.rounds):
                    for nproc in (args.nproc if round_index % 2 == 0 else args.nproc[::-1]):
                        cells[nproc].append(run_cell(args, model, nproc, data))
                base = statistics.median(c["samples_per_s"] for c in cells[args.nproc[0]])
                for nproc, outs in cells.items():
                    speed = statistics.median(c["samples_per_s"] for c in outs)
                    threads = max(1, args.threads // nproc) if args.gpu < 0 else args.threads
                    gpu = f" {max(c['peak_gpu_mb'] for c in outs):,.0f} |" if args.gpu >= 0 else ""
                    print(f"| {model} | {max_len} | {nproc} | {threads} | {speed:,.0f} | {speed / base:.2f}x | "
                          f"{max(c['peak_rss_mb'] for c in outs):,.0f} |{gpu}", flush=True)


if __name__ == "__main__":
    main()
