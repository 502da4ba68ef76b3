"""New samples to score for docs/first_hour.md: a few users' next impression, four candidate items each.

    python docs/first_hour/new_samples.py --data DATASET_DIR --out new_samples.csv [--users 3]

Columns as the dataset's splits (``user_index``, ``item_index``, ``seq_len``; no label): ``seq_len`` is the user's
whole sequence (the impression comes after every behaviour); the candidates are two items of the category of the
user's latest behaviour and two of another category.
"""
from __future__ import annotations

import argparse
import os

import h5py
import numpy as np
import pandas as pd


def candidates(data_dir: str, users: int) -> pd.DataFrame:
    with h5py.File(os.path.join(data_dir, "sequences.h5")) as f:
        offsets, items = f["offsets"][()], f["items"][()]
    with h5py.File(os.path.join(data_dir, "items.h5")) as f:
        category = f["cate_id"][()]
    rows = []
    for user in range(users):
        length = int(offsets[user + 1] - offsets[user])
        latest = category[items[offsets[user + 1] - 1]]
        same = np.flatnonzero(category == latest)[:2]
        other = np.flatnonzero((category != latest) & (category > 0))[:2]
        rows += [(user, int(item), length) for item in np.concatenate([same, other])]
    return pd.DataFrame(rows, columns=["user_index", "item_index", "seq_len"])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="the converted dataset folder")
    parser.add_argument("--out", required=True, help="CSV to write")
    parser.add_argument("--users", type=int, default=3)
    args = parser.parse_args(argv)
    frame = candidates(args.data, args.users)
    frame.to_csv(args.out, index=False)
    print(frame.to_string(index=False))


if __name__ == "__main__":
    main()
