"""AUC within the length-shift anchor samples' groups (long users' clicks whose category occurs once in the
history, anchor_min_age..anchor_max_age back, with their negatives) and over the other long users' samples,
from runs' kept test predictions.

    python docs/demo/lengthshift/anchor_auc.py <data_root>/synthetic_lengthshift <run>/test_predictions.npz ...
"""
import sys

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from lainctr.analysis.predictions import read_predictions
from lainctr.data.dataset import load_dataset


def anchor_groups(dataset) -> tuple:
    """(anchor (N,) bool, long (N,) bool) over the test split's rows."""
    generator = dataset.info["generator"]
    shift, size = generator["length_shift"], generator["items_per_category"]
    test = dataset.splits["test"]
    user, seq_len, item, label = (np.asarray(test[c]) for c in ("user_index", "seq_len", "item_index", "label"))
    lengths = np.diff(dataset.offsets)
    anchor = np.zeros(len(label), dtype=bool)
    for (u, length), rows in pd.Series(np.arange(len(label))).groupby([user, seq_len]).indices.items():
        positives = rows[label[rows] == 1]
        if lengths[u] < shift["long_length"] or len(positives) != 1:
            continue
        categories = (dataset.behaviours[dataset.offsets[u]:dataset.offsets[u] + length] - 1) // size
        seen = np.flatnonzero(categories == (item[positives[0]] - 1) // size)
        if len(seen) == 1 and shift["anchor_min_age"] <= length - seen[0] <= shift["anchor_max_age"]:
            anchor[rows] = True
    return anchor, lengths[user] >= shift["long_length"]


def main(data_dir: str, prediction_files: list) -> None:
    dataset = load_dataset(data_dir)
    anchor, long = anchor_groups(dataset)
    label = np.asarray(dataset.splits["test"]["label"])
    for path in prediction_files:
        predictions = read_predictions(path)
        if not np.array_equal(predictions["label"], label):
            raise SystemExit(f"{path}: its labels are not the test split of {data_dir}")
        score = predictions["score"]
        print(f"{path}: anchor AUC {roc_auc_score(label[anchor], score[anchor]):.4f} (n={anchor.sum()}), other long "
              f"AUC {roc_auc_score(label[long & ~anchor], score[long & ~anchor]):.4f}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
