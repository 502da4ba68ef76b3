"""A small click log of a made-up video shop in the BARS MicroVideo1.7M_x1 CSV layout, for docs/first_hour.md.

    python docs/first_hour/make_shop_log.py --out DIR [--users 400] [--seed 7]

Writes ``DIR/train.csv``, ``DIR/test.csv`` (``user_id,item_id,cate_id,is_click,timestamp,clicked_items,
clicked_categories``; the history columns hold the user's newest up-to-128 earlier train clicks, ``^``-separated, and
test rows the train-time history, as in the release) and ``DIR/item_image_emb_dim64.h5`` (``key``: raw item id,
``value``: a 64-d vector per item). Raw ids are not 0-based rows (users 1001.., items 50001..), as in real logs.

Clicks: every user likes two of 12 categories; an impression is clicked with a probability that grows when the item
is in a liked category and when the user clicked its category recently, so a sequence model has something to learn.
"""
from __future__ import annotations

import argparse
import os

import h5py
import numpy as np

CATEGORIES, ITEMS, CAP = 12, 600, 128


def rows_of_users(users: int, rng: np.random.Generator):
    """(timestamp, user, item, category, click) impressions of every user, in time order per user."""
    item_category = rng.integers(0, CATEGORIES, ITEMS)
    out = []
    for user in range(users):
        liked = rng.choice(CATEGORIES, 2, replace=False)
        start, recent = int(rng.integers(0, 3600)), []          # every user active over the same weeks
        length = int(rng.integers(20, 160))
        for step in range(length):
            item = int(rng.integers(0, ITEMS)) if rng.random() < 0.5 else \
                int(rng.choice(np.flatnonzero(np.isin(item_category, liked))))
            category = int(item_category[item])
            logit = -1.6 + 1.4 * (category in liked) + 0.5 * recent[-10:].count(category)
            click = int(rng.random() < 1 / (1 + np.exp(-logit)))
            out.append((start + 3600 * step * 160 // length + user, user, item, category, click))
            if click:
                recent.append(category)
    return sorted(out), item_category


def history_text(values) -> str:
    return "^".join(str(v) for v in values[-CAP:])


def write(folder: str, users: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    rows, item_category = rows_of_users(users, rng)
    cutoff = np.quantile([r[0] for r in rows], 0.85)       # the last 15 % of the time span is the test file
    os.makedirs(folder, exist_ok=True)
    clicked = {}                                          # user -> [(raw item, raw category)] of train clicks
    header = "user_id,item_id,cate_id,is_click,timestamp,clicked_items,clicked_categories\n"
    with open(os.path.join(folder, "train.csv"), "w") as train, open(os.path.join(folder, "test.csv"), "w") as test:
        train.write(header)
        test.write(header)
        for timestamp, user, item, category, click in rows:
            raw_user, raw_item, raw_category = 1001 + user, 50001 + item, 7 + category
            seen = clicked.get(raw_user, [])
            line = (f"{raw_user},{raw_item},{raw_category},{click},{timestamp},{history_text([i for i, _ in seen])},"
                    f"{history_text([c for _, c in seen])}\n")
            if timestamp < cutoff:
                train.write(line)
                if click:
                    clicked.setdefault(raw_user, []).append((raw_item, raw_category))
            else:
                test.write(line)
    vectors = rng.normal(size=(ITEMS, 64)).astype(np.float32) * 0.1
    vectors[np.arange(ITEMS), item_category] += 1.0          # the picture says something about the category
    with h5py.File(os.path.join(folder, "item_image_emb_dim64.h5"), "w") as h5:
        h5.create_dataset("key", data=50001 + np.arange(ITEMS, dtype=np.int64))
        h5.create_dataset("value", data=vectors)
    print(f"{len(rows)} impressions of {users} users written to {folder}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder to write train.csv, test.csv, item_image_emb_dim64.h5")
    parser.add_argument("--users", type=int, default=400)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    write(args.out, args.users, args.seed)


if __name__ == "__main__":
    main()
