"""Expid lookup, config merging and key checks.

Config files:

* ``config/base_config.yaml`` — a ``Base`` block of defaults for every expid;
* ``config/dataset_config.yaml`` and ``config/datasets_*.yaml`` (e.g. your ``datasets_local.yaml``) — every
  dataset once;
* ``<model dir>/<Model>/config/*.yaml`` — each model's expids (model dirs: the zoo's ``model_zoo/`` and
  those in $LAINCTR_MODEL_DIRS), plus the ``*.yaml`` of ``--config DIR``: a user's expids join the zoo's, and
  ``base_expid: TWIN_LAIN_kuaivideo`` takes every key of that expid, then the block's own.

``params = Base <- dataset keys (length_buckets, feature_specs) <- expid block``: the expid wins. Unlike
FuxiCTR, an unknown or misspelled key is an error that lists the valid keys.
"""
from __future__ import annotations

import copy
import functools
import glob
import os
from typing import Any, Dict, Iterable, List, Optional

import yaml

from .paths import model_dirs, zoo_root
from .training_options import TrainerOptions

# Keys the experiment runner consumes; the trainer takes TrainerOptions' keys, the model the rest.
RUN_KEYS = {"model", "dataset_id", "seed", "batch_size", "eval_batch_size", "shuffle",
            "results_file", "length_buckets", "group_id", "feature_specs", "out_of_core"}
TRAINER_KEYS = frozenset(TrainerOptions.keys()) - {"gpu"}   # gpu comes from the command line
DATASET_KEYS = {"data_dir", "builder", "builder_args", "length_buckets", "feature_specs", "download",
                "preprocess"}
DATASET_PARAM_KEYS = ("length_buckets", "feature_specs")


class ConfigError(ValueError):
    """A config file or key is wrong; the message says which and what is allowed."""


def _read_yaml(path: str) -> Dict[str, dict]:
    """The mapping of blocks in ``path`` (a fresh copy; parsed once per file version: commands that plan
    hundreds of runs look every expid up again)."""
    status = os.stat(path)
    return copy.deepcopy(_parsed_yaml(path, status.st_mtime_ns, status.st_size))


@functools.lru_cache(maxsize=256)
def _parsed_yaml(path: str, mtime_ns: int, size: int) -> Dict[str, dict]:
    with open(path) as fd:
        content = yaml.safe_load(fd) or {}
    if not isinstance(content, dict):
        raise ConfigError(f"{path}: expected a mapping of blocks, got {type(content).__name__}")
    return content


NOT_EXPID_FILES = ("base_config.yaml", "dataset_config.yaml")


def config_files(config_dir: Optional[str] = None) -> List[str]:
    """Expid files: every model folder's ``config/*.yaml``, plus every ``*.yaml`` under ``config_dir`` (except its
    ``base_config.yaml``, ``dataset_config.yaml`` and ``datasets_*.yaml``): a user's expids join the zoo's."""
    files = sorted(path for root in model_dirs() for path in glob.glob(os.path.join(root, "*", "config", "*.yaml")))
    if config_dir:
        if not os.path.isdir(config_dir):
            raise ConfigError(f"--config {config_dir}: not a directory")
        files += sorted(p for p in glob.glob(os.path.join(config_dir, "**", "*.yaml"), recursive=True)
                        if os.path.basename(p) not in NOT_EXPID_FILES and not os.path.basename(p).startswith("datasets_"))
    return files


def _blocks(files: Iterable[str]) -> Dict[str, tuple]:
    """``{name: (block, file)}`` over files; a name defined twice is an error."""
    found: Dict[str, tuple] = {}
    for path in files:
        for name, block in _read_yaml(path).items():
            if name in found and found[name][1] != path:
                raise ConfigError(f"'{name}' is defined in both {found[name][1]} and {path}")
            found[name] = (block, path)
    return found


def load_base(config_dir: Optional[str] = None) -> Dict[str, Any]:
    candidates = [os.path.join(config_dir, "base_config.yaml")] if config_dir else []
    candidates.append(os.path.join(zoo_root(), "config", "base_config.yaml"))
    for path in candidates:
        if os.path.exists(path):
            return dict(_read_yaml(path).get("Base", {}))
    raise ConfigError(f"no base_config.yaml in {candidates}")


def dataset_configs(config_dir: Optional[str] = None) -> Dict[str, dict]:
    """Every dataset block of the zoo's ``config/dataset_config.yaml`` and ``config/datasets_*.yaml`` (your
    own datasets, e.g. ``datasets_local.yaml``), then of the same files in ``config_dir``, whose blocks win.
    A dataset defined twice within one folder is an error."""
    dirs = [os.path.join(zoo_root(), "config")] + ([config_dir] if config_dir else [])
    datasets: Dict[str, dict] = {}
    for d in dirs:
        defined_here: Dict[str, str] = {}
        paths = glob.glob(os.path.join(d, "dataset_config.yaml")) + sorted(glob.glob(os.path.join(d, "datasets_*.yaml")))
        for path in paths:
            for name in _read_yaml(path):
                if name in defined_here:
                    raise ConfigError(f"dataset '{name}' is defined in both {defined_here[name]} and {path}")
                defined_here[name] = path
            for name, block in _read_yaml(path).items():
                unknown = set(block) - DATASET_KEYS
                if unknown:
                    raise ConfigError(f"{path}: dataset '{name}' has unknown key(s) {sorted(unknown)}; "
                                      f"valid keys: {sorted(DATASET_KEYS)}")
                datasets[name] = dict(block, _file=path)
    return datasets


def load_dataset_config(dataset_id: str, config_dir: Optional[str] = None) -> Dict[str, Any]:
    datasets = dataset_configs(config_dir)
    if dataset_id not in datasets:
        raise ConfigError(f"unknown dataset_id '{dataset_id}'; configured datasets: {sorted(datasets)}")
    return datasets[dataset_id]


def list_expids(config_dir: Optional[str] = None) -> List[str]:
    return sorted(n for n in _blocks(config_files(config_dir)) if n != "Base" and not n.endswith("_common"))


def load_config(expid: str, config_dir: Optional[str] = None) -> Dict[str, Any]:
    """The merged parameters of ``expid`` (with ``expid`` itself under the key ``expid``)."""
    blocks = _blocks(config_files(config_dir))
    if expid not in blocks:
        known = sorted(n for n in blocks if n != "Base" and not n.endswith("_common"))
        close = [n for n in known if n.lower().startswith(expid.split("_")[0].lower())]
        raise ConfigError(f"unknown expid '{expid}'. Similar: {close or known[:20]}")
    block, path = _inherited(expid, blocks)
    for key in ("model", "dataset_id"):
        if key not in block:
            raise ConfigError(f"{path}: expid '{expid}' has no '{key}'")
    params = load_base(config_dir)
    dataset = load_dataset_config(block["dataset_id"], config_dir)
    params.update({k: dataset[k] for k in DATASET_PARAM_KEYS if k in dataset})
    params.update(block)
    params["expid"] = expid
    params["_config_file"] = path
    return params


def _inherited(name: str, blocks: Dict[str, tuple], chain: tuple = ()) -> tuple:
    """(block, file) of expid ``name`` with its ``base_expid`` chain resolved: the base's keys, then its own."""
    block, path = blocks[name]
    base = block.get("base_expid")
    if base is None:
        return dict(block), path
    if base in chain + (name,):
        raise ConfigError(f"{path}: base_expid of '{name}' loops: {' -> '.join(chain + (name, base))}")
    if base not in blocks:
        raise ConfigError(f"{path}: expid '{name}' has base_expid '{base}', which is not defined")
    parent, _ = _inherited(base, blocks, chain + (name,))
    return {**parent, **{k: v for k, v in block.items() if k != "base_expid"}}, path


def split_params(params: Dict[str, Any], model_keys: Iterable[str]) -> tuple:
    """(run params, trainer options, model kwargs); raises ConfigError naming an unknown key and the valid ones."""
    model_keys = set(model_keys) - RUN_KEYS - TRAINER_KEYS
    private = {k for k in params if k.startswith("_") or k == "expid"}
    unknown = set(params) - RUN_KEYS - TRAINER_KEYS - model_keys - private
    if unknown:
        source = params.get("_config_file", "the config")
        raise ConfigError(f"{source}: expid '{params.get('expid')}' has unknown key(s) {sorted(unknown)} for "
                          f"model {params.get('model')}. Valid keys: {sorted(RUN_KEYS | TRAINER_KEYS | model_keys)}")
    run = {k: v for k, v in params.items() if k in RUN_KEYS or k in private}
    trainer = {k: v for k, v in params.items() if k in TRAINER_KEYS}
    model = {k: v for k, v in params.items() if k in model_keys}
    if "max_len" in params:
        run["max_len"] = params["max_len"]
    return run, trainer, model
