"""The demo study of issue 16 in one command: does LAIN do what the paper says on the demo data?

    python -m lainctr.tuner study --out docs/demo [--dataset_id synthetic] [--dry-run]

1. **grid**: every zoo model that has a ``_LAIN`` variant, as backbone, LAIN ``lean`` and LAIN ``paper``, at
   every seed of ``--seeds`` (default 5), into ``<work>/results.csv``;
2. **preset**: the better preset, chosen on the *validation* split: the higher mean paired relative AUC gain
   over all backbones (test numbers are never used to choose). The choice is made once and recorded in
   ``<work>/preset.json`` (with the gains and backbones it was made on); a later run of the study (continued,
   or with more models) reads it back instead of choosing again, so the sweeps and ablations already made keep
   their preset;
3. **sweeps**: the max_len sweep (:mod:`lainctr.sweep`) of each of ``--sweep_backbones`` (DIN, TWIN) and its
   LAIN variant with the better preset, at ``--sweep_seeds`` (3);
4. **ablations**: the ablation (spec s.6) of every ``_LAIN`` model of ``--ablation_backbones`` (default: all
   of the study's) with the better preset, at ``--ablation_seeds`` (3);
5. **leaderboard**: ``<out>/results_demo.csv`` (a copy of the grid's results) and the leaderboard report with
   the paired bootstrap intervals, into ``--out``.

Every stage skips the runs its results file already holds, so the command continues an interrupted study.
The expids are the zoo's ``<Model>_synthetic`` ones; ``--dataset_id`` runs them on another dataset (e.g.
``synthetic_lengthshift``). ``--dry-run`` lists every run and changes nothing but the generated expid configs.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .analysis import aggregate
from .atomic import write_atomically, write_text_atomically
from .config import ConfigError
from .lain_presets import LAIN_PRESETS
from .paths import zoo_path
from .run_plan import PlannedRun, Runner, execute, rebase_on_dataset
from .sweep import SWEEP_MAX_LENS, run_sweep

BASE_DATASET = "synthetic"    # the zoo's demo expids are <Model>_synthetic
CHOSEN = "<better preset>"    # stands for the preset step 2 picks, in a dry run's listing
PRESET_RECORD = "preset.json"  # stage 2's recorded choice, in the study's work folder


@dataclass(frozen=True)
class StudyConfig:
    """What the study runs; ``work`` holds its results files (default ``results/study/<dataset_id>``)."""
    dataset_id: str = BASE_DATASET
    seeds: Sequence[int] = (2026, 2027, 2028, 2029, 2030)
    sweep_seeds: Sequence[int] = (2026, 2027, 2028)
    ablation_seeds: Sequence[int] = (2026, 2027, 2028)
    sweep_max_lens: Sequence[int] = SWEEP_MAX_LENS
    sweep_backbones: Sequence[str] = ("DIN", "TWIN")
    presets: Sequence[str] = tuple(LAIN_PRESETS)
    out: str = os.path.join("docs", "demo")
    work: str = ""
    models: Optional[Sequence[str]] = field(default=None)   # backbones (default: every one with a _LAIN variant)
    ablation_backbones: Optional[Sequence[str]] = None      # whose LAIN variant is ablated (default: all models)

    @property
    def work_dir(self) -> str:
        return zoo_path(self.work or os.path.join("results", "study", self.dataset_id))

    @property
    def preset_file(self) -> str:
        """Where stage 2 records its choice: ``<work>/preset.json``."""
        return os.path.join(self.work_dir, PRESET_RECORD)

    @property
    def config_dir(self) -> Optional[str]:
        """Where the expids on another dataset are defined (None on the demo's own)."""
        return os.path.join(self.work_dir, "configs") if self.dataset_id != BASE_DATASET else None


def lain_backbones() -> List[str]:
    """Every zoo model with a ``_LAIN`` variant."""
    from .registry import available_models
    models = set(available_models())
    return sorted(m for m in models if f"{m}_LAIN" in models)


def study_expids(config: StudyConfig) -> Dict[str, Tuple[str, str]]:
    """``{backbone: (backbone expid, LAIN expid)}`` on the study's dataset."""
    backbones = list(config.models or lain_backbones())
    for stage, chosen in (("sweep", config.sweep_backbones), ("ablation", config.ablation_backbones or ())):
        missing = sorted(set(chosen) - set(backbones))
        if missing:
            raise ConfigError(f"study: {stage} backbone(s) {missing} are not among the study's models {backbones}")
    pairs = {m: (f"{m}_{BASE_DATASET}", f"{m}_LAIN_{BASE_DATASET}") for m in backbones}
    if config.config_dir is None:
        return pairs
    names = rebase_on_dataset([e for pair in pairs.values() for e in pair], config.dataset_id, config.config_dir)
    return {m: (names[b], names[lain]) for m, (b, lain) in pairs.items()}


def plan_grid(config: StudyConfig, expids: Dict[str, Tuple[str, str]]) -> List[PlannedRun]:
    """Stage 1: every backbone and its LAIN variant with each preset, at every seed."""
    results = os.path.join(config.work_dir, "results.csv")
    runs = []
    for backbone, lain in expids.values():
        for seed in config.seeds:
            runs.append(PlannedRun(backbone, {"seed": int(seed)}, results, config_dir=config.config_dir))
            runs += [PlannedRun(lain, {"seed": int(seed), "lain_preset": preset}, results, config_dir=config.config_dir)
                     for preset in config.presets]
    return runs


def better_preset(results_file: str, presets: Sequence[str]) -> Tuple[str, Dict[str, float]]:
    """(preset, {preset: mean paired relative gain in validation AUC over the backbones, in %}): the preset
    whose LAIN runs gain most over their backbones on the validation split (the first of ``presets`` on a tie).

    Raises:
        FileNotFoundError: no LAIN-backbone pair of any of ``presets`` in ``results_file``.
    """
    gains = aggregate.gains(aggregate.load_results([results_file]), split="valid", metrics=("AUC",))
    overall = gains[gains["bucket"] == ""]
    means = {p: float(overall[overall["lain_preset"] == p]["gain_pct"].mean()) for p in presets
             if (overall["lain_preset"] == p).any()}
    if not means:
        raise FileNotFoundError(f"{results_file}: no LAIN run of preset {list(presets)} paired with its backbone")
    return max(means, key=lambda p: (means[p], -list(presets).index(p))), means


def ablated_models(config: StudyConfig, expids: Dict[str, Tuple[str, str]]) -> List[str]:
    """The LAIN expids stage 4 ablates: those of ``config.ablation_backbones``, else of every study model."""
    return [expids[m][1] for m in (config.ablation_backbones or expids)]


def recorded_preset(config: StudyConfig) -> Optional[Dict[str, Any]]:
    """The choice of stage 2 recorded in ``<work>/preset.json`` ({"preset", "valid_auc_gain_pct", "backbones"}),
    or None before it was made.

    Raises:
        ConfigError: the record is unreadable or names a preset the study does not compare.
    """
    path = config.preset_file
    if not os.path.exists(path):
        return None
    try:
        with open(path) as handle:
            record = json.load(handle)
        preset = record["preset"]
    except (ValueError, KeyError, TypeError) as error:
        raise ConfigError(f"{path}: not a preset record ({error!r}); delete it to choose the preset again") from None
    if preset not in config.presets:
        raise ConfigError(f"{path}: preset {preset!r} is not among the study's presets {list(config.presets)}; "
                          "delete it to choose again")
    return record


def choose_preset(config: StudyConfig, grid_results: str) -> Tuple[str, Dict[str, Any]]:
    """Stage 2: (preset, its record); the recorded choice if there is one, else :func:`better_preset` over
    ``grid_results``, recorded (atomically) before it is returned."""
    record = recorded_preset(config)
    if record is None:
        preset, gains = better_preset(grid_results, config.presets)
        record = {"preset": preset, "valid_auc_gain_pct": gains, "backbones": list(study_expids(config))}
        write_text_atomically(config.preset_file, json.dumps(record, indent=2) + "\n")
    return str(record["preset"]), record


def plan_ablations(config: StudyConfig, expids: Dict[str, Tuple[str, str]], preset: str) -> List[PlannedRun]:
    """Stage 4: every variant of every ablated LAIN model at every ablation seed, with ``preset``."""
    from .tuner import plan_ablation
    return [run for lain in ablated_models(config, expids)
            for run in plan_ablation(lain, config.ablation_seeds, config_dir=config.config_dir, lain_preset=preset,
                                     results_file=os.path.join(config.work_dir, f"ablation_{lain}.csv")).runs]


def plan_sweeps(config: StudyConfig, expids: Dict[str, Tuple[str, str]], preset: str) -> List[PlannedRun]:
    """Stage 3 as a listing (:func:`lainctr.sweep.run_sweep` runs it)."""
    from .sweep import plan_sweep
    return [run for model in config.sweep_backbones
            for run in plan_sweep(*expids[model], config.sweep_max_lens, config.sweep_seeds,
                                  os.path.join(config.work_dir, f"sweep_{model}.csv"), preset, config.config_dir)]


def dry_run(config: StudyConfig) -> List[str]:
    """The listing of every run of the study, stage by stage (printed by ``--dry-run``)."""
    expids = study_expids(config)
    record = recorded_preset(config)
    chosen = CHOSEN if record is None else str(record["preset"])
    grid, sweeps, ablations = (plan_grid(config, expids), plan_sweeps(config, expids, chosen),
                               plan_ablations(config, expids, chosen))
    choice = (f"2. {CHOSEN}: of {list(config.presets)}, the higher mean validation AUC gain over the backbones"
              if record is None else f"2. preset {chosen}, recorded in {config.preset_file}"
              f" (mean validation AUC gain, %: {record.get('valid_auc_gain_pct')}, over {record.get('backbones')})")
    lines = [f"study on {config.dataset_id}: {len(grid) + len(sweeps) + len(ablations)} runs "
             f"({len(grid)} grid, {len(sweeps)} sweeps, {len(ablations)} ablations)",
             f"1. grid ({len(grid)} runs)", *[f"  {r.describe()}" for r in grid],
             choice,
             f"3. sweeps ({len(sweeps)} runs)", *[f"  {r.describe()}" for r in sweeps],
             f"4. ablations ({len(ablations)} runs)", *[f"  {r.describe()}" for r in ablations],
             f"5. leaderboard report with paired bootstrap intervals -> {zoo_path(config.out)}"]
    return lines


def run_study(config: StudyConfig, runner: Optional[Runner] = None, gpu: int = -1,
              data_root: Optional[str] = None, workers: int = 1) -> Dict[str, Any]:
    """Run the five stages; returns {"preset", "preset_gains", "written"}. ``workers``: runs at once (see
    :func:`lainctr.run_plan.execute`): the grid's, then the sweeps' and ablations' together; the tables are
    written once all of them are in."""
    from .leaderboard import write_leaderboard
    from .tuner import run_ablation
    out = zoo_path(config.out)
    expids = study_expids(config)
    print(f"1. grid on {config.dataset_id}", flush=True)
    grid = plan_grid(config, expids)
    execute(grid, runner, gpu, data_root, workers)
    preset, record = choose_preset(config, grid[0].results_file)
    preset_gains = record.get("valid_auc_gain_pct")
    print(f"2. better preset: {preset} (mean validation AUC gain, %: {preset_gains}, over {record.get('backbones')}; "
          f"recorded in {config.preset_file})", flush=True)
    print(f"3./4. sweeps of {list(config.sweep_backbones)} and ablations ({preset})", flush=True)
    execute(plan_sweeps(config, expids, preset) + plan_ablations(config, expids, preset), runner, gpu, data_root,
            workers)
    for model in config.sweep_backbones:
        run_sweep(expids[model][1], config.sweep_max_lens, config.sweep_seeds, preset, runner=runner,
                  results_file=os.path.join(config.work_dir, f"sweep_{model}.csv"), out=out, gpu=gpu,
                  data_root=data_root, config_dir=config.config_dir)
    for lain in ablated_models(config, expids):
        run_ablation(lain, config.ablation_seeds, runner=runner, gpu=gpu, data_root=data_root,
                     config_dir=config.config_dir, results_file=os.path.join(config.work_dir, f"ablation_{lain}.csv"),
                     out=out, resume=True, lain_preset=preset)
    results = os.path.join(out, "results_demo.csv")
    write_atomically(results, lambda tmp: shutil.copyfile(grid[0].results_file, tmp))
    _, written = write_leaderboard([results], out, report=True)
    return {"preset": preset, "preset_gains": preset_gains, "written": [results, *written]}
