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
from typing import Any, Dict, List, Optional

import fuxictr
import numpy as np
import torch
from fuxictr.features import FeatureMap
from fuxictr.pytorch.torch_utils import seed_everything

from . import __version__, registry
from . import config as config_lib
from .analysis.predictions import PREDICTIONS_FILE, write_predictions
from .analysis.summary import run_summary
from .atomic import write_atomically
from .cpu_kernels import kernel_fingerprint
from .data import placement, store
from .data.builders import BUILDERS, setting_differences
from .data.dataset import load_dataset
from .data.feature_map_check import check_feature_specs
from .data.loader import SequenceBatchLoader
from .distributed import init_from_environment
from .metrics import DEFAULT_LENGTH_BUCKETS
from .models import lain_parameter_count, model_keys
from .paths import data_root as resolve_data_root
from .paths import zoo_path, zoo_root
from .results import append_result, read_table
from .trainer import Trainer
from .training_options import TrainerOptions
from .training_state import RESUME_FILE


class DatasetMissingError(FileNotFoundError):
    """A dataset folder is absent and cannot be built here; the message says how to get it."""


class DatasetStaleError(DatasetMissingError):
    """A generated dataset's folder holds data of other generator settings than its config asks for."""


def ensure_dataset(dataset_id: str, dataset_cfg: Dict[str, Any], root: str) -> str:
    """The dataset folder, built first when the config has a builder and the folder is missing; a built folder
    is checked against the builder's settings (:class:`DatasetStaleError` when they differ)."""
    data_dir = os.path.join(root, str(dataset_cfg.get("data_dir", dataset_id)))
    builder, builder_args = dataset_cfg.get("builder"), dict(dataset_cfg.get("builder_args") or {})
    if builder and builder not in BUILDERS:
        raise config_lib.ConfigError(f"dataset '{dataset_id}': unknown builder '{builder}'; known: {sorted(BUILDERS)}")
    if builder and not store.is_complete(data_dir):
        print(f"Building dataset {dataset_id} into {data_dir} (or waiting for a run that builds it)", flush=True)
        store.build_once(data_dir, lambda folder: BUILDERS[builder].build(folder, dataset_id=dataset_id, **builder_args))
    if store.is_complete(data_dir):
        differences = setting_differences(data_dir, builder, builder_args) if builder else []
        if differences:
            raise DatasetStaleError(
                f"{os.path.join(data_dir, store.INFO_FILE)}: dataset '{dataset_id}' was generated with other settings "
                f"than its config's builder '{builder}' with builder_args {builder_args} makes now (recorded -> "
                f"asked: {'; '.join(differences)}). Remove the folder {data_dir} and run again to regenerate it.")
        return data_dir
    if os.path.isdir(data_dir):
        raise DatasetMissingError(
            f"{data_dir}: an incomplete dataset folder ({store.INFO_FILE} missing: a conversion was interrupted or "
            f"files were removed); convert it again:\n  {dataset_cfg.get('preprocess', '(no command configured)')}")
    raise DatasetMissingError(
        f"Dataset '{dataset_id}' is not at {data_dir}.\n\n"
        f"What to download:\n{dataset_cfg.get('download', '(no download instructions configured)')}\n"
        f"Then convert it:\n  {dataset_cfg.get('preprocess', '(no preprocessing command configured)')}\n"
        f"(data root: {root}; set --data_root or ${'{'}LAINCTR_DATA_ROOT{'}'})")


def load_feature_map(dataset_id: str, data_dir: str, params: Dict[str, Any]) -> FeatureMap:
    feature_map = FeatureMap(dataset_id, data_dir)
    feature_map.load(os.path.join(data_dir, store.FEATURE_MAP_FILE),
                     {"embedding_dim": params.get("embedding_dim"), "group_id": params.get("group_id", "user_index"),
                      "feature_specs": params.get("feature_specs")})
    return feature_map


def _code_commit() -> str:
    """The zoo's git commit, ``+dirty`` when a tracked file outside ``docs/`` has uncommitted changes, or '' outside
    a git checkout. ``docs/`` holds no code but the kept results a study appends to as it runs (e.g.
    docs/demo/study/results.csv), which must not mark that study's own later rows dirty."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", zoo_root(), *args], capture_output=True, text=True,
                              check=True).stdout.strip()
    try:
        commit = git("rev-parse", "--short=12", "HEAD")
        changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)docs")
        return commit + ("+dirty" if changed else "")
    except (OSError, subprocess.CalledProcessError):
        return ""


IMPORTED_CODE_COMMIT = _code_commit()   # what this process runs: a long-lived one keeps the code it imported


def _versions() -> Dict[str, Any]:
    """What a run's numbers depend on besides params and data: code, libraries, the intra-op thread count, the
    CPU kernels torch picked and how they round (float reductions round differently over another number of threads,
    in AVX2 and AVX-512 kernels and on other CPU models, so metrics repeat exactly only where ``torch_threads``
    and ``cpu_kernels`` are the same)."""
    return {"lainctr": __version__, "commit": IMPORTED_CODE_COMMIT, "fuxictr": fuxictr.__version__,
            "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version(),
            "torch_threads": torch.get_num_threads(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpu_kernels": kernel_fingerprint()}


def _setup_logging(log_file: str, verbose: int, append: bool = False) -> None:
    os.makedirs(os.path.dirname(log_file), exist_ok=True)
    handlers: List[logging.Handler] = [logging.FileHandler(log_file, mode="a" if append else "w"),
                                       logging.StreamHandler(sys.stdout)]
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, handlers=handlers, force=True,
                        format="%(asctime)s P%(process)d %(levelname)s %(message)s")


def make_run_dir(parent: str) -> tuple:
    """(run id, a new directory of its own under ``parent``): ``<UTC time>_<run id>``, created exclusively, so
    runs of one expid and seed (at the same time, or re-tuned) never share a checkpoint, log or history."""
    os.makedirs(parent, exist_ok=True)
    while True:
        run_id = uuid.uuid4().hex[:12]
        run_dir = os.path.join(parent, f"{datetime.datetime.now(datetime.timezone.utc):%Y%m%d-%H%M%S}_{run_id}")
        try:
            os.mkdir(run_dir)
            return run_id, run_dir
        except FileExistsError:
            continue


def resumable_run(run_dir: str, params: Dict[str, Any]) -> tuple:
    """(run id, run directory) of an interrupted run to continue: it must hold a resume point and have been
    started with exactly ``params``."""
    resume_point, params_file = os.path.join(run_dir, RESUME_FILE), os.path.join(run_dir, "params.json")
    if not os.path.exists(resume_point) or not os.path.exists(params_file):
        raise config_lib.ConfigError(f"--resume {run_dir}: no {RESUME_FILE} there (the run finished, never "
                                     f"validated, or this is not a run directory)")
    with open(params_file) as fd:
        started = json.load(fd)
    current = json.loads(json.dumps(params, default=str))
    differing = sorted(k for k in set(started) | set(current) if started.get(k) != current.get(k))
    if differing:
        raise config_lib.ConfigError(f"--resume {run_dir}: the run was started with other values of {differing}; "
                                     f"resume it with the same expid and options")
    return os.path.basename(os.path.normpath(run_dir)).rsplit("_", 1)[-1], os.path.abspath(run_dir)


def _write_json(path: str, content: object) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w") as fd:
            json.dump(content, fd, indent=1, default=str)
    write_atomically(path, write)


def sample_placement(run: Dict[str, Any], data_dir: str) -> placement.Placement:
    """Where the run keeps the splits' sample columns: its ``out_of_core`` (True, False or ``auto``, the default:
    in memory when they fit, :func:`lainctr.data.placement.choose`)."""
    where = f"{run.get('_config_file', 'the config')}: expid '{run.get('expid')}'"
    try:
        setting = placement.check_setting(run.get("out_of_core", "auto"), where)
    except ValueError as error:
        raise config_lib.ConfigError(str(error)) from error
    return placement.choose(setting, [os.path.join(data_dir, f"{split}.h5") for split in store.SPLITS])


def log_data_sizes(dataset) -> None:
    """One line: what the dataset holds in memory and what stays on disk."""
    sizes = dataset.sizes()
    splits = sorted(dataset.splits)
    on_disk = sum(sizes[f"{s}_columns"] - sizes[f"{s}_in_memory"] for s in splits)
    logging.info("Data in memory: per-user sequences %.1f MB, item table %.1f MB, sample columns %.1f MB; "
                 "read from disk per batch: %.1f MB of sample columns", sizes["sequences"] / 2 ** 20,
                 sizes["item_table"] / 2 ** 20, sum(sizes[f"{s}_in_memory"] for s in splits) / 2 ** 20,
                 on_disk / 2 ** 20)


def build_model(params: Dict[str, Any], feature_map: FeatureMap, model_id: Optional[str] = None):
    """(model, trainer options) of a merged expid ``params`` (``config.load_config``) on ``feature_map``."""
    model_class = registry.get_model(str(params["model"]))
    _, trainer_keys, model_kwargs = config_lib.split_params(params, model_keys(model_class))
    model = model_class(feature_map, **({"model_id": model_id} if model_id else {}), **model_kwargs)
    return model, TrainerOptions(**trainer_keys)


def run_experiment(expid: str, config_dir: Optional[str] = None, gpu: int = -1, data_root: Optional[str] = None,
                   overrides: Optional[Dict[str, Any]] = None, results_file: Optional[str] = None,
                   tag: Optional[str] = None, resume: Optional[str] = None) -> Dict[str, Any]:
    """Train and evaluate ``expid``; returns (and appends to the results file) the results row.

    ``tag`` (e.g. ``ablation:wo_sle``) goes to the row's ``tag`` column; the leaderboard keeps tagged runs
    apart from the plain expid. ``resume``: the run directory of an interrupted run of the same expid and
    parameters, continued from its resume point (``last.ckpt``).
    """
    params = config_lib.load_config(expid, config_dir)
    params.update(overrides or {})
    check_feature_specs(params.get("feature_specs"), f"expid {expid}: feature_specs")
    model_class = registry.get_model(str(params["model"]))
    run, trainer_keys, model_kwargs = config_lib.split_params(params, model_keys(model_class))
    dataset_id = str(run["dataset_id"])
    dataset_cfg = config_lib.load_dataset_config(dataset_id, config_dir)
    seed = int(run.get("seed", 2026))
    model_id = f"{expid}_{tag.replace(':', '_')}_seed{seed}" if tag else f"{expid}_seed{seed}"
    model_root = zoo_path(str(trainer_keys.get("model_root", "checkpoints")))
    options = TrainerOptions(**dict(trainer_keys, model_root=model_root, gpu=gpu))
    results_path = zoo_path(results_file or run.get("results_file") or os.path.join("results", "results.csv"))
    read_table(results_path)   # a malformed results file fails now, not after the training
    group = init_from_environment(gpu)
    data_dir = ensure_dataset(dataset_id, dataset_cfg, resolve_data_root(data_root))
    public_params = {k: v for k, v in params.items() if not k.startswith("_")}
    if resume:
        run_id, run_dir = resumable_run(resume, public_params)
    else:
        run_id, run_dir = group.broadcast(make_run_dir(os.path.join(model_root, dataset_id, model_id))
                                          if group.is_writer else None)
    if group.is_writer:
        if not resume:
            _write_json(os.path.join(run_dir, "params.json"), public_params)
        _setup_logging(os.path.join(run_dir, "train.log"), options.verbose, append=bool(resume))
    logging.info("Run %s in %s (%d process%s). Params: %s", run_id, run_dir, group.world_size,
                 "es" if group.distributed else "", json.dumps(public_params, default=str))
    seed_everything(seed)
    columns = sample_placement(run, data_dir)
    logging.info("Sample columns: %s", columns.reason)
    dataset = load_dataset(data_dir, in_memory=not columns.out_of_core)
    log_data_sizes(dataset)
    feature_map = load_feature_map(dataset_id, data_dir, params)
    try:
        model = model_class(feature_map, model_id=model_id, **model_kwargs)
    except (TypeError, ValueError, KeyError) as error:   # a setting the model or this dataset cannot take
        raise config_lib.ConfigError(f"{params.get('_config_file', 'the config')}: expid '{expid}' on dataset "
                                     f"'{dataset_id}': {error}") from error
    num_params, num_dense = model.count_parameters(), model.count_parameters(count_embedding=False)
    num_lain = lain_parameter_count(model)
    logging.info("Model %s: %d parameters (%d without embedding tables; %d of them LAIN's, %.2f%% over the "
                 "backbone's non-embedding parameters)", run["model"], num_params, num_dense, num_lain,
                 100.0 * num_lain / max(num_dense - num_lain, 1))

    max_len = int(run["max_len"])
    batch_size = int(run.get("batch_size", 256))
    eval_batch_size = int(run.get("eval_batch_size", batch_size))
    times = model.reads_time()
    train = SequenceBatchLoader(dataset, "train", batch_size, max_len, shuffle=bool(run.get("shuffle", True)),
                                seed=seed, times=times, group=group)
    valid = SequenceBatchLoader(dataset, "valid", eval_batch_size, max_len, times=times, group=group)
    test = SequenceBatchLoader(dataset, "test", eval_batch_size, max_len, times=times, group=group)
    trainer = Trainer(model, options, checkpoint=os.path.join(run_dir, "best.model"), group=group)
    if group.distributed:   # same initial weights (broadcast), but every rank its own dropout and sampling draws
        torch.manual_seed(seed + group.rank)
    start = time.time()
    trainer.fit(train, valid, resume_from=os.path.join(run_dir, RESUME_FILE) if resume else None)
    train_seconds = time.time() - start
    trainer.prepare_inference(dataset.item_table)
    buckets = list(run.get("length_buckets", DEFAULT_LENGTH_BUCKETS))
    history_file = os.path.join(run_dir, "history.json")
    if group.is_writer:
        _write_json(history_file, trainer.history)

    row: Dict[str, Any] = {
        "run_id": run_id, "timestamp": datetime.datetime.now().isoformat(timespec="seconds"), "run_dir": run_dir,
        "expid": expid, "dataset_id": dataset_id, "model": run["model"],
        "backbone": str(run["model"]).replace("_LAIN", ""), "lain": str(run["model"]).endswith("_LAIN"),
        "seed": seed, "max_len": max_len, "tag": tag or "",
        "params": json.dumps(public_params, sort_keys=True, default=str),
        "versions": json.dumps(_versions(), sort_keys=True), "num_params": num_params,
        "num_params_non_embedding": num_dense, "num_params_lain": num_lain,
        "lain_extra_params_pct": round(100.0 * num_lain / max(num_dense - num_lain, 1), 3),
        "train_seconds": round(train_seconds, 2),
        "epochs_run": trainer.epoch_index + 1, "history_file": history_file, "checkpoint": trainer.checkpoint,
    }
    row.update(trainer.evaluate_split(valid, "valid", buckets)[0])
    test_columns, test_predictions = trainer.evaluate_split(test, "test", buckets)
    row.update(test_columns)
    if not group.is_writer:
        return row
    row["predictions_file"] = os.path.join(run_dir, PREDICTIONS_FILE)
    write_predictions(row["predictions_file"], test_predictions)
    append_result(results_path, row)
    logging.info("%s\n(results appended to %s)", run_summary(row, buckets, read_table(results_path).rows[:-1]),
                 results_path)
    return row
