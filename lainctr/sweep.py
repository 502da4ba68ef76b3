"""The max_len sweep behind the paper's Figure 1a: a backbone and its LAIN variant trained at several max_len,
everything else equal, and their test AUC / gAUC / attention Gini per length bucket against max_len.

    python -m lainctr.tuner sweep --expid DIN_LAIN_synthetic --max_len 50 100 200 500 1000 --seeds 2026 2027 2028

The runs go to a results file of their own (default ``results/sweep/<backbone expid>.csv``); runs already
there (same expid, seed, max_len, LAIN preset) are skipped, so an interrupted sweep continues where it stopped.
Writes ``sweep_<backbone expid>[_<preset>].{md,csv,png}`` under ``--out``. The paper's observation O1 reads:
the backbone's short-history AUC falls as max_len grows while its long-history AUC rises; the Markdown says
whether these runs show it (last max_len against the first, or for the short bucket against the first that
holds every short history), with the 95 % paired bootstrap interval over test users of both changes (the same
model at two max_len on the same test set, paired by seed, from the runs' kept predictions; as the leaderboard's
intervals, :mod:`lainctr.analysis.bootstrap`): "significant" when the short change's interval lies below 0 and
the long one's above.
"""
from __future__ import annotations

import math
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import pandas as pd

from . import config as config_lib
from .analysis import aggregate
from .analysis.bootstrap import BootstrapSettings
from .atomic import write_atomically, write_text_atomically
from .lain_presets import DEFAULT_PRESET
from .paths import zoo_path, zoo_relative
from .run_plan import PlannedRun, Runner, execute, rebase_on_dataset

SWEEP_MAX_LENS = (50, 100, 200, 500, 1000)
SWEEP_METRICS = ("AUC", "gAUC", "gini")
BACKBONE, LAIN = "backbone", "LAIN"


def sweep_pair(expid: str, config_dir: Optional[str] = None) -> Tuple[str, str]:
    """(backbone expid, LAIN expid) of ``expid``, which may name either: ``DIN_LAIN_synthetic`` ->
    (``DIN_synthetic``, ``DIN_LAIN_synthetic``) and back.

    Raises:
        ConfigError: ``expid`` or its partner is not defined.
    """
    model = str(config_lib.load_config(expid, config_dir)["model"])
    if model.endswith("_LAIN"):
        pair = (aggregate.base_expid_of(expid), expid)
    else:
        pair = (expid, expid.replace(f"{model}_", f"{model}_LAIN_", 1))
    for name in pair:
        config_lib.load_config(name, config_dir)
    return pair


def plan_sweep(backbone: str, lain: Optional[str], max_lens: Sequence[int], seeds: Sequence[int],
               results_file: str, lain_preset: Optional[str] = None,
               config_dir: Optional[str] = None) -> List[PlannedRun]:
    """Every run of the sweep: for each max_len and seed the backbone, then (unless ``lain`` is None) the LAIN
    variant, with ``lain_preset`` when given (else its expid's)."""
    runs = []
    for max_len in max_lens:
        for seed in seeds:
            settings = {"seed": int(seed), "max_len": int(max_len)}
            runs.append(PlannedRun(backbone, settings, results_file, config_dir=config_dir))
            if lain is not None:
                runs.append(PlannedRun(lain, {**settings, **({"lain_preset": lain_preset} if lain_preset else {})},
                                       results_file, config_dir=config_dir))
    return runs


def sweep_table(runs: pd.DataFrame, backbone: str, lain: Optional[str], lain_preset: str,
                max_lens: Sequence[int]) -> pd.DataFrame:
    """One row per (max_len, model) of the sweep's runs: ``role`` (backbone / LAIN), ``n`` seeds and the
    summary columns (``test_{metric}[@bucket]_{mean,std}``) of every metric."""
    runs = runs[runs["max_len"].isin([int(m) for m in max_lens]) & runs["variant"].isin(["", "full"])]
    runs = runs[(runs["expid"] == backbone) | ((runs["expid"] == lain) & (runs["lain_preset"] == lain_preset))]
    summary = aggregate.summarize(runs)
    summary.insert(0, "role", [LAIN if lain_flag else BACKBONE for lain_flag in summary["lain"]])
    return summary.sort_values(["max_len", "lain"], kind="stable").reset_index(drop=True)


def _buckets(table: pd.DataFrame, metric: str, split: str = "test") -> List[str]:
    found = {p[2] for c in table.columns if c.endswith("_mean") and (p := aggregate.parse_metric_column(c[:-5]))
             and p[0] == split and p[1] == metric and p[2]}
    return sorted(found, key=aggregate.bucket_order)


def observation(table: pd.DataFrame, role: str = BACKBONE, runs: Optional[pd.DataFrame] = None,
                intervals: Optional[BootstrapSettings] = None,
                search_dirs: Sequence[str] = ()) -> Optional[Dict[str, Any]]:
    """The paper's O1 in ``role``'s rows: long-history (last bucket) test AUC at the smallest and the largest
    max_len; short-history (first bucket) test AUC from the smallest max_len that holds every short history
    (below it their histories are cut, which lowers their AUC for another reason) to the largest; ``appears`` =
    the short one falls and the long one rises (in the seed means). With ``runs`` (the table's results rows) and
    ``intervals``, also :func:`change_intervals`. None with fewer than two max_len or buckets."""
    rows = table[table["role"] == role].sort_values("max_len")
    buckets = _buckets(table, "AUC")
    if rows["max_len"].nunique() < 2 or len(buckets) < 2:
        return None
    first, last = rows.iloc[0], rows.iloc[-1]
    holding = rows[rows["max_len"] >= float(buckets[0].split("-")[1])]
    short_first = holding.iloc[0] if len(holding) and holding.iloc[0]["max_len"] < last["max_len"] else first
    short, long = (f"test_AUC@{buckets[0]}_mean", f"test_AUC@{buckets[-1]}_mean")
    out = {"role": role, "short_bucket": buckets[0], "long_bucket": buckets[-1], "from_max_len": int(first["max_len"]),
           "short_from_max_len": int(short_first["max_len"]), "to_max_len": int(last["max_len"]),
           "short": (short_first[short], last[short]), "long": (first[long], last[long])}
    out["appears"] = bool(last[short] < short_first[short] and last[long] > first[long])
    if runs is not None and intervals is not None:
        out.update(change_intervals(runs, rows, out, intervals, search_dirs))
    return out


def change_intervals(runs: pd.DataFrame, rows: pd.DataFrame, seen: Dict[str, Any], settings: BootstrapSettings,
                     search_dirs: Sequence[str]) -> Dict[str, Any]:
    """The two changes of :func:`observation` ``seen`` as paired relative changes of test AUC in % (mean over
    the seeds both max_len ran): ``short_change`` and ``long_change``, each (change, interval low, high);
    ``significant`` (short's interval below 0, long's above); ``interval_note`` why intervals are missing."""
    out: Dict[str, Any] = {}
    notes = []
    for name, bucket, start in (("short", seen["short_bucket"], seen["short_from_max_len"]),
                                ("long", seen["long_bucket"], seen["from_max_len"])):
        before, after = (aggregate.group_runs(runs, rows[rows["max_len"] == m].iloc[0])
                         for m in (start, seen["to_max_len"]))
        seeds = sorted(set(before["seed"].dropna()) & set(after["seed"].dropna()))
        changes = aggregate.paired_relative_changes(after, before, seeds, f"test_AUC@{bucket}")
        bounds, note = aggregate.paired_run_intervals(after, before, seeds, "test", [bucket], settings, search_dirs)
        low, high = bounds.get(("AUC", bucket), (math.nan, math.nan))
        out[f"{name}_change"] = (float(changes.mean()) if len(changes) else math.nan, low, high)
        notes += [note] if note else []
    out["significant"] = bool(out["short_change"][2] < 0 and out["long_change"][1] > 0)
    out["interval_note"] = "; ".join(dict.fromkeys(notes))
    return out


def _change(change: Tuple[float, float, float]) -> str:
    from .leaderboard import format_gain, format_interval
    gain, low, high = change
    interval = "" if math.isnan(low) else " " + format_interval(low, high, low > 0 or high < 0)
    return f"{format_gain(gain)}{interval}"


def _verdict(seen: Dict[str, Any]) -> str:
    if not seen["appears"]:
        return "does not appear"
    if "significant" not in seen:
        return "appears in the seed means (no intervals computed)"
    if seen["interval_note"]:
        return f"appears in the seed means (no intervals: {seen['interval_note']})"
    if seen["significant"]:
        return "appears, both changes significant"
    unclear = [name for name, includes_zero in (("short fall", seen["short_change"][2] >= 0),
                                                ("long rise", seen["long_change"][1] <= 0)) if includes_zero]
    return f"appears in the seed means, but not significantly (the interval of the {' and the '.join(unclear)} " \
           "includes 0)"


def _cell(row: pd.Series, column: str) -> str:
    from .leaderboard import format_mean_std
    return format_mean_std(row.get(f"{column}_mean", math.nan), row.get(f"{column}_std", math.nan))


def sweep_markdown(title: str, table: pd.DataFrame, results_file: str, plot: Optional[str],
                   runs: Optional[pd.DataFrame] = None, intervals: Optional[BootstrapSettings] = None) -> str:
    """The sweep's tables, the observation of each role (with ``runs`` and ``intervals``: its paired
    intervals, predictions looked up beside ``results_file``), the plot and where the runs are."""
    from .leaderboard import markdown_table
    lines = [f"# max_len sweep: {title}", "",
             "Test split, mean ± std over seeds; buckets by the untruncated history length; Gini of the long "
             "branch's attention (prompts excluded).", ""]
    for metric, label in (("AUC", "test AUC"), ("gAUC", "test gAUC"), ("gini", "attention Gini")):
        buckets = _buckets(table, metric)
        if not buckets:
            continue
        overall = [f"test_{metric}"] if f"test_{metric}_mean" in table else []
        rows = [[row["max_len"], row["role"], row["n"], *[_cell(row, c) for c in overall],
                 *[_cell(row, f"test_{metric}@{b}") for b in buckets]] for _, row in table.iterrows()]
        lines += [f"## {label} per length bucket", "",
                  markdown_table(["max_len", "model", "n", *(["all"] if overall else []), *buckets], rows), ""]
    search_dirs = [os.path.dirname(os.path.abspath(results_file))]
    for role in (BACKBONE, LAIN):
        seen = observation(table, role, runs, intervals, search_dirs)
        if seen is None:
            continue
        short_change, long_change = ((f" ({_change(seen[k])})" if k in seen else "") for k in ("short_change",
                                                                                              "long_change"))
        lines.append(f"{role}: short-history ({seen['short_bucket']}) test AUC {seen['short'][0]:.4f} at max_len "
                     f"{seen['short_from_max_len']} -> {seen['short'][1]:.4f} at {seen['to_max_len']}{short_change}; "
                     f"long-history ({seen['long_bucket']}) {seen['long'][0]:.4f} at {seen['from_max_len']} -> "
                     f"{seen['long'][1]:.4f}{long_change}. The paper's observation (short falls, long rises) "
                     f"{_verdict(seen)}.")
        lines.append("")
    if intervals is not None:
        lines += ["Changes: paired relative change of test AUC in % (mean over seeds), with its 95 % paired bootstrap "
                  f"interval over test users ({intervals.replicates} replicates; `*`: the interval excludes 0).", ""]
    if plot:
        lines += [f"![{title}]({plot})", ""]
    lines.append(f"Runs: `{zoo_relative(results_file)}`")
    return "\n".join(lines) + "\n"


def run_sweep(expid: str, max_lens: Sequence[int] = SWEEP_MAX_LENS, seeds: Sequence[int] = (2026,),
              lain_preset: Optional[str] = None, backbone_only: bool = False, runner: Optional[Runner] = None,
              results_file: Optional[str] = None, out: str = "reports", dataset_id: Optional[str] = None,
              gpu: int = -1, data_root: Optional[str] = None, dry_run: bool = False,
              config_dir: Optional[str] = None, workers: int = 1,
              intervals: Optional[BootstrapSettings] = BootstrapSettings()) -> Optional[pd.DataFrame]:
    """Run (skipping what ``results_file`` holds) and tabulate the sweep of ``expid`` (backbone or LAIN expid,
    defined in the zoo or ``config_dir``); ``dataset_id`` runs both zoo expids on another dataset;
    ``backbone_only`` trains the backbone alone; ``workers``: runs at once (see :func:`lainctr.run_plan.execute`);
    ``intervals``: the observation's bootstrap (None: none). Returns the table (None for ``dry_run``, which
    prints the runs)."""
    if dataset_id and config_dir:
        raise config_lib.ConfigError("sweep: give dataset_id (zoo expids on another dataset) or config_dir, not both")
    backbone, lain = sweep_pair(expid, config_dir)
    results_file = zoo_path(results_file or os.path.join("results", "sweep", f"{backbone}.csv"))
    if dataset_id:
        config_dir = os.path.join(os.path.dirname(results_file), "configs")
        names = rebase_on_dataset([backbone, lain], dataset_id, config_dir)
        backbone, lain = names[backbone], names[lain]
    preset = lain_preset or str(config_lib.load_config(lain, config_dir).get("lain_preset", DEFAULT_PRESET))
    runs = plan_sweep(backbone, None if backbone_only else lain, max_lens, seeds, results_file,
                      lain_preset, config_dir)
    print(f"max_len sweep of {backbone}" + ("" if backbone_only else f" and {lain} ({preset})") +
          f": {len(runs)} runs")
    if dry_run:
        for run in runs:
            print(f"  {run.describe()}")
        return None
    execute(runs, runner, gpu, data_root, workers)
    results = aggregate.load_results([results_file])
    table = sweep_table(results, backbone, None if backbone_only else lain, preset, max_lens)
    out = zoo_path(out)
    stem = os.path.join(out, f"sweep_{backbone}" + ("" if backbone_only or preset == DEFAULT_PRESET else f"_{preset}"))
    from .analysis import plots
    plot = plots.plot_length_sweep(table, stem + ".png", f"{backbone} vs max_len")
    write_atomically(stem + ".csv", lambda tmp: table.to_csv(tmp, index=False))
    markdown = sweep_markdown(backbone + ("" if backbone_only else f" and {lain} ({preset})"), table, results_file,
                              os.path.basename(plot) if plot else None, results, intervals)
    write_text_atomically(stem + ".md", markdown)
    print(markdown)
    print(f"wrote {stem}.md, {stem}.csv" + (f", {plot}" if plot else "") + f"; runs in {results_file}")
    return table
