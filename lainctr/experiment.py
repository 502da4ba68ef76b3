"""Run one expid end to end: build the data if missing, train, evaluate, append the results row."""
from __future__ import annotations

import datetime
import json
import logging
import os
import platform
import subprocess
import sys
import time
import uuid
from typing import Dict, Optional

import fuxictr
import numpy as np
import torch
from fuxictr.features import FeatureMap
from fuxictr.pytorch.torch_utils import seed_everything

from . import __version__, config as config_lib, registry
from .data import store, synthetic
from .data.dataset import load_dataset
from .data.loader import SequenceBatchLoader
from .models import lain_parameter_count, model_keys
from .paths import data_root as resolve_data_root, zoo_root
from .results import append_result
from .trainer import Trainer
from .training_options import TrainerOptions

BUILDERS = {"synthetic": synthetic.build}


class DatasetMissingError(FileNotFoundError):
    """A dataset folder is absent and cannot be built here; the message says how to get it."""


def ensure_dataset(dataset_id: str, dataset_cfg: Dict[str, object], root: str) -> str:
    """The dataset folder, built first when the config has a builder and the folder is missing."""
    data_dir = os.path.join(root, str(dataset_cfg.get("data_dir", dataset_id)))
    if store.is_complete(data_dir):
        return data_dir
    builder = dataset_cfg.get("builder")
    if builder:
        if builder not in BUILDERS:
            raise config_lib.ConfigError(f"dataset '{dataset_id}': unknown builder '{builder}'; known: {sorted(BUILDERS)}")
        print(f"Building dataset {dataset_id} into {data_dir}", flush=True)
        return BUILDERS[builder](data_dir, dataset_id=dataset_id, **dict(dataset_cfg.get("builder_args") or {}))
    raise DatasetMissingError(
        f"Dataset '{dataset_id}' is not at {data_dir}.\n\n"
        f"What to download:\n{dataset_cfg.get('download', '(no download instructions configured)')}\n"
        f"Then convert it:\n  {dataset_cfg.get('preprocess', '(no preprocessing command configured)')}\n"
        f"(data root: {root}; set --data_root or ${'{'}LAINCTR_DATA_ROOT{'}'})")


def load_feature_map(dataset_id: str, data_dir: str, params: Dict[str, object]) -> FeatureMap:
    feature_map = FeatureMap(dataset_id, data_dir)
    feature_map.load(os.path.join(data_dir, store.FEATURE_MAP_FILE),
                     {"embedding_dim": params.get("embedding_dim"), "group_id": params.get("group_id", "user_index"),
                      "feature_specs": params.get("feature_specs")})
    return feature_map


def _code_commit() -> str:
    """The zoo's git commit (``+dirty`` with uncommitted changes), or '' outside a git checkout."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", zoo_root(), *args], capture_output=True, text=True,
                              check=True).stdout.strip()
    try:
        commit = git("rev-parse", "--short=12", "HEAD")
        return commit + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.CalledProcessError):
        return ""


def _versions() -> Dict[str, object]:
    """What a run's numbers depend on besides params and data: code, libraries, and the intra-op thread count
    (float reductions split over threads round differently, so metrics repeat exactly only at the same count)."""
    return {"lainctr": __version__, "commit": _code_commit(), "fuxictr": fuxictr.__version__,
            "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version(),
            "torch_threads": torch.get_num_threads()}


def _setup_logging(log_file: str, verbose: int) -> None:
    os.makedirs(os.path.dirname(log_file), exist_ok=True)
    handlers = [logging.FileHandler(log_file, mode="w"), logging.StreamHandler(sys.stdout)]
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, handlers=handlers, force=True,
                        format="%(asctime)s P%(process)d %(levelname)s %(message)s")


def build_model(params: Dict[str, object], feature_map: FeatureMap, model_id: Optional[str] = None):
    """(model, trainer options) of a merged expid ``params`` (``config.load_config``) on ``feature_map``."""
    model_class = registry.get_model(str(params["model"]))
    _, trainer_keys, model_kwargs = config_lib.split_params(params, model_keys(model_class))
    model = model_class(feature_map, **({"model_id": model_id} if model_id else {}), **model_kwargs)
    return model, TrainerOptions(**trainer_keys)


def run_experiment(expid: str, config_dir: Optional[str] = None, gpu: int = -1, data_root: Optional[str] = None,
                   overrides: Optional[Dict[str, object]] = None, results_file: Optional[str] = None,
                   tag: Optional[str] = None) -> Dict[str, object]:
    """Train and evaluate ``expid``; returns (and appends to the results file) the results row.

    ``tag`` (e.g. ``ablation:wo_sle``) goes to the row's ``tag`` column; the leaderboard keeps tagged runs
    apart from the plain expid.
    """
    params = config_lib.load_config(expid, config_dir)
    params.update(overrides or {})
    model_class = registry.get_model(str(params["model"]))
    run, trainer_keys, model_kwargs = config_lib.split_params(params, model_keys(model_class))
    dataset_id = str(run["dataset_id"])
    dataset_cfg = config_lib.load_dataset_config(dataset_id, config_dir)
    seed = int(run.get("seed", 2026))
    model_id = f"{expid}_{tag.replace(':', '_')}_seed{seed}" if tag else f"{expid}_seed{seed}"  # runs never share files
    model_root = os.path.normpath(os.path.join(zoo_root(), str(trainer_keys.get("model_root", "checkpoints"))))
    options = TrainerOptions(**dict(trainer_keys, model_root=model_root, gpu=gpu))
    data_dir = ensure_dataset(dataset_id, dataset_cfg, resolve_data_root(data_root))
    _setup_logging(os.path.join(model_root, dataset_id, f"{model_id}.log"), options.verbose)
    logging.info("Params: %s", json.dumps({k: v for k, v in params.items() if not k.startswith("_")}, default=str))
    seed_everything(seed)
    dataset = load_dataset(data_dir)
    feature_map = load_feature_map(dataset_id, data_dir, params)
    model = model_class(feature_map, model_id=model_id, **model_kwargs)
    num_params, num_dense = model.count_parameters(), model.count_parameters(count_embedding=False)
    num_lain = lain_parameter_count(model)
    logging.info("Model %s: %d parameters (%d without embedding tables; %d of them LAIN's, %.2f%% over the "
                 "backbone's non-embedding parameters)", run["model"], num_params, num_dense, num_lain,
                 100.0 * num_lain / max(num_dense - num_lain, 1))

    max_len = int(run["max_len"])
    batch_size = int(run.get("batch_size", 256))
    eval_batch_size = int(run.get("eval_batch_size", batch_size))
    times = model.reads_time()
    train = SequenceBatchLoader(dataset, "train", batch_size, max_len, shuffle=bool(run.get("shuffle", True)), seed=seed,
                                times=times)
    valid = SequenceBatchLoader(dataset, "valid", eval_batch_size, max_len, times=times)
    test = SequenceBatchLoader(dataset, "test", eval_batch_size, max_len, times=times)
    trainer = Trainer(model, options)
    start = time.time()
    trainer.fit(train, valid)
    train_seconds = time.time() - start
    trainer.prepare_inference(dataset.item_table)
    buckets = list(run.get("length_buckets", [100, 200]))
    history_file = os.path.join(model_root, dataset_id, f"{model_id}.history.json")
    with open(history_file, "w") as fd:
        json.dump(trainer.history, fd, indent=1)

    row: Dict[str, object] = {
        "run_id": uuid.uuid4().hex[:12], "timestamp": datetime.datetime.now().isoformat(timespec="seconds"),
        "expid": expid, "dataset_id": dataset_id, "model": run["model"],
        "backbone": str(run["model"]).replace("_LAIN", ""), "lain": str(run["model"]).endswith("_LAIN"),
        "seed": seed, "max_len": max_len, "tag": tag or "",
        "params": json.dumps({k: v for k, v in params.items() if not k.startswith("_")}, sort_keys=True, default=str),
        "versions": json.dumps(_versions(), sort_keys=True), "num_params": num_params,
        "num_params_non_embedding": num_dense, "num_params_lain": num_lain,
        "lain_extra_params_pct": round(100.0 * num_lain / max(num_dense - num_lain, 1), 3), "train_seconds": round(train_seconds, 2),
        "epochs_run": trainer.epoch_index + 1, "history_file": history_file, "checkpoint": trainer.checkpoint,
    }
    row.update(trainer.evaluation_columns(valid, "valid", buckets))
    row.update(trainer.evaluation_columns(test, "test", buckets))
    results_path = results_file or run.get("results_file") or os.path.join(zoo_root(), "results", "results.csv")
    if not os.path.isabs(results_path):
        results_path = os.path.normpath(os.path.join(zoo_root(), results_path))
    append_result(results_path, row)
    summary = " - ".join(f"{k}: {row[k]:.6f}" for k in row if k.startswith("test_") and "@" not in k)
    logging.warning("[%s] test %s (results appended to %s)", expid, summary, results_path)
    return row
