"""Train-step time of several expids on the same batches, in one process, steps alternating between models.

    LAINCTR_DATA_ROOT=data .venv/bin/python benchmarks/step_time.py
    .venv/bin/python benchmarks/step_time.py --expids SparseCTR_synthetic TWIN_synthetic --steps 20 --threads 2

Every round takes the next batch of the expids' dataset (the first expid's batch size and max_len, the
loader's row order) and runs one forward + backward + optimiser step of every model on it, the model order
rotating each round, so that load changes on a shared machine hit every model alike. Prints the median ms per
step over ``--steps`` rounds after ``--warmup`` rounds, and each model's ratio to the last expid's.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE)]


def build_trainers(expids, data_root):
    """{expid: Trainer} on the first expid's dataset, every model seeded alike; and the dataset folder."""
    import torch

    from lainctr import config
    from lainctr.experiment import build_model, ensure_dataset, load_feature_map
    from lainctr.paths import data_root as resolve_data_root
    from lainctr.trainer import Trainer
    trainers, data_dir = {}, None
    for expid in expids:
        params = config.load_config(expid)
        params.update(verbose=0)
        if data_dir is None:
            dataset_cfg = config.load_dataset_config(params["dataset_id"])
            data_dir = ensure_dataset(params["dataset_id"], dataset_cfg, resolve_data_root(data_root))
        torch.manual_seed(0)
        model, options = build_model(params, load_feature_map(params["dataset_id"], data_dir, params))
        trainers[expid] = Trainer(model, options)
    return trainers, data_dir


def step_times(trainers, batches, warmup: int) -> dict:
    """{expid: [seconds of each train step after the warm-up]}, the models alternating per batch."""
    names = list(trainers)
    out = {name: [] for name in names}
    for round_index, batch in enumerate(batches):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            trainer = trainers[name]
            trainer.model.train()
            start = time.perf_counter()
            trainer.train_step(batch.to(trainer.device), 0, 1)
            if round_index >= warmup:
                out[name].append(time.perf_counter() - start)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--expids", nargs="+", default=["SparseCTR_synthetic", "TWIN_synthetic", "DIN_synthetic"])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=None, help="default: the first expid's")
    parser.add_argument("--data_root", default=None)
    args = parser.parse_args(argv)
    import torch

    from lainctr import config
    from lainctr.data.dataset import load_dataset
    from lainctr.data.loader import SequenceBatchLoader
    torch.set_num_threads(args.threads)
    first = config.load_config(args.expids[0])
    trainers, data_dir = build_trainers(args.expids, args.data_root)
    batch_size = args.batch_size or int(first.get("batch_size", 256))
    loader = SequenceBatchLoader(load_dataset(data_dir, splits=("train",), validate=False), "train", batch_size,
                                 int(first["max_len"]))
    batches = [batch for batch, _ in zip(loader, range(args.warmup + args.steps))]
    times = step_times(trainers, batches, args.warmup)
    reference = statistics.median(times[args.expids[-1]])
    print(f"batch {batch_size}, max_len {first['max_len']}, {args.threads} threads, median of {args.steps} steps "
          f"after {args.warmup} warm-up, models alternating\n\n| expid | ms per train step | ratio to {args.expids[-1]} |"
          "\n|---|---|---|")
    for name, seconds in times.items():
        median = statistics.median(seconds)
        print(f"| {name} | {1000 * median:,.1f} | {median / reference:.2f} |")


if __name__ == "__main__":
    main()
