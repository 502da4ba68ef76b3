"""A trained run, found by its directory, its checkpoint or its expid, and loaded for inference.

Every run owns ``<model_root>/<dataset_id>/<expid>_seed<seed>/<UTC time>_<run id>/`` (``params.json``,
``best.model``, ``history.json``; ``last.ckpt`` only while it is unfinished). The commands that use a trained model
(``lainctr.predict``, ``lainctr.export``) name it in one of three ways:

* ``--run_dir DIR``: a results row's ``run_dir``;
* ``--checkpoint FILE``: a results row's ``checkpoint`` (its folder is the run directory);
* ``--expid X``: the newest finished run of X (any seed; ablation runs are not X's), found under the expid's
  ``model_root``; with ``--checkpoint`` as well, that checkpoint, which must belong to a run of X.
"""
from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import os
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from . import config as config_lib
from .data.dataset import SequenceDataset, load_dataset
from .errors import InputFileError
from .experiment import build_model, ensure_dataset, load_feature_map, sample_placement
from .paths import data_root as resolve_data_root
from .paths import zoo_path
from .trainer import Trainer
from .training_state import RESUME_FILE

PARAMS_FILE, CHECKPOINT_FILE, HISTORY_FILE = "params.json", "best.model", "history.json"


@dataclass(frozen=True)
class TrainedRun:
    """run_dir: the run's directory; checkpoint: the weights to load; params: its merged expid (``params.json``);
    config_dir: the user's config folder (``--config``: its ``datasets_*.yaml`` may register the run's dataset)."""
    run_dir: str
    checkpoint: str
    params: Dict[str, Any]
    config_dir: Optional[str] = None


def finished(run_dir: str) -> bool:
    """The run validated (``best.model``), ended its fit (``history.json``) and holds no resume point."""
    return all(os.path.exists(os.path.join(run_dir, f)) for f in (CHECKPOINT_FILE, HISTORY_FILE)) and \
        not os.path.exists(os.path.join(run_dir, RESUME_FILE))


def read_run(run_dir: str, checkpoint: Optional[str] = None, config_dir: Optional[str] = None) -> TrainedRun:
    """The run in ``run_dir`` with ``checkpoint`` (default its ``best.model``)."""
    checkpoint = checkpoint or os.path.join(run_dir, CHECKPOINT_FILE)
    params_file = os.path.join(run_dir, PARAMS_FILE)
    for path in (params_file, checkpoint):
        if not os.path.exists(path):
            raise InputFileError(f"{path}: missing; --run_dir must be a finished run's directory (its results row's "
                                 f"run_dir), --checkpoint a file in one")
    with open(params_file) as fd:
        try:
            params = json.load(fd)
        except ValueError as error:
            raise InputFileError(f"{params_file}: not valid JSON ({error})") from error
    for key in ("model", "dataset_id", "max_len"):
        if key not in params:
            raise InputFileError(f"{params_file}: no '{key}'; not the params.json of a run")
    return TrainedRun(os.path.abspath(run_dir), os.path.abspath(checkpoint), params, config_dir)


def newest_run(expid: str, config_dir: Optional[str] = None) -> str:
    """The directory of the newest finished run of ``expid`` (directory names start with the UTC time)."""
    params = config_lib.load_config(expid, config_dir)
    root = zoo_path(str(params.get("model_root", "checkpoints")))
    pattern = os.path.join(glob.escape(root), glob.escape(str(params["dataset_id"])), f"{glob.escape(expid)}_seed*", "*")
    runs = [d for d in glob.glob(pattern) if os.path.basename(os.path.dirname(d))[len(expid) + 5:].isdigit()]
    done = sorted((d for d in runs if finished(d)), key=os.path.basename)
    if not done:
        raise InputFileError(f"{os.path.join(root, str(params['dataset_id']))}: no finished run of expid '{expid}' "
                             f"({len(runs)} unfinished); train it with run_expid.py --expid {expid}, or give --run_dir")
    return done[-1]


def locate(run_dir: Optional[str] = None, expid: Optional[str] = None, checkpoint: Optional[str] = None,
           config_dir: Optional[str] = None) -> TrainedRun:
    """The run named by a run directory, a checkpoint or an expid (see the module docstring)."""
    if run_dir and expid:
        raise InputFileError("give --run_dir or --expid, not both")
    if run_dir:
        return read_run(run_dir, checkpoint, config_dir)
    if checkpoint and not expid:
        return read_run(os.path.dirname(os.path.abspath(checkpoint)), checkpoint, config_dir)
    if not expid:
        raise InputFileError("name the trained model: --run_dir DIR, --checkpoint FILE or --expid X")
    if not checkpoint:
        return read_run(newest_run(expid, config_dir), None, config_dir)
    run = read_run(os.path.dirname(os.path.abspath(checkpoint)), checkpoint, config_dir)
    if run.params.get("expid") != expid:
        raise InputFileError(f"{checkpoint}: a checkpoint of expid '{run.params.get('expid')}', not '{expid}'")
    return run


def load(run: TrainedRun, data_root: Optional[str] = None, gpu: int = -1) -> Tuple[Trainer, SequenceDataset]:
    """The run's model with its checkpoint's weights and inference caches built, and its dataset (validated)."""
    dataset_id = str(run.params["dataset_id"])
    data_dir = ensure_dataset(dataset_id, config_lib.load_dataset_config(dataset_id, run.config_dir),
                              resolve_data_root(data_root))
    dataset = load_dataset(data_dir, in_memory=not sample_placement(run.params, data_dir).out_of_core)
    model, options = build_model(run.params, load_feature_map(dataset_id, data_dir, run.params))
    trainer = Trainer(model, dataclasses.replace(options, verbose=0, gpu=gpu), checkpoint=run.checkpoint)
    trainer.load_weights()
    trainer.prepare_inference(dataset.item_table)
    return trainer, dataset


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options naming a trained run and where its data is."""
    which = parser.add_argument_group("trained model (one of --run_dir, --checkpoint, --expid)")
    which.add_argument("--run_dir", default=None, help="a finished run's directory (a results row's run_dir)")
    which.add_argument("--expid", default=None, help="the newest finished run of this expid (any seed)")
    which.add_argument("--checkpoint", default=None,
                       help="weights file of a run (a results row's checkpoint); its folder holds params.json")
    which.add_argument("--config", default=None,
                       help="your config folder (expids, datasets_*.yaml), where the expid or its dataset is yours")
    parser.add_argument("--data_root", default=None, help="root of the dataset folders (default $LAINCTR_DATA_ROOT)")
    parser.add_argument("--gpu", type=int, default=-1, help="-1 = CPU, N = cuda:N")


def from_arguments(args: argparse.Namespace) -> TrainedRun:
    return locate(args.run_dir, args.expid, args.checkpoint, args.config)
