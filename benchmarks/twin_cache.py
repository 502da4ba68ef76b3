"""TWIN inference with and without the item-projection cache (``model.prepare_inference``).

    .venv/bin/python benchmarks/twin_cache.py --max_len 1000 5000 --batch_size 256 --threads 2

Builds a synthetic dataset whose users all have long histories (5,000-8,000 behaviours, so every sample
fills max_len 5000) in a temporary folder, pre-builds a fixed set of batches (loading excluded) and times
no-grad forward passes of TWIN and TWIN_LAIN (the ``*_synthetic`` expid settings: embedding 16, d_a 64,
2 heads, top-k 50): cached and uncached runs interleaved, best of ``--repeats``. "cached" scores a
behaviour by gathering its precomputed W_h k and one dot product; "uncached" embeds and projects every
behaviour token. The cache build (one pass over the item table) is timed separately.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import replace

from lainctr.runtime import configure_cpu_runtime

configure_cpu_runtime()  # before torch loads (see lainctr/runtime.py)

import numpy as np
import torch
from fuxictr.features import FeatureMap

from lainctr.data import synthetic
from lainctr.data.dataset import load_dataset
from lainctr.data.loader import SequenceBatchLoader
from lainctr.registry import get_model

LONG_PRESET = "twin_cache_benchmark"
MODEL_KWARGS = dict(embedding_dim=16, dnn_hidden_units=[256, 128], net_dropout=0.1, attention_dim=64, num_heads=2,
                    topk=50, short_seq_len=50, optimizer="adam", loss="binary_crossentropy", verbose=0)


def build_long_dataset(root: str, num_users: int) -> str:
    """Every user has 5,000-8,000 behaviours; a few positive samples (+3 negatives each) per user."""
    synthetic.PRESETS[LONG_PRESET] = replace(synthetic.PRESETS["demo"], num_users=num_users, median_length=6000,
                                             length_sigma=0.15, min_length=5000, max_length=8000,
                                             sample_fraction=0.002)
    return synthetic.build(os.path.join(root, "twin_long"), LONG_PRESET, dataset_id="twin_long", show_progress=False)


def pass_seconds(model, batches) -> float:
    """One no-grad forward pass over ``batches`` (after the same pass as a warm-up)."""
    with torch.no_grad():
        for batch in batches:
            model(batch)
        start = time.perf_counter()
        for batch in batches:
            model(batch)
        return time.perf_counter() - start


def compare(model, batches, item_table, repeats: int):
    """(uncached samples/s, cached samples/s, cache build seconds), best of ``repeats`` interleaved runs.

    The two modes alternate so that load from other processes hits both alike; the best run is the one
    least disturbed by it.
    """
    uncached, cached, build = [], [], []
    for _ in range(repeats):
        model.train()                     # drops the cache
        model.eval()
        uncached.append(pass_seconds(model, batches))
        start = time.perf_counter()
        model.prepare_inference(item_table)
        build.append(time.perf_counter() - start)
        with torch.no_grad():
            assert model.branches["long"].uses_item_cache()
        cached.append(pass_seconds(model, batches))
    samples = sum(len(b.mask) for b in batches)
    return samples / min(uncached), samples / min(cached), min(build)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max_len", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--num_batches", type=int, default=2, help="batches timed per pass")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--num_users", type=int, default=60)
    parser.add_argument("--models", nargs="+", default=["TWIN", "TWIN_LAIN"])
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = build_long_dataset(tmp, args.num_users)
        dataset = load_dataset(data_dir)
        feature_map = FeatureMap("twin_long", data_dir)
        feature_map.load(os.path.join(data_dir, "feature_map.json"), {"embedding_dim": 16, "group_id": "user_index"})
        num_samples = args.batch_size * args.num_batches
        available = len(dataset.splits["train"]["seq_len"])
        rows = np.sort(np.random.default_rng(0).choice(available, min(num_samples, available), replace=False))
        seq_len = dataset.splits["train"]["seq_len"][rows]
        print(f"{len(rows)} samples, seq_len {seq_len.min()}-{seq_len.max()}, {dataset.num_items} items, "
              f"batch {args.batch_size}, {args.threads} threads, device cpu")
        print(f"{'model':>10} {'max_len':>8} {'uncached/s':>11} {'cached/s':>9} {'speed-up':>9} {'cache build s':>14}")
        for max_len in args.max_len:
            loader = SequenceBatchLoader(dataset, "train", args.batch_size, max_len)
            batches = [loader.make_batch(rows[i:i + args.batch_size]) for i in range(0, len(rows), args.batch_size)]
            for name in args.models:
                model = get_model(name)(feature_map, max_len=max_len, model_root=tmp, **MODEL_KWARGS)
                uncached, cached, build_seconds = compare(model, batches, dataset.item_table, args.repeats)
                print(f"{name:>10} {max_len:>8} {uncached:>11.0f} {cached:>9.0f} {cached / uncached:>8.2f}x "
                      f"{build_seconds:>14.3f}")


if __name__ == "__main__":
    main()
