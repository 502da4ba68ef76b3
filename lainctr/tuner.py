"""Grid tuner (FuxiCTR style) and LAIN ablation runner.

    python -m lainctr.tuner grid --config config/tuner/DIN_LAIN_example.yaml [--seeds 2026 2027] [--dry-run]
    python -m lainctr.tuner ablation --expid TWIN_LAIN_synthetic --seeds 2026 2027 2028 [--lain_preset paper]
    python -m lainctr.tuner sweep --expid DIN_LAIN_synthetic --max_len 50 100 200 500 1000 --seeds 2026 2027 2028

    python -m lainctr.tuner study --out docs/demo [--dataset_id synthetic] [--dry-run]

``--lain_preset lean|paper`` runs LAIN models with that size preset (``grid``: every point; ``ablation``:
every variant; ``sweep``: the LAIN variant). **sweep** is :mod:`lainctr.sweep`, **study** :mod:`lainctr.study`.
``--workers N`` (ablation, sweep, study) makes N runs at once, each in a process of its own with the cores
shared out (:func:`lainctr.run_plan.execute`); on a 2-core CPU two one-thread runs finish sooner than the
same runs one after the other with two threads.

**grid** — a tuner YAML names a ``base_expid``, a ``tuner_space`` (key -> list of values) and ``seeds``.
Every combination becomes an expid ``<base_expid>_<idx:03d>_<md5[:8]>`` (idx from 001 in
``itertools.product`` order, last key fastest; md5 of the point's full parameter block), written to
``<out_dir>/configs/model_config.yaml`` and run with ``run_experiment(point, config_dir=...)`` once per
seed. The selected point is the best mean over seeds of the **validation** monitor (the expid's
``monitor`` / ``monitor_mode``, or the tuner YAML's); test numbers are reported for it, never used to pick.

**ablation** — runs the spec's ablation variants (section 6; :func:`ablation_overrides`) of a ``_LAIN``
expid through ``run_experiment(expid, overrides=...)`` for each seed, into a separate results file, and
writes the paper-style table (AUC / logloss and deltas vs full, paired over seeds). The variant of a row
is kept in a sidecar CSV (and is recoverable from the row's params: ``infer_variant``).
"""
from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import pandas as pd
import yaml

from . import config as config_lib
from .analysis import reference as ref_lib
from .analysis.ablation import (
    ABLATION_TAG,
    LABELS,
    ablation_overrides,
    ablation_table,
    ablation_tag,
    add_ablation_intervals,
    infer_variant,
    variant_of_tag,
)
from .analysis.bootstrap import BootstrapSettings
from .analysis.stats import mean_std
from .atomic import write_atomically, write_text_atomically
from .errors import USER_ERRORS, CommandLineParser
from .lain_presets import LAIN_PRESETS
from .metrics import DEFAULT_METRICS
from .paths import zoo_path, zoo_relative
from .run_plan import PlannedRun, Runner, default_runner, execute, preset_of
from .runtime import configure_cpu_runtime
from .study import StudyConfig, run_study
from .study import dry_run as study_dry_run
from .sweep import SWEEP_MAX_LENS, run_sweep

TUNER_KEYS = {"base_expid", "tuner_space", "seeds", "monitor", "monitor_mode", "results_file", "out_dir",
              "config_dir"}
REPORT_METRICS = DEFAULT_METRICS

__all__ = ["GridPoint", "ablation_overrides", "expand_grid", "load_tuner_config", "run_ablation", "run_grid",
           "select_best", "monitor_value"]


# ----- shared -----------------------------------------------------------------------------------
def _float(value: object) -> float:
    try:
        return float(str(value))
    except (TypeError, ValueError):
        return math.nan


def monitor_value(row: Mapping[str, Any], monitor: Union[str, Mapping[str, float]], split: str = "valid") -> float:
    """The monitor of a results row: ``{split}_{monitor}``, or for a FuxiCTR dict monitor
    (``{AUC: 1, gAUC: 1}``) the weighted sum of the named metrics."""
    if isinstance(monitor, str):
        return _float(row.get(f"{split}_{monitor}"))
    return sum(float(weight) * _float(row.get(f"{split}_{metric}")) for metric, weight in monitor.items())


def monitor_name(monitor: Union[str, Mapping[str, float]]) -> str:
    return monitor if isinstance(monitor, str) else " + ".join(
        (f"{w:g}*" if float(w) != 1 else "") + m for m, w in monitor.items())


def _fmt(mean: float, std: float = math.nan, digits: int = 4, sign: bool = False) -> str:
    if math.isnan(mean):
        return ""
    text = f"{mean:+.{digits}f}" if sign else f"{mean:.{digits}f}"
    return text + (f" ± {std:.{digits}f}" if not math.isnan(std) else "")


def _markdown(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    from .leaderboard import markdown_table
    return markdown_table(headers, rows)


# ----- grid -------------------------------------------------------------------------------------
@dataclass
class GridPoint:
    """One grid point: its expid ``name``, 1-based ``index``, the tuned ``params`` and the full ``block``."""
    name: str
    index: int
    params: Dict[str, Any]
    block: Dict[str, Any] = field(repr=False)


def load_tuner_config(path: str) -> Dict[str, Any]:
    """Read and check a tuner YAML (unknown keys are an error naming the valid ones)."""
    if not os.path.isfile(path):
        raise config_lib.ConfigError(f"--config {path}: no such file (a tuner YAML, e.g. "
                                     "config/tuner/DIN_LAIN_example.yaml)")
    with open(path) as fd:
        tuner = yaml.safe_load(fd) or {}
    if not isinstance(tuner, dict):
        raise config_lib.ConfigError(f"{path}: expected a mapping")
    unknown = set(tuner) - TUNER_KEYS
    if unknown:
        raise config_lib.ConfigError(f"{path}: unknown key(s) {sorted(unknown)}; valid keys: {sorted(TUNER_KEYS)}")
    for key in ("base_expid", "tuner_space"):
        if key not in tuner:
            raise config_lib.ConfigError(f"{path}: '{key}' is required")
    if not isinstance(tuner["tuner_space"], dict) or not tuner["tuner_space"]:
        raise config_lib.ConfigError(f"{path}: tuner_space must be a non-empty mapping of key -> list of values")
    for key in ("seed", "expid", "model"):
        if key in tuner["tuner_space"]:
            raise config_lib.ConfigError(f"{path}: '{key}' cannot be tuned" +
                                         ("; list seeds under 'seeds:'" if key == "seed" else ""))
    tuner.setdefault("seeds", None)
    tuner["_path"] = os.path.abspath(path)
    return tuner


def _valid_keys(block: Mapping[str, Any]) -> set:
    from . import registry
    from .models import model_keys
    model_class = registry.get_model(str(block["model"]))
    return config_lib.RUN_KEYS | config_lib.TRAINER_KEYS | set(model_keys(model_class)) | {"max_len"}


def point_hash(block: Mapping[str, Any]) -> str:
    """md5[:8] of the point's full parameter block (sorted JSON)."""
    return hashlib.md5(json.dumps(block, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:8]


def expand_grid(tuner: Mapping[str, Any], base_params: Optional[Mapping[str, Any]] = None,
                check_keys: bool = True) -> List[GridPoint]:
    """Every combination of ``tuner_space`` as a :class:`GridPoint`.

    Args:
        tuner: a tuner config (:func:`load_tuner_config`).
        base_params: the merged params of ``base_expid`` (default: ``config.load_config``).
        check_keys: reject tuned keys the model does not accept (needs the model class).
    """
    base_expid = str(tuner["base_expid"])
    if base_params is None:
        base_params = config_lib.load_config(base_expid, tuner.get("config_dir"))
    block = {k: v for k, v in base_params.items() if not k.startswith("_") and k != "expid"}
    space = {k: (list(v) if isinstance(v, (list, tuple)) else [v]) for k, v in dict(tuner["tuner_space"]).items()}
    if any(not values for values in space.values()):
        raise config_lib.ConfigError(f"tuner_space of {base_expid}: every key needs at least one value")
    if check_keys:
        valid = _valid_keys(block)
        unknown = sorted(set(space) - valid)
        if unknown:
            raise config_lib.ConfigError(f"tuner_space of {base_expid}: unknown key(s) {unknown} for model "
                                         f"{block['model']}. Valid keys: {sorted(valid)}")
    points = []
    for index, values in enumerate(itertools.product(*space.values()), start=1):
        params = dict(zip(space, values))
        full = {**block, **params}
        points.append(GridPoint(f"{base_expid}_{index:03d}_{point_hash(full)}", index, params, full))
    return points


def write_grid_configs(points: Sequence[GridPoint], directory: str) -> str:
    """``directory/model_config.yaml`` with one block per point (the ``--config`` dir of the points)."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "model_config.yaml")
    blocks = yaml.dump({p.name: p.block for p in points}, Dumper=_PlainDumper, sort_keys=False,
                       default_flow_style=None)
    write_text_atomically(path, "# Generated by lainctr.tuner: one expid per grid point. Do not edit; edit the "
                                "tuner YAML.\n" + blocks)
    return path


class _PlainDumper(yaml.SafeDumper):
    """Writes shared lists in full instead of YAML anchors (``&id001``), like FuxiCTR's tuner."""

    def ignore_aliases(self, data) -> bool:
        return True


def select_best(point_rows: Mapping[str, Sequence[Mapping[str, Any]]], monitor: Union[str, Mapping[str, float]],
                mode: str = "max") -> Tuple[Optional[str], pd.DataFrame]:
    """Pick the point with the best mean **validation** monitor over its seeds.

    Args:
        point_rows: ``{point name: results rows (one per seed)}``.
        monitor / mode: FuxiCTR ``monitor`` (metric name or {metric: weight}) and ``monitor_mode`` (max/min).
    Returns:
        (best point name or None, summary table: point, n, valid monitor mean/std, valid and test metrics,
        ``selected``). Test columns are reported only; they never enter the choice.
    """
    if mode not in ("max", "min"):
        raise ValueError(f"monitor_mode must be 'max' or 'min', got {mode!r}")
    rows = []
    for name, runs in point_rows.items():
        values = [monitor_value(r, monitor, "valid") for r in runs]
        mean, std = mean_std(values)
        out = {"point": name, "n": len(runs), "seeds": " ".join(str(r.get("seed", "")) for r in runs),
               "valid_monitor": mean, "valid_monitor_std": std}
        for split in ("valid", "test"):
            for metric in REPORT_METRICS:
                out[f"{split}_{metric}"], out[f"{split}_{metric}_std"] = mean_std(
                    [_float(r.get(f"{split}_{metric}")) for r in runs])
        rows.append(out)
    table = pd.DataFrame(rows)
    candidates = table[table["valid_monitor"].notna()] if len(table) else table
    if candidates.empty:
        best = None
    else:
        ordered = candidates["valid_monitor"]
        best = str(candidates.loc[ordered.idxmax() if mode == "max" else ordered.idxmin(), "point"])
    table["selected"] = table["point"] == best if len(table) else []
    return best, table


def run_grid(config_path: str, runner: Optional[Runner] = None, seeds: Optional[Sequence[int]] = None,
             gpu: int = -1, data_root: Optional[str] = None, out_dir: Optional[str] = None,
             dry_run: bool = False, check_keys: bool = True, lain_preset: Optional[str] = None) -> Dict[str, Any]:
    """Expand, run and select; writes ``configs/``, ``grid_runs.csv``, ``grid_summary.{csv,md}`` and
    ``best.yaml`` under ``out_dir`` (default ``results/tuner/<tuner file name>``). ``lain_preset`` replaces
    the base expid's (every point then has it; a preset in ``tuner_space`` still wins).

    Returns:
        {"points", "best", "summary", "out_dir", "failed"}.
    """
    tuner = load_tuner_config(config_path)
    stem = os.path.splitext(os.path.basename(config_path))[0]
    out_dir = zoo_path(out_dir or tuner.get("out_dir") or os.path.join("results", "tuner", stem))
    base_params = config_lib.load_config(str(tuner["base_expid"]), tuner.get("config_dir"))
    if lain_preset:
        base_params["lain_preset"] = _checked_preset(lain_preset, base_params)
    points = expand_grid(tuner, base_params, check_keys)
    config_dir = os.path.join(out_dir, "configs")
    write_grid_configs(points, config_dir)
    seeds = list(seeds or tuner.get("seeds") or [base_params.get("seed", 2026)])
    monitor = tuner.get("monitor") or base_params.get("monitor", "AUC")
    mode = str(tuner.get("monitor_mode") or base_params.get("monitor_mode", "max"))
    results_file = zoo_path(tuner.get("results_file") or os.path.join(out_dir, "results.csv"))
    print(f"{len(points)} grid points x {len(seeds)} seed(s) of {tuner['base_expid']}; "
          f"selection on valid {monitor_name(monitor)} ({mode}); configs in {config_dir}")
    for point in points:
        print(f"  {point.name}: {json.dumps(point.params, default=str)}")
    if dry_run:
        return {"points": points, "best": None, "summary": None, "out_dir": out_dir, "failed": []}

    runner = runner or default_runner()
    point_rows: Dict[str, List[Dict[str, Any]]] = {p.name: [] for p in points}
    sidecar, failed = [], []
    for point in points:
        for seed in seeds:
            try:
                row = runner(point.name, tag=None, config_dir=config_dir, gpu=gpu,
                                   data_root=data_root, overrides={"seed": int(seed)}, results_file=results_file)
            except config_lib.ConfigError:
                raise
            except Exception as error:  # one failed point must not lose the others
                print(f"  FAILED {point.name} seed {seed}: {type(error).__name__}: {error}", file=sys.stderr)
                failed.append((point.name, seed, repr(error)))
                continue
            row = dict(row, seed=row.get("seed", seed))
            point_rows[point.name].append(row)
            sidecar.append({"point": point.name, "seed": row["seed"], "run_id": row.get("run_id", ""),
                            "params": json.dumps(point.params, sort_keys=True, default=str),
                            "valid_monitor": monitor_value(row, monitor),
                            **{f"{s}_{m}": row.get(f"{s}_{m}") for s in ("valid", "test") for m in REPORT_METRICS}})
    best, summary = select_best({k: v for k, v in point_rows.items() if v}, monitor, mode)
    os.makedirs(out_dir, exist_ok=True)
    sidecar_frame = pd.DataFrame(sidecar)
    write_atomically(os.path.join(out_dir, "grid_runs.csv"), lambda tmp: sidecar_frame.to_csv(tmp, index=False))
    by_name = {p.name: p for p in points}
    if len(summary):
        summary.insert(1, "params", [json.dumps(by_name[n].params, default=str) for n in summary["point"]])
    write_atomically(os.path.join(out_dir, "grid_summary.csv"), lambda tmp: summary.to_csv(tmp, index=False))
    markdown = _grid_markdown(tuner, summary, best, monitor, mode, seeds)
    write_text_atomically(os.path.join(out_dir, "grid_summary.md"), markdown)
    if best is not None:
        chosen = summary[summary["point"] == best].iloc[0]
        selection = {"selected_expid": best, "selected_by": f"valid {monitor_name(monitor)} ({mode}), mean over seeds",
                     "seeds": seeds, "tuned_params": by_name[best].params,
                     "valid": {m: _round(chosen[f"valid_{m}"]) for m in REPORT_METRICS},
                     "test": {m: _round(chosen[f"test_{m}"]) for m in REPORT_METRICS},
                     "config": {best: by_name[best].block}}
        write_text_atomically(os.path.join(out_dir, "best.yaml"),
                              yaml.safe_dump(selection, sort_keys=False, default_flow_style=None))
    print(markdown)
    print(f"wrote {out_dir}/(grid_runs.csv, grid_summary.csv, grid_summary.md, best.yaml); results in {results_file}")
    return {"points": points, "best": best, "summary": summary, "out_dir": out_dir, "failed": failed}


def _checked_preset(preset: str, params: Mapping[str, Any]) -> str:
    """``preset`` when it names a size preset and ``params`` is a LAIN model's, else a ConfigError."""
    if preset not in LAIN_PRESETS:
        raise config_lib.ConfigError(f"--lain_preset {preset}: unknown; known: {sorted(LAIN_PRESETS)}")
    if not str(params.get("model", "")).endswith("_LAIN"):
        raise config_lib.ConfigError(f"--lain_preset needs a _LAIN expid; '{params.get('expid')}' is model "
                                     f"{params.get('model')}")
    return preset


def _round(value: object) -> Optional[float]:
    value = _float(value)
    return None if math.isnan(value) else round(value, 6)


def _grid_markdown(tuner, summary: pd.DataFrame, best: Optional[str], monitor, mode: str, seeds) -> str:
    lines = [f"# Grid search: {tuner['base_expid']}", "",
             f"Selection: best mean **validation** {monitor_name(monitor)} ({mode}) over seeds {seeds}; "
             "test numbers are reported, not used.", ""]
    rows = [["**" + r["point"] + "**" if r["selected"] else r["point"], r["params"], r["n"],
             _fmt(r["valid_monitor"], r["valid_monitor_std"]),
             *[_fmt(r[f"test_{m}"], r[f"test_{m}_std"]) for m in REPORT_METRICS]] for _, r in summary.iterrows()]
    lines.append(_markdown(["point", "params", "n", f"valid {monitor_name(monitor)}",
                            *[f"test {m}" for m in REPORT_METRICS]], rows))
    if best is not None:
        chosen = summary[summary["point"] == best].iloc[0]
        lines += ["", f"Selected: `{best}` {chosen['params']} — test " +
                  ", ".join(f"{m} {_fmt(chosen[f'test_{m}'], chosen[f'test_{m}_std'])}" for m in REPORT_METRICS)]
    return "\n".join(lines) + "\n"


# ----- ablation ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class AblationPlan:
    """The runs of one ablation (see :func:`plan_ablation`): ``preset`` its LAIN size preset, ``suffix`` what
    its file names add (``_<preset>`` for another preset than the expid's), ``runs`` every variant at every
    seed, tagged ``ablation:<variant>``."""
    model: str
    preset: str
    suffix: str
    variants: List[str]
    results_file: str
    runs: List[PlannedRun]


def plan_ablation(expid: str, seeds: Sequence[int], variants: Optional[Sequence[str]] = None,
                  config_dir: Optional[str] = None, results_file: Optional[str] = None,
                  lain_preset: Optional[str] = None) -> AblationPlan:
    """The :class:`AblationPlan` of ``expid`` (a ``_LAIN`` expid); ``lain_preset`` is not checked here (the
    study lists its runs before it knows the preset)."""
    params = config_lib.load_config(expid, config_dir)
    if not str(params["model"]).endswith("_LAIN"):
        raise config_lib.ConfigError(f"ablation needs a _LAIN expid; '{expid}' is model {params['model']}")
    own_preset = preset_of(str(params["model"]), params)
    preset = lain_preset or own_preset
    suffix = "" if preset == own_preset else f"_{preset}"
    all_variants = ablation_overrides()
    variants = list(variants or all_variants)
    unknown = [v for v in variants if v not in all_variants]
    if unknown:
        raise config_lib.ConfigError(f"unknown ablation variant(s) {unknown}; known: {list(all_variants)}")
    results_file = zoo_path(results_file or os.path.join("results", "ablation", f"{expid}{suffix}.csv"))
    runs = [PlannedRun(expid, {**all_variants[variant], "seed": int(seed), **({"lain_preset": preset} if suffix else {})},
                       results_file, tag=ablation_tag(variant), config_dir=config_dir)
            for variant in variants for seed in seeds]
    return AblationPlan(str(params["model"]), preset, suffix, variants, results_file, runs)


def run_ablation(expid: str, seeds: Sequence[int], variants: Optional[Sequence[str]] = None,
                 runner: Optional[Runner] = None, gpu: int = -1, data_root: Optional[str] = None,
                 config_dir: Optional[str] = None, results_file: Optional[str] = None, out: str = "reports",
                 rebuild: bool = False, resume: bool = False, lain_preset: Optional[str] = None,
                 workers: int = 1, intervals: Optional[BootstrapSettings] = BootstrapSettings()) -> pd.DataFrame:
    """Run (or with ``rebuild`` only re-tabulate) the ablation of ``expid``; returns the table.

    Writes ``<out>/ablation_<expid>.{md,csv}`` and the sidecar ``<out>/ablation_<expid>_runs.csv``
    (variant, seed, run_id, metrics); the rows themselves go to ``results_file`` (default
    ``results/ablation/<expid>.csv``, so the main leaderboard is not mixed with ablation runs).
    ``lain_preset``: the size preset of every variant (default: the expid's); one other than the expid's
    adds ``_<preset>`` to the file names, and only rows of that preset are tabulated. ``workers``: runs at
    once (see :func:`lainctr.run_plan.execute`). ``intervals``: the paired user bootstrap of every variant's
    change from the full model (:func:`lainctr.analysis.ablation.add_ablation_intervals`; None: none).
    """
    if lain_preset:
        _checked_preset(lain_preset, config_lib.load_config(expid, config_dir))
    plan = plan_ablation(expid, seeds, variants, config_dir, results_file, lain_preset)
    out = zoo_path(out)
    existing = (_ablation_rows_from_file(plan.results_file, expid, plan.model, plan.preset)
                if (rebuild or resume) else [])
    rows = list(existing)
    if not rebuild:
        done = {(r["variant"], int(r["seed"])) for r in existing}
        todo = []
        for run in plan.runs:
            variant, seed = variant_of_tag(run.tag), int(run.overrides["seed"])
            if (variant, seed) in done:
                print(f"  skip {variant} seed {seed}: already in {plan.results_file}")
            else:
                todo.append(run)
        for run, row in execute(todo, runner, gpu, data_root, workers, skip_done=False):
            rows.append(dict(row, variant=variant_of_tag(run.tag), seed=row.get("seed", run.overrides["seed"])))
    if not rows:
        raise FileNotFoundError(f"no ablation runs of {expid} in {plan.results_file}")
    variants = plan.variants
    runs = pd.DataFrame(rows)
    runs = runs[runs["variant"].isin(variants)] if not rebuild else runs
    for column in [f"{s}_{m}" for s in ("valid", "test") for m in REPORT_METRICS]:
        runs[column] = pd.to_numeric(runs.get(column), errors="coerce")
    runs["seed"] = pd.to_numeric(runs["seed"]).astype(int)
    paper = ref_lib.paper_ablation(ref_lib.load_reference())
    table = ablation_table(runs, REPORT_METRICS, "test", paper)
    if intervals is not None:
        table = add_ablation_intervals(table, runs, intervals, [os.path.dirname(os.path.abspath(plan.results_file))])
    os.makedirs(out, exist_ok=True)
    stem = os.path.join(out, f"ablation_{expid}{plan.suffix}")
    sidecar = runs[["variant", "seed"] + [c for c in ("run_id", "timestamp") if c in runs] +
                   [f"{s}_{m}" for s in ("valid", "test") for m in REPORT_METRICS]]
    write_atomically(stem + "_runs.csv", lambda tmp: sidecar.to_csv(tmp, index=False))
    write_atomically(stem + ".csv", lambda tmp: table.to_csv(tmp, index=False))
    markdown = ablation_markdown(expid + (f" ({plan.preset} preset)" if plan.suffix else ""), table, plan.results_file)
    write_text_atomically(stem + ".md", markdown)
    print(markdown)
    print(f"wrote {stem}.md, {stem}.csv, {stem}_runs.csv; runs in {plan.results_file}")
    return table


def _ablation_rows_from_file(results_file: str, expid: str, model: str, preset: str) -> List[Dict[str, Any]]:
    """The rows of ``expid`` (a ``model`` expid) with LAIN size preset ``preset``, each with its variant."""
    from .results import read_results
    rows = []
    for row in read_results(results_file):
        if row.get("expid") != expid or preset_of(model, json.loads(row.get("params") or "{}")) != preset:
            continue
        tag = str(row.get("tag", "") or "")
        variant = variant_of_tag(tag) if tag.startswith(ABLATION_TAG) else infer_variant(row.get("params") or "{}")
        rows.append(dict(row, variant=variant))
    return rows


def ablation_markdown(expid: str, table: pd.DataFrame, results_file: str = "") -> str:
    from .leaderboard import format_gain, format_interval
    with_intervals = "delta_AUC_ci_low" in table
    lines = [f"# Ablation: {expid}", "",
             "Test metrics, mean ± std over seeds; Δ = variant − full, paired over the seeds both ran"
             + ("; Δ% = the relative change with its 95 % paired bootstrap interval over test users (the runs' kept "
                "predictions; `*`: the interval excludes 0)" if with_intervals else "")
             + ". The paper columns are TWIN on MicroVideo1.7M (unverified against the paper PDF), for direction "
             "only.", ""]

    def relative(r: pd.Series, metric: str) -> str:
        low, high = r[f"delta_{metric}_ci_low"], r[f"delta_{metric}_ci_high"]
        return f"{format_gain(r[f'delta_{metric}_pct'])} {format_interval(low, high, low > 0 or high < 0)}".strip()

    rows = []
    for _, r in table.iterrows():
        rows.append([LABELS.get(r["variant"], r["variant"]), r["n"],
                     _fmt(r["AUC_mean"], r["AUC_std"]), _fmt(r["delta_AUC"], r["delta_AUC_std"], sign=True),
                     *([relative(r, "AUC")] if with_intervals else []),
                     _fmt(r["logloss_mean"], r["logloss_std"]),
                     _fmt(r["delta_logloss"], r["delta_logloss_std"], sign=True),
                     *([relative(r, "logloss")] if with_intervals else []),
                     _fmt(r.get("gAUC_mean", math.nan), r.get("gAUC_std", math.nan)),
                     _fmt(r.get("paper_AUC", math.nan)), _fmt(r.get("paper_delta_AUC", math.nan), sign=True),
                     _fmt(r.get("paper_logloss", math.nan)), _fmt(r.get("paper_delta_logloss", math.nan), sign=True)])
    lines.append(_markdown(["variant", "n", "AUC", "ΔAUC", *(["ΔAUC %"] if with_intervals else []), "logloss",
                            "Δlogloss", *(["Δlogloss %"] if with_intervals else []), "gAUC", "paper AUC",
                            "paper ΔAUC", "paper logloss", "paper Δlogloss"], rows))
    notes = sorted({str(n) for n in table.get("ci_note", pd.Series(dtype=str)).dropna() if str(n)})
    lines += [f"\nNo intervals: {note}." for note in notes]
    if results_file:
        lines += ["", f"Runs: `{zoo_relative(results_file)}`"]
    return "\n".join(lines) + "\n"


# ----- command line -----------------------------------------------------------------------------
def _bootstrap(args) -> Optional[BootstrapSettings]:
    return BootstrapSettings(args.bootstrap) if args.bootstrap > 0 else None


def main(argv: Optional[Sequence[str]] = None) -> int:
    configure_cpu_runtime()   # before torch loads (it loads with the first run), as in run_expid.py
    parser = CommandLineParser(prog="python -m lainctr.tuner", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="{grid,ablation,sweep,study}")
    grid = commands.add_parser("grid", help="run a tuner YAML's grid and select on validation",
                               description="Reads a tuner YAML (base_expid, tuner_space, seeds); writes configs/, "
                                           "grid_runs.csv, grid_summary.csv/.md and best.yaml into --out, and one "
                                           "results row per point and seed.")
    grid.add_argument("--config", required=True, help="tuner YAML, e.g. config/tuner/DIN_LAIN_example.yaml")
    grid.add_argument("--seeds", type=int, nargs="+", default=None, help="override the YAML's seeds")
    grid.add_argument("--out", default=None, help="output folder (default results/tuner/<tuner name>)")
    grid.add_argument("--dry-run", action="store_true", help="expand and write the configs only")
    ablation = commands.add_parser("ablation", help="run the LAIN ablation variants of a _LAIN expid",
                                   description="Runs every ablation variant of a _LAIN expid for every seed into "
                                               "--results, then writes the ablation table (Markdown and CSV) into "
                                               "--out.")
    ablation.add_argument("--expid", required=True, help="a _LAIN expid, e.g. TWIN_LAIN_synthetic")
    ablation.add_argument("--seeds", type=int, nargs="+", default=[2026, 2027, 2028], help="seeds (default 2026-2028)")
    ablation.add_argument("--variants", nargs="+", default=None, choices=list(ablation_overrides()),
                          metavar="VARIANT", help=f"subset of {list(ablation_overrides())} (default: all)")
    ablation.add_argument("--config", default=None, help="your expid folder, read besides the zoo's")
    ablation.add_argument("--results", default=None, help="results CSV (default results/ablation/<expid>.csv)")
    ablation.add_argument("--out", default="reports", help="folder of the ablation table")
    ablation.add_argument("--rebuild", action="store_true", help="no runs: tabulate the results file")
    ablation.add_argument("--resume", action="store_true", help="skip variant/seed pairs already in the results")
    sweep = commands.add_parser("sweep", help="train a backbone and its LAIN variant at several max_len")
    sweep.add_argument("--expid", required=True, help="the backbone's or the LAIN variant's expid")
    sweep.add_argument("--max_len", type=int, nargs="+", default=list(SWEEP_MAX_LENS))
    sweep.add_argument("--seeds", type=int, nargs="+", default=[2026])
    sweep.add_argument("--backbone_only", action="store_true", help="train the backbone alone (no LAIN runs)")
    sweep.add_argument("--dataset_id", default=None, help="run both expids on this dataset instead of theirs")
    sweep.add_argument("--results", default=None, help="results CSV (default results/sweep/<backbone expid>.csv)")
    sweep.add_argument("--out", default="reports", help="folder of the sweep table and plot")
    sweep.add_argument("--dry-run", action="store_true", help="list the runs only")
    study = commands.add_parser("study", help="the demo study of issue 16 (grid, preset, sweeps, ablations, "
                                              "leaderboard); see lainctr/study.py")
    defaults = StudyConfig()
    study.add_argument("--dataset_id", default=defaults.dataset_id)
    study.add_argument("--seeds", type=int, nargs="+", default=list(defaults.seeds))
    study.add_argument("--sweep_seeds", type=int, nargs="+", default=list(defaults.sweep_seeds))
    study.add_argument("--ablation_seeds", type=int, nargs="+", default=list(defaults.ablation_seeds))
    study.add_argument("--max_len", type=int, nargs="+", default=list(defaults.sweep_max_lens), help="of the sweeps")
    study.add_argument("--sweep_backbones", nargs="+", default=list(defaults.sweep_backbones))
    study.add_argument("--models", nargs="+", default=None, help="backbones (default: every one with a _LAIN variant)")
    study.add_argument("--ablation_backbones", nargs="+", default=None,
                       help="backbones whose LAIN variant is ablated (default: all of --models)")
    study.add_argument("--out", default=defaults.out, help="folder of the report (default docs/demo)")
    study.add_argument("--work", default="", help="folder of the results files (default results/study/<dataset_id>)")
    study.add_argument("--dry-run", action="store_true", help="list the runs only")
    for sub in (grid, ablation, sweep, study):
        sub.add_argument("--gpu", type=int, default=-1, help="-1 = CPU, N = cuda:N")
        sub.add_argument("--data_root", default=None, help="root of the dataset folders (default $LAINCTR_DATA_ROOT)")
    for sub in (ablation, sweep, study):
        sub.add_argument("--workers", type=int, default=1,
                         help="runs at once, each in a process of its own with the cores shared out as torch "
                              "threads (default 1: one after the other, in this process)")
    for sub in (ablation, sweep):
        sub.add_argument("--bootstrap", type=int, default=BootstrapSettings.replicates,
                         help="replicates of the paired user bootstrap of the changes reported (0: none)")
    for sub in (grid, ablation, sweep):
        sub.add_argument("--lain_preset", default=None, choices=sorted(LAIN_PRESETS),
                         help="size preset of the LAIN models (default: each expid's own)")
    args = parser.parse_args(argv)
    try:
        if args.command == "grid":
            result = run_grid(args.config, seeds=args.seeds, gpu=args.gpu, data_root=args.data_root,
                              out_dir=args.out, dry_run=args.dry_run, lain_preset=args.lain_preset)
            return 1 if result["failed"] else 0
        if args.command == "study":
            config = StudyConfig(args.dataset_id, args.seeds, args.sweep_seeds, args.ablation_seeds, args.max_len,
                                 args.sweep_backbones, out=args.out, work=args.work, models=args.models,
                                 ablation_backbones=args.ablation_backbones)
            if args.dry_run:
                print("\n".join(study_dry_run(config)))
            else:
                run_study(config, gpu=args.gpu, data_root=args.data_root, workers=args.workers)
            return 0
        if args.command == "sweep":
            run_sweep(args.expid, args.max_len, args.seeds, args.lain_preset, args.backbone_only,
                      results_file=args.results, out=args.out, dataset_id=args.dataset_id, gpu=args.gpu,
                      data_root=args.data_root, dry_run=args.dry_run, workers=args.workers,
                      intervals=_bootstrap(args))
            return 0
        run_ablation(args.expid, args.seeds, args.variants, gpu=args.gpu, data_root=args.data_root,
                     config_dir=args.config, results_file=args.results, out=args.out, rebuild=args.rebuild,
                     resume=args.resume, lain_preset=args.lain_preset, workers=args.workers,
                     intervals=_bootstrap(args))
        return 0
    except (config_lib.ConfigError,) + USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
