"""Where a trained model's long-branch attention goes on the length-shift anchors: for the test samples whose
dormant-interest burst is inside the window (see ``anchor_auc.py``), the attention weight on the behaviours of
the candidate's category, next to the share those behaviours have of the window (what uniform attention gives),
the mean score of the anchored positives and of their negatives, and the same weight for the other clicks.

    python docs/demo/lengthshift/anchor_attention.py <run_dir> [<run_dir> ...]

Needs a long branch whose attention is laid out like the history window (DIN's is; TWIN's and SIM's are over
their retrieved top-k, and the script stops with an error for them).
"""
import os
import sys

import numpy as np
import torch

from lainctr import trained
from lainctr.data.loader import SequenceBatchLoader

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from anchor_auc import anchor_groups  # noqa: E402


def attention_on_category(run_dir: str) -> dict:
    """Per test row (N,): attention weight on the window's behaviours of the candidate's category, their share of
    the window, the score, and the row's anchor age (0: not an anchor group)."""
    run = trained.read_run(run_dir)
    trainer, dataset = trained.load(run)
    size = dataset.info["generator"]["items_per_category"]
    max_len = int(run.params["max_len"])
    loader = SequenceBatchLoader(dataset, "test", 1024, max_len, times=trainer.model.reads_time())
    weight, share, score = [], [], []
    model = trainer.model.eval()
    with torch.no_grad():
        for batch in loader:
            result = model(batch)
            attention, support = result.branches["long"].attention, result.branches["long"].support
            if attention.shape != batch.mask.shape or not torch.equal(support.bool(), batch.mask.bool()):
                raise SystemExit(f"{run_dir}: the long branch's attention is not laid out like the window")
            category = torch.where(batch.item_index > 0, (batch.item_index - 1) // size, -1)
            match = (category[:, :-1] == category[:, -1:]) & batch.mask.bool()
            weight.append((attention * match).sum(1).numpy())
            share.append((match.sum(1) / batch.mask.sum(1).clamp(min=1)).numpy())
            score.append(result.y_pred.reshape(-1).numpy())
    _, age, _ = anchor_groups(dataset)
    return {"weight": np.concatenate(weight), "share": np.concatenate(share), "score": np.concatenate(score),
            "age": age, "label": np.asarray(dataset.splits["test"]["label"]), "max_len": max_len}


def main(run_dirs: list) -> None:
    for run_dir in run_dirs:
        r = attention_on_category(run_dir)
        visible = (r["age"] > 0) & (r["age"] <= r["max_len"])
        positive, negative = visible & (r["label"] == 1), visible & (r["label"] == 0)
        print(f"{run_dir} (max_len {r['max_len']}): {positive.sum()} anchored clicks with the burst in the window: "
              f"attention on the candidate's category {r['weight'][positive].mean():.4f} (uniform "
              f"{r['share'][positive].mean():.4f}); mean score positive {r['score'][positive].mean():.4f}, "
              f"negatives {r['score'][negative].mean():.4f}")
        other = (r["age"] == 0) & (r["label"] == 1) & (r["share"] > 0)
        print(f"  other clicks whose category is in the window ({other.sum()}): attention on it "
              f"{r['weight'][other].mean():.4f} (uniform {r['share'][other].mean():.4f})")


if __name__ == "__main__":
    main(sys.argv[1:])
