"""Score samples with an exported ONNX model in ONNX Runtime, the way a server would (docs/first_hour.md).

    python docs/first_hour/score_onnx.py --model model.onnx --data DATASET_DIR --samples new_samples.csv

Reads the sidecar ``model.onnx.json`` for the inputs, builds each sample's history from the dataset's
``sequences.h5`` (the user's first ``seq_len`` behaviours, the last ``max_len`` of them), pre-pads the histories to a
width the model accepts and prints the scores. Only numpy, h5py, pandas and onnxruntime: no torch, no lainctr.
"""
from __future__ import annotations

import argparse
import json
import os

import h5py
import numpy as np
import onnxruntime as ort
import pandas as pd


def padded_histories(data_dir: str, samples: pd.DataFrame, max_len: int, min_width: int) -> np.ndarray:
    """(batch, width) item rows, most recent on the right, 0 at padding."""
    with h5py.File(os.path.join(data_dir, "sequences.h5")) as f:
        offsets, items = f["offsets"][()], f["items"][()]
    histories = [items[offsets[u]:offsets[u] + n][-max_len:] for u, n in zip(samples.user_index, samples.seq_len)]
    width = max(min_width, max(len(h) for h in histories))
    out = np.zeros((len(histories), width), np.int64)
    for row, history in enumerate(histories):
        out[row, width - len(history):] = history
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="the .onnx file (its sidecar <model>.json beside it)")
    parser.add_argument("--data", required=True, help="the dataset folder the model was trained on")
    parser.add_argument("--samples", required=True, help="CSV with user_index, item_index, seq_len (+ context)")
    args = parser.parse_args(argv)
    spec = json.load(open(args.model + ".json"))
    samples = pd.read_csv(args.samples)
    items = padded_histories(args.data, samples, spec["max_len"], spec["dims"]["history_width"]["min"])
    available = {"history_items": items, "history_mask": items > 0, "target_item": samples.item_index.to_numpy(),
                 "history_length": samples.seq_len.to_numpy(), "user_index": samples.user_index.to_numpy(),
                 **{c: samples[c].to_numpy() for c in samples.columns}}
    feeds = {i["name"]: available[i["name"]].astype(i["dtype"]) for i in spec["inputs"]}
    options = ort.SessionOptions()
    options.log_severity_level = 3                  # errors only
    session = ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])
    samples["onnx_score"] = session.run(["score"], feeds)[0]
    print(f"inputs: {', '.join(f'{n} {tuple(v.shape)}' for n, v in feeds.items())}")
    print(samples.to_string(index=False))


if __name__ == "__main__":
    main()
