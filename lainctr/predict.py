"""Score samples with a trained run: a split of its dataset or a file of new samples.

    python -m lainctr.predict --run_dir RUN_DIR --split test --out scores.parquet
    python -m lainctr.predict --expid DIN_LAIN_synthetic --input samples.parquet --out scores.csv

The run (``--run_dir``, ``--checkpoint`` or the newest finished run of ``--expid``) gives the parameters and the
weights; a split's scores are those the run's evaluation computed, so their metrics are its results row's.
``--input`` takes an ``.h5``, ``.parquet`` or ``.csv`` file in the dataset's converted layout (the split's
columns: ``user_index``, ``item_index``, ``seq_len``, the context features, ``timestamp`` where the splits have
one; the label is optional; see ``lainctr/data/sample_file.py``), validated like a split.

Output (``.parquet`` or ``.csv``, written to a temporary name and renamed): ``user_index``, ``item_index``, the label
when the samples have one, ``score``, ``history_length`` (untruncated) and ``bucket`` (the run's length buckets).
"""
from __future__ import annotations

import dataclasses
import sys
from typing import Dict, Optional

from lainctr.runtime import configure_cpu_runtime

configure_cpu_runtime()

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from . import config as config_lib  # noqa: E402
from . import trained  # noqa: E402
from .atomic import write_atomically  # noqa: E402
from .data.dataset import SequenceDataset  # noqa: E402
from .data.loader import SequenceBatchLoader  # noqa: E402
from .data.sample_file import read_samples  # noqa: E402
from .errors import CommandLineParser, InputFileError, exit_code  # noqa: E402
from .metrics import DEFAULT_LENGTH_BUCKETS, bucket_edges, bucket_label  # noqa: E402
from .trainer import Trainer  # noqa: E402

INPUT_SPLIT = "input"   # the name a sample file's columns get in the dataset the loader reads


def score_columns(trainer: Trainer, dataset: SequenceDataset, split: str, params: Dict) -> pd.DataFrame:
    """Every sample's score in ``dataset.splits[split]`` (see the module docstring for the columns)."""
    loader = SequenceBatchLoader(dataset, split, int(params.get("eval_batch_size", params.get("batch_size", 256))),
                                 int(params["max_len"]), times=trainer.model.reads_time())
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


def predict(run: trained.TrainedRun, split: Optional[str] = "test", input_file: Optional[str] = None,
            data_root: Optional[str] = None, gpu: int = -1) -> pd.DataFrame:
    """The scores of ``run`` on ``split`` of its dataset, or on the samples of ``input_file``."""
    trainer, dataset = trained.load(run, data_root, gpu)
    if input_file is not None:
        dataset = dataclasses.replace(dataset, splits={INPUT_SPLIT: read_samples(input_file, dataset)})
        split = INPUT_SPLIT
    elif split not in dataset.splits:
        raise InputFileError(f"{dataset.data_dir}: no split '{split}'; splits: {sorted(dataset.splits)}")
    return score_columns(trainer, dataset, str(split), run.params)


def predict_split(run_dir: str, split: str = "test", data_root: Optional[str] = None, gpu: int = -1) -> pd.DataFrame:
    """The scores of the run in ``run_dir`` on ``split`` of its dataset."""
    return predict(trained.read_run(run_dir), split, None, data_root, gpu)


def write_scores(path: str, scores: pd.DataFrame) -> None:
    """``scores`` as CSV (``.csv``) or parquet, written to a temporary name and renamed."""
    write_atomically(path, lambda tmp: scores.to_csv(tmp, index=False) if path.endswith(".csv")
                     else scores.to_parquet(tmp, index=False))


def main(argv=None) -> int:
    parser = CommandLineParser(prog="python -m lainctr.predict", description=__doc__)
    trained.add_arguments(parser)
    samples = parser.add_mutually_exclusive_group()
    samples.add_argument("--split", default=None, help="train, valid or test of the run's dataset (default test)")
    samples.add_argument("--input", default=None, metavar="FILE",
                         help="samples to score: .h5, .parquet or .csv with the split's columns (label optional)")
    parser.add_argument("--out", required=True, help="output scores, .parquet or .csv")
    args = parser.parse_args(argv)
    if not args.out.endswith((".parquet", ".csv")):
        parser.error(f"--out {args.out}: must end in .parquet or .csv")
    scores = predict(trained.from_arguments(args), args.split or "test", args.input, args.data_root, args.gpu)
    write_scores(args.out, scores)
    print(f"{len(scores)} scores of {args.input or args.split or 'test'} written to {args.out}")
    return 0


def cli(argv=None) -> int:
    """``main`` with a user's mistake as one line ``error: ...`` and exit status 2."""
    return exit_code(main, argv, extra=(config_lib.ConfigError,))


if __name__ == "__main__":
    sys.exit(cli())
