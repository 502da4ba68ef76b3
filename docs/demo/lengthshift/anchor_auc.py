"""AUC within the length-shift anchor samples' groups (long users' clicks whose category occurs in the history
only as one burst of ``anchor_burst`` consecutive behaviours ending anchor_min_age..anchor_max_age back, with
their negatives) and over the other long users' samples, from runs' kept test predictions. Where the run's
``params.json`` lies beside its predictions file, the anchored groups are also split by whether the burst's last
behaviour is inside the run's max_len window.

    python docs/demo/lengthshift/anchor_auc.py <data_root>/synthetic_lengthshift <run>/test_predictions.npz ...
"""
import json
import os
import sys

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from lainctr.analysis.predictions import read_predictions
from lainctr.data.dataset import load_dataset


def anchor_groups(dataset) -> tuple:
    """(anchor (N,) bool, age (N,) int64 of the burst's last behaviour, 0 where no anchor, long (N,) bool) over
    the test split's rows."""
    generator = dataset.info["generator"]
    shift, size = generator["length_shift"], generator["items_per_category"]
    burst = shift.get("anchor_burst", 1)
    test = dataset.splits["test"]
    user, seq_len, item, label = (np.asarray(test[c]) for c in ("user_index", "seq_len", "item_index", "label"))
    lengths = np.diff(dataset.offsets)
    age = np.zeros(len(label), dtype=np.int64)
    for (u, length), rows in pd.Series(np.arange(len(label))).groupby([user, seq_len]).indices.items():
        positives = rows[label[rows] == 1]
        if lengths[u] < shift["long_length"] or len(positives) != 1:
            continue
        categories = (dataset.behaviours[dataset.offsets[u]:dataset.offsets[u] + length] - 1) // size
        seen = np.flatnonzero(categories == (item[positives[0]] - 1) // size)
        consecutive = len(seen) == burst and seen[-1] - seen[0] == burst - 1
        if consecutive and shift["anchor_min_age"] <= length - seen[-1] <= shift["anchor_max_age"]:
            age[rows] = length - seen[-1]
    return age > 0, age, lengths[user] >= shift["long_length"]


def run_max_len(prediction_file: str):
    """The max_len of the run whose predictions these are (its params.json beside them), or None."""
    params = os.path.join(os.path.dirname(prediction_file), "params.json")
    if not os.path.exists(params):
        return None
    with open(params) as fd:
        return int(json.load(fd)["max_len"])


def main(data_dir: str, prediction_files: list) -> None:
    dataset = load_dataset(data_dir)
    anchor, age, long = anchor_groups(dataset)
    label = np.asarray(dataset.splits["test"]["label"])
    for path in prediction_files:
        predictions = read_predictions(path)
        if not np.array_equal(predictions["label"], label):
            raise SystemExit(f"{path}: its labels are not the test split of {data_dir}")
        score = predictions["score"]

        def auc(rows):
            return f"{roc_auc_score(label[rows], score[rows]):.4f} (n={rows.sum()})" if rows.any() else "-"
        line = f"{path}: anchor AUC {auc(anchor)}, other long AUC {auc(long & ~anchor)}"
        max_len = run_max_len(path)
        if max_len is not None:
            line += (f"; max_len {max_len}: anchor in the window {auc(anchor & (age <= max_len))}, "
                     f"outside {auc(anchor & (age > max_len))}")
        print(line)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
