"""Score a split with a trained run: ``python -m lainctr.predict --run_dir RUN_DIR --split test --out scores.parquet``.

The run directory (``run_dir`` of a results row) holds the run's parameters and best checkpoint; the scores are
those its evaluation computed, so the file's metrics are the row's. Output columns: ``user_index``,
``item_index``, the label when the split has one, ``score``, ``history_length`` (untruncated) and ``bucket``
(the run's length buckets). The file is written to a temporary name and renamed.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from typing import Optional

from lainctr.runtime import configure_cpu_runtime

configure_cpu_runtime()

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from . import config as config_lib  # noqa: E402
from .atomic import write_atomically  # noqa: E402
from .data.dataset import load_dataset  # noqa: E402
from .data.loader import SequenceBatchLoader  # noqa: E402
from .errors import USER_ERRORS, InputFileError  # noqa: E402
from .experiment import build_model, ensure_dataset, load_feature_map  # noqa: E402
from .metrics import DEFAULT_LENGTH_BUCKETS, bucket_edges, bucket_label  # noqa: E402
from .paths import data_root as resolve_data_root  # noqa: E402
from .trainer import Trainer  # noqa: E402


def predict_split(run_dir: str, split: str = "test", data_root: Optional[str] = None, gpu: int = -1) -> pd.DataFrame:
    """The scores of the run in ``run_dir`` on ``split`` of its dataset."""
    params_file, checkpoint = os.path.join(run_dir, "params.json"), os.path.join(run_dir, "best.model")
    for path in (params_file, checkpoint):
        if not os.path.exists(path):
            raise InputFileError(f"{path}: missing; --run_dir must be a finished run's directory (its results row's run_dir)")
    with open(params_file) as fd:
        params = json.load(fd)
    dataset_id = str(params["dataset_id"])
    data_dir = ensure_dataset(dataset_id, config_lib.load_dataset_config(dataset_id), resolve_data_root(data_root))
    dataset = load_dataset(data_dir, in_memory=not params.get("out_of_core", False))
    if split not in dataset.splits:
        raise InputFileError(f"{data_dir}: no split '{split}'; splits: {sorted(dataset.splits)}")
    model, options = build_model(params, load_feature_map(dataset_id, data_dir, params))
    trainer = Trainer(model, dataclasses.replace(options, verbose=0, gpu=gpu), checkpoint=checkpoint)
    trainer.load_weights()
    trainer.prepare_inference(dataset.item_table)
    loader = SequenceBatchLoader(dataset, split, int(params.get("eval_batch_size", params.get("batch_size", 256))),
                                 int(params["max_len"]))
    arrays = trainer.predict_arrays(loader)
    columns = dataset.splits[split]
    out = pd.DataFrame({"user_index": columns["user_index"], "item_index": columns["item_index"]})
    if dataset.label in columns:
        out[dataset.label] = columns[dataset.label]
    out["score"], out["history_length"] = arrays["y_pred"], arrays["history_length"]
    edges = bucket_edges(params.get("length_buckets", DEFAULT_LENGTH_BUCKETS))
    labels = np.asarray([bucket_label(low, high) for low, high in edges])
    out["bucket"] = labels[np.searchsorted([low for low, _ in edges[1:]], arrays["history_length"], side="right")]
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run_dir", required=True, help="a finished run's directory (params.json, best.model)")
    parser.add_argument("--split", default="test", help="train, valid or test of the run's dataset")
    parser.add_argument("--out", required=True, help="output .parquet or .csv file")
    parser.add_argument("--data_root", default=None, help="root of the dataset folders (default $LAINCTR_DATA_ROOT)")
    parser.add_argument("--gpu", type=int, default=-1)
    args = parser.parse_args(argv)
    scores = predict_split(args.run_dir, args.split, args.data_root, args.gpu)
    write_atomically(args.out, lambda tmp: scores.to_csv(tmp, index=False) if args.out.endswith(".csv")
                     else scores.to_parquet(tmp, index=False))
    print(f"{len(scores)} scores of {args.split} written to {args.out}")


if __name__ == "__main__":
    try:
        main()
    except (config_lib.ConfigError,) + USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
