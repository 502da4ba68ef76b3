"""Peak memory of training with the splits in memory vs out of core, at 1M and 10M synthetic samples.

    .venv/bin/python benchmarks/memory_benchmark.py                              # synthetic_1m and synthetic_10m
    .venv/bin/python benchmarks/memory_benchmark.py --datasets synthetic_1m --steps 50 --model TWIN

``synthetic_1m`` and ``synthetic_10m`` (``lainctr/data/synthetic_scale.py``, built under ``--data_root`` when
missing: about one and ten minutes) hold the same 40k users and 6.6M behaviours and differ only in the
number of samples, so what grows from one to the other is what the sample columns cost. Every cell (dataset,
mode) runs in a process of its own: it loads the dataset (``in memory`` or ``out of core``: the sample
columns stay in the split files and each batch's rows are read from disk), trains ``--steps`` steps of the
model's ``<model>_synthetic`` settings at ``--max_len`` and scores the whole test split, and reports the
resident memory at the start (torch and the zoo imported) and after loading (``VmRSS``), and the peak after
training and over the whole cell (``VmHWM``), all in MiB, with the seconds each part took. The sequence store
and the item table stay in memory in both modes (their sizes are printed).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE)]
from lainctr.runtime import configure_cpu_runtime  # noqa: E402

configure_cpu_runtime()  # before torch loads

MODES = ("memory", "out_of_core")


def memory_status_mib(field: str) -> float:
    """A /proc/self/status memory field (``VmRSS``, ``VmHWM``) in MiB (Linux)."""
    with open("/proc/self/status") as fd:
        return next(int(line.split()[1]) for line in fd if line.startswith(field + ":")) / 1024


def dataset_folder(dataset_id: str, data_root: str) -> str:
    """The dataset folder, built first when missing (the zoo's builder for ``dataset_id``)."""
    from lainctr import config
    from lainctr.experiment import ensure_dataset
    return ensure_dataset(dataset_id, config.load_dataset_config(dataset_id), data_root)


def cell(args) -> dict:
    """One (dataset, mode): load, train ``args.steps`` steps, score the test split; memory and seconds."""
    import dataclasses

    import torch

    from lainctr import config
    from lainctr.data.dataset import load_dataset
    from lainctr.data.loader import SequenceBatchLoader
    from lainctr.experiment import build_model, load_feature_map
    from lainctr.trainer import Trainer

    torch.manual_seed(0)
    rss_at_start = memory_status_mib("VmRSS")   # the interpreter with torch and the zoo imported
    start = time.perf_counter()
    data_dir = dataset_folder(args.dataset, args.data_root)
    dataset = load_dataset(data_dir, in_memory=args.mode == "memory")
    out = {"load_s": time.perf_counter() - start, "rss_at_start_mib": rss_at_start,
           "rss_after_load_mib": memory_status_mib("VmRSS"),
           "samples": {split: columns.num_rows for split, columns in dataset.splits.items()},
           "sizes_mib": {k: v / 2 ** 20 for k, v in dataset.sizes().items()}}
    params = config.load_config(f"{args.model}_synthetic")
    params.update(dataset_id=args.dataset, max_len=args.max_len, verbose=0, model_root=tempfile.mkdtemp())
    model, options = build_model(params, load_feature_map(args.dataset, data_dir, params))
    trainer = Trainer(model, dataclasses.replace(options, gpu=-1))
    batch_size = int(params.get("batch_size", 256))
    train = SequenceBatchLoader(dataset, "train", batch_size, args.max_len, shuffle=True, seed=0,
                                times=model.reads_time())
    start = time.perf_counter()
    model.train()
    for index, batch in enumerate(train):
        if index == args.steps:
            break
        trainer.train_step(batch, index, args.steps)
    out.update(train_s_per_step=(time.perf_counter() - start) / args.steps, peak_rss_train_mib=memory_status_mib("VmHWM"))
    test = SequenceBatchLoader(dataset, "test", args.eval_batch_size, args.max_len, times=model.reads_time())
    start = time.perf_counter()
    trainer.prepare_inference(dataset.item_table)
    scored = trainer.predict_arrays(test)
    out.update(test_s=time.perf_counter() - start, test_scored=len(scored["y_pred"]),
               peak_rss_mib=memory_status_mib("VmHWM"))
    return out


def run_cell(args, dataset: str, mode: str) -> dict:
    command = [sys.executable, os.path.abspath(__file__), "--cell", "--dataset", dataset, "--mode", mode,
               "--data_root", args.data_root, "--model", args.model, "--max_len", str(args.max_len),
               "--steps", str(args.steps), "--eval_batch_size", str(args.eval_batch_size)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"cell {dataset}/{mode} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(results: dict, args) -> str:
    """A markdown table of every cell, and the in-memory stores' sizes."""
    lines = [f"{args.model}, max_len {args.max_len}, {args.steps} train steps, then the whole test split "
             f"(batch {args.eval_batch_size}); MiB",
             "", "| dataset | samples (train/valid/test) | mode | RSS at start | RSS after load | peak RSS training | "
             "peak RSS | s/step | test s |", "|---|---|---|---|---|---|---|---|---|"]
    for (dataset, mode), out in results.items():
        samples = "/".join(f"{out['samples'][s]:,}" for s in ("train", "valid", "test"))
        mib = " | ".join(f"{out[k]:,.0f}" for k in ("rss_at_start_mib", "rss_after_load_mib", "peak_rss_train_mib",
                                                    "peak_rss_mib"))
        lines.append(f"| {dataset} | {samples} | {mode} | {mib} | {out['train_s_per_step']:.3f} | {out['test_s']:.1f} |")
    sizes = next(iter(results.values()))["sizes_mib"]
    lines += ["", f"in memory in both modes: per-user sequences {sizes['sequences']:.1f} MiB, "
                  f"item table {sizes['item_table']:.1f} MiB"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["synthetic_1m", "synthetic_10m"])
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--model", default="DIN", help="a zoo model with a <model>_synthetic expid")
    parser.add_argument("--max_len", type=int, default=200)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--eval_batch_size", type=int, default=4096)
    parser.add_argument("--data_root", default=os.environ.get("LAINCTR_DATA_ROOT",
                                                              os.path.join(os.path.dirname(HERE), "data")))
    parser.add_argument("--cell", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--dataset", help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cell:
        print(json.dumps(cell(args)))
        return
    results = {}
    for dataset in args.datasets:
        print(f"[{dataset}] {dataset_folder(dataset, args.data_root)}", flush=True)   # built once, outside the cells
        for mode in args.modes:
            results[dataset, mode] = run_cell(args, dataset, mode)
            out = results[dataset, mode]
            print(f"  {mode}: peak RSS {out['peak_rss_mib']:,.0f} MiB, after load {out['rss_after_load_mib']:,.0f} "
                  f"MiB, {out['train_s_per_step']:.3f} s/step, test {out['test_s']:.1f} s", flush=True)
    print(table(results, args))


if __name__ == "__main__":
    main()
