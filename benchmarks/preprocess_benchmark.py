"""Throughput and peak memory of the preprocessors on generated inputs of realistic shape.

Generates, into a temporary folder, a LongCTR parquet release and a BARS KuaiVideo_x1 CSV release of
``--rows`` samples each (default 2M), converts each in its own subprocess and reports rows/s and the
subprocess's peak RSS (``VmHWM``; ``ru_maxrss`` off Linux).

    python benchmarks/preprocess_benchmark.py --rows 2000000
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EMB_DIM = 64


def _list_array(lengths: np.ndarray, values: np.ndarray, value_type) -> pa.Array:
    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, value_type))


def write_longctr(folder: str, rows: int, rng: np.random.Generator) -> None:
    """KuaiVideo_x2-shaped release: 20k users (histories log-normal, median 300), 100k items with item_id,
    cate_id and a 64-d vector; ``rows`` samples split 80/10/10."""
    num_users, num_items = 20_000, 100_000
    lengths = np.clip(rng.lognormal(np.log(300), 1.0, num_users).astype(np.int64), 1, 5_000)
    seq_items = rng.integers(1, num_items, lengths.sum())
    pq.write_table(pa.table({"full_item_seq": _list_array(lengths, seq_items, pa.int64())}),
                   os.path.join(folder, "user_info.parquet"))
    vectors = rng.standard_normal((num_items, EMB_DIM), dtype=np.float32)
    vectors[0] = 0
    ids = np.arange(num_items)
    pq.write_table(pa.table({"item_index": ids, "item_id": ids, "cate_id": np.where(ids > 0, ids % 500 + 1, 0),
                             "image_emb_dim64": _list_array(np.full(num_items, EMB_DIM), vectors.ravel(),
                                                            pa.float32())}),
                   os.path.join(folder, "item_info.parquet"))
    for name, share in (("train", 0.8), ("valid", 0.1), ("test", 0.1)):
        n = int(rows * share)
        user = rng.integers(0, num_users, n)
        pq.write_table(pa.table({"user_index": user, "item_index": rng.integers(1, num_items, n),
                                 "seq_len": (rng.random(n) * (lengths[user] + 1)).astype(np.int64),
                                 "is_click": (rng.random(n) < 0.3).astype(np.int64)}),
                       os.path.join(folder, f"{name}.parquet"))


def write_bars_kuaivideo(folder: str, rows: int, rng: np.random.Generator) -> None:
    """KuaiVideo_x1-shaped CSVs: users with log-normal row counts (median 40), half the rows clicked,
    ``pos_items``/``neg_items`` = oldest up-to-100 earlier clicks / non-clicks; last 20 % by time = test."""
    counts = np.clip(rng.lognormal(np.log(40), 1.0, rows // 40).astype(np.int64), 1, 2_000)
    counts = counts[np.cumsum(counts) <= rows]
    counts = np.append(counts, rows - counts.sum())       # exactly ``rows`` rows
    user = np.repeat(np.arange(len(counts)), counts)
    item = rng.integers(0, 300_000, len(user))
    click = (rng.random(len(user)) < 0.5).astype(np.int64)
    stamp = np.concatenate([np.sort(rng.random(c)) for c in counts])   # increasing within each user
    pos, neg = [], []
    start = 0
    for count in counts:                                   # generator only: the converter has no row loop
        kept, text = [0, 0], ["", ""]
        for r in range(start, start + count):
            pos.append(text[1])
            neg.append(text[0])
            c = click[r]
            if kept[c] < 100:                              # the x1 quirk: the OLDEST 100 are kept
                text[c] = f"{text[c]}^{item[r]}" if kept[c] else str(item[r])
                kept[c] += 1
        start += count
    timestamp = (stamp * 1e9).astype(np.int64)
    by_time = np.argsort(timestamp, kind="stable")
    table = pa.table({"timestamp": timestamp, "user_id": user, "item_id": item, "is_click": click,
                      "is_like": np.zeros(len(user), np.int64), "is_follow": np.zeros(len(user), np.int64),
                      "pos_items": pa.array(pos), "neg_items": pa.array(neg)}).take(pa.array(by_time))
    cut = int(len(user) * 0.8)
    unquoted = pacsv.WriteOptions(include_header=False, quoting_style="none")  # as the released files
    for name, part in (("train.csv", table.slice(0, cut)), ("test.csv", table.slice(cut))):
        with open(os.path.join(folder, name), "wb") as fd:
            fd.write((",".join(table.column_names) + "\n").encode())
            pacsv.write_csv(part, fd, unquoted)
    with h5py.File(os.path.join(folder, "item_visual_emb_dim64.h5"), "w") as h5:
        h5.create_dataset("key", data=np.arange(300_000))
        h5.create_dataset("value", data=rng.standard_normal((300_000, EMB_DIM), dtype=np.float32))


def _lists(lengths: np.ndarray, values: np.ndarray, value_type) -> pa.Array:
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, value_type))


def write_ebnerd_raw(folder: str, rows: int, rng: np.random.Generator) -> None:
    """An EB-NeRD release (train/ and validation/ behaviors + history, articles.parquet) whose impressions
    expand over their in-view articles (10 each) into ``rows`` samples; 20k users with 30-click histories."""
    sys.path.insert(0, os.path.join(REPO, "tests"))
    from fixtures_formats import BEHAVIOR_SCHEMA, HISTORY_SCHEMA, article_rows
    num_articles, num_users, inview, history = 5_000, 20_000, 10, 30
    pq.write_table(article_rows(range(1, num_articles + 1)), os.path.join(folder, "articles.parquet"))
    for week, split in enumerate(("train", "validation")):
        os.makedirs(os.path.join(folder, split))
        n = rows // (2 * inview)
        start = np.datetime64("2023-05-18") + np.timedelta64(7 * week, "D")
        times = start + (np.sort(rng.integers(0, 7 * 86_400, n)) * 1_000_000).astype("timedelta64[us]")
        shown = rng.integers(1, num_articles + 1, n * inview)
        behaviours = {
            "impression_id": np.arange(n) + week * n, "article_id": pa.nulls(n, pa.int32()), "impression_time": times,
            "read_time": rng.random(n, dtype=np.float32) * 60, "scroll_percentage": pa.nulls(n, pa.float32()),
            "device_type": rng.integers(1, 4, n).astype(np.int8),
            "article_ids_inview": _lists(np.full(n, inview), shown, pa.int32()),
            "article_ids_clicked": _lists(np.ones(n, np.int64), shown[::inview], pa.int32()),
            "user_id": rng.integers(1, num_users + 1, n), "is_sso_user": rng.random(n) < 0.5,
            "gender": pa.nulls(n, pa.int8()), "postcode": pa.nulls(n, pa.int8()), "age": pa.nulls(n, pa.int8()),
            "is_subscriber": rng.random(n) < 0.3, "session_id": np.arange(n), "next_read_time": np.zeros(n, np.float32),
            "next_scroll_percentage": pa.nulls(n, pa.float32())}
        pq.write_table(pa.table(behaviours).cast(BEHAVIOR_SCHEMA), os.path.join(folder, split, "behaviors.parquet"))
        clicks = num_users * history
        click_times = start - np.timedelta64(21, "D") + (np.sort(rng.integers(0, 21 * 86_400, (num_users, history)), axis=1)
                                                         .reshape(-1) * 1_000_000).astype("timedelta64[us]")
        lengths = np.full(num_users, history)
        users = {"user_id": np.arange(1, num_users + 1),
                 "impression_time_fixed": _lists(lengths, click_times, pa.timestamp("us")),
                 "scroll_percentage_fixed": _lists(lengths, np.zeros(clicks, np.float32), pa.float32()),
                 "article_id_fixed": _lists(lengths, rng.integers(1, num_articles + 1, clicks), pa.int32()),
                 "read_time_fixed": _lists(lengths, np.ones(clicks, np.float32), pa.float32())}
        pq.write_table(pa.table(users).cast(HISTORY_SCHEMA), os.path.join(folder, split, "history.parquet"))


COMMANDS = {  # module, extra options
    "longctr_parquet": ["data_preprocess.longctr_parquet", "--dataset_id", "kuaivideo"],
    "bars_x1_csv": ["data_preprocess.bars_x1_csv", "--layout", "kuaivideo"],
    "ebnerd_raw": ["data_preprocess.ebnerd_raw", "--dataset_id", "ebnerd_raw"],
}


def measure(name: str, source: str, output: str) -> dict:
    """Run one preprocessor in a fresh interpreter and read its peak RSS as it exits.

    ``VmHWM`` is used where /proc exists: Linux carries the parent's ``ru_maxrss`` over fork + exec, so the
    child's own getrusage would report the (larger) generator's peak.
    """
    code = ("import resource, sys, time; from importlib import import_module; t = time.perf_counter(); "
            "import_module(sys.argv[1]).main(sys.argv[2:]); "
            "hwm = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')] "
            "if sys.platform.startswith('linux') else [resource.getrusage(resource.RUSAGE_SELF).ru_maxrss]; "
            "print('RESULT', time.perf_counter() - t, hwm[0])")
    args = [sys.executable, "-c", code] + COMMANDS[name] + [
        "--input", source, "--output", output, "--no_progress"]
    done = subprocess.run(args, cwd=REPO, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{name} failed:\n{done.stderr[-3000:]}")
    seconds, rss_kib = done.stdout.strip().splitlines()[-1].split()[1:]
    with open(os.path.join(output, "dataset_info.json")) as fd:
        samples = sum(json.load(fd)["num_samples"].values())
    return {"preprocessor": name, "samples": samples, "seconds": round(float(seconds), 1),
            "rows_per_s": int(samples / float(seconds)), "peak_rss_mib": int(rss_kib) // 1024}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="*", choices=["longctr_parquet", "bars_x1_csv", "ebnerd_raw"],
                        help="preprocessors to measure (default: all)")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    root = tempfile.mkdtemp(prefix="preprocess_benchmark_")
    try:
        results = []
        writers = {"longctr_parquet": write_longctr, "bars_x1_csv": write_bars_kuaivideo, "ebnerd_raw": write_ebnerd_raw}
        for name in args.only or list(writers):
            writer = writers[name]
            source = os.path.join(root, f"{name}_input")
            os.makedirs(source)
            started = time.perf_counter()
            writer(source, args.rows, rng)
            size = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(source) for f in files)
            print(f"generated {name} input: {size / 2**20:.0f} MiB in {time.perf_counter() - started:.0f} s",
                  flush=True)
            results.append(measure(name, source, os.path.join(root, f"{name}_output")))
            results[-1]["input_mib"] = size // 2**20
            print(json.dumps(results[-1]), flush=True)
            shutil.rmtree(source)
        print(f"parent peak RSS (generators): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MiB")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
