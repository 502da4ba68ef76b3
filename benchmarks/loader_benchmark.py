"""Loader throughput: ours (H5 store, vectorised gather) vs upstream LongCTR's parquet loader, same samples.

    .venv/bin/python benchmarks/loader_benchmark.py --max_len 100 1000 --batch_size 256

Builds the synthetic ``demo`` dataset in a temporary folder, exports the same train samples in the LongCTR
parquet layout (train.parquet + user_info.parquet + item_info.parquet) for the upstream loader, and
prints samples/s (median over repeats, after one warm-up pass). The upstream columns are skipped when
fuxictr's LongCTR code is not installed.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

from lainctr.runtime import configure_cpu_runtime

configure_cpu_runtime()  # before torch loads (see lainctr/runtime.py)

import numpy as np
import pandas as pd
import torch
from fuxictr.features import FeatureMap

from lainctr.data import synthetic
from lainctr.data.dataset import load_dataset
from lainctr.data.loader import SequenceBatchLoader


def export_user_item_info(dataset, out_dir: str) -> None:
    """``user_info.parquet`` (full_item_seq per user) and ``item_info.parquet`` for the LongCTR loader."""
    behaviours = dataset.behaviours.numpy()
    sequences = [behaviours[a:b] for a, b in zip(dataset.offsets[:-1], dataset.offsets[1:])]
    pd.DataFrame({"full_item_seq": sequences}).to_parquet(os.path.join(out_dir, "user_info.parquet"))
    table = {k: v.numpy() for k, v in dataset.item_table.items()}
    pd.DataFrame({"item_index": np.arange(dataset.num_items), **table}).to_parquet(os.path.join(out_dir, "item_info.parquet"))


def export_longctr(dataset, out_dir: str, rows: np.ndarray) -> None:
    """The same samples in the LongCTR parquet triplet layout."""
    train = dataset.splits["train"]
    pd.DataFrame({k: v[rows] for k, v in train.items()}).to_parquet(os.path.join(out_dir, "train.parquet"))
    export_user_item_info(dataset, out_dir)


def samples_per_second(make_iter, num_samples: int, repeats: int) -> float:
    for _ in make_iter():       # warm-up
        pass
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in make_iter():
            pass
        times.append(time.perf_counter() - start)
    return num_samples / statistics.median(times)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max_len", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--num_samples", type=int, default=20_000, help="train samples timed per pass")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = synthetic.build(os.path.join(tmp, "synthetic"), "demo", show_progress=False)
        dataset = load_dataset(data_dir)
        # the longest-history samples: they are what max_len 1000 is about
        rows = np.sort(np.argsort(-dataset.splits["train"]["seq_len"], kind="stable")[:args.num_samples])
        dataset.splits["train"] = {k: v[rows] for k, v in dataset.splits["train"].items()}
        mean_len = dataset.splits["train"]["seq_len"].mean()
        print(f"{len(rows)} train samples, mean seq_len {mean_len:.0f}, batch {args.batch_size}, {args.threads} threads")
        try:
            from model_zoo.LongCTR.longctr_dataloader import LongCTRDataLoader
            export_longctr(load_dataset(data_dir), tmp, rows)
            feature_map = FeatureMap("synthetic", data_dir)
            feature_map.load(os.path.join(data_dir, "feature_map.json"), {"embedding_dim": 16})
        except ImportError:
            LongCTRDataLoader = None
        print(f"{'max_len':>8} {'ours samples/s':>15} {'upstream samples/s':>19} {'ratio':>7}")
        for max_len in args.max_len:
            ours = samples_per_second(lambda: SequenceBatchLoader(dataset, "train", args.batch_size, max_len),
                                      len(rows), args.repeats)
            upstream = float("nan")
            if LongCTRDataLoader is not None:
                upstream = samples_per_second(lambda: LongCTRDataLoader(
                    feature_map, os.path.join(tmp, "train.parquet"), os.path.join(tmp, "user_info.parquet"),
                    os.path.join(tmp, "item_info.parquet"), batch_size=args.batch_size, shuffle=False,
                    num_workers=0, max_len=max_len), len(rows), 1)
            print(f"{max_len:>8} {ours:>15,.0f} {upstream:>19,.0f} {ours / upstream:>7.1f}")


if __name__ == "__main__":
    main()
