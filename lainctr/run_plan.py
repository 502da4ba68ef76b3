"""Planned runs of the multi-run commands (sweep, study): what to run, what a results file already holds, and
expids moved onto another dataset.

A :class:`PlannedRun` is one ``run_experiment`` call. Its identity in a results file is
(expid, seed, max_len, LAIN preset, tag), so a command that is run again skips what is already there.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Set, Tuple

import yaml

from . import config as config_lib
from .atomic import write_atomically
from .lain_presets import DEFAULT_PRESET

Runner = Callable[..., Dict[str, Any]]
RunKey = Tuple[str, int, int, str, str]


def run_experiment(*args, **kwargs) -> Dict[str, Any]:
    """``lainctr.experiment.run_experiment``, importable without loading torch (and picklable by reference, for
    the worker processes of :func:`execute`)."""
    from . import experiment  # imported here: it loads torch and fuxictr
    return experiment.run_experiment(*args, **kwargs)


def default_runner() -> Runner:
    return run_experiment


def preset_of(model: str, params: Mapping[str, Any]) -> str:
    """The LAIN size preset of a run: its ``lain_preset`` (the default for a LAIN model without one), '' for
    a model without LAIN."""
    return str(params.get("lain_preset", DEFAULT_PRESET)) if str(model).endswith("_LAIN") else ""


@dataclass(frozen=True)
class PlannedRun:
    """One run: ``expid`` with ``overrides`` (seed, max_len, lain_preset, ablation switches ...) into
    ``results_file``; ``tag`` as in ``run_experiment``; ``config_dir`` where the expid is defined."""
    expid: str
    overrides: Mapping[str, Any] = field(default_factory=dict)
    results_file: str = ""
    tag: Optional[str] = None
    config_dir: Optional[str] = None

    def params(self) -> Dict[str, Any]:
        """The merged parameters the run will have."""
        return {**config_lib.load_config(self.expid, self.config_dir), **self.overrides}

    def key(self) -> RunKey:
        params = self.params()
        return (self.expid, int(params["seed"]), int(params["max_len"]), preset_of(params["model"], params),
                self.tag or "")

    def describe(self) -> str:
        settings = " ".join(f"{k}={v}" for k, v in self.overrides.items())
        return f"{self.expid} {settings}" + (f" tag={self.tag}" if self.tag else "") + f" -> {self.results_file}"


def row_key(row: Mapping[str, Any]) -> RunKey:
    """The identity of a results row (see :class:`PlannedRun.key`)."""
    params = json.loads(row.get("params") or "{}")
    return (str(row["expid"]), int(float(row["seed"])), int(float(row["max_len"])),
            preset_of(str(row.get("model", "")), params), str(row.get("tag", "") or ""))


def done_keys(results_file: str) -> Set[RunKey]:
    """The identities of the runs ``results_file`` holds (none when it does not exist)."""
    from .results import read_results
    return {row_key(row) for row in read_results(results_file)}


def pending_runs(runs: Sequence[PlannedRun], skip_done: bool = True) -> List[PlannedRun]:
    """The runs to make, in plan order: those whose identity is not in their results file yet (nor earlier in
    ``runs``); every one of them without ``skip_done``. Prints a line per skipped run."""
    done: Dict[str, Set[RunKey]] = {}
    pending = []
    for run in runs:
        if run.results_file not in done:
            done[run.results_file] = done_keys(run.results_file) if skip_done else set()
        key = run.key()
        if key in done[run.results_file]:
            print(f"  skip {run.describe()}: already there", flush=True)
            continue
        pending.append(run)
        done[run.results_file].add(key)
    return pending


def threads_per_worker(workers: int) -> int:
    """The torch threads of each of ``workers`` concurrent runs: this process's cores shared out (at least 1)."""
    return max(1, len(os.sched_getaffinity(0)) // workers)


def execute(runs: Sequence[PlannedRun], runner: Optional[Runner] = None, gpu: int = -1,
            data_root: Optional[str] = None, workers: int = 1,
            skip_done: bool = True) -> List[Tuple[PlannedRun, Dict[str, Any]]]:
    """Make the :func:`pending_runs` of ``runs``; returns (run, its results row) in plan order.

    ``workers`` > 1 makes that many runs at once, each in a process of its own (spawned: no torch state is
    inherited; on Python >= 3.11 a new process for every run, which imports the code as it is when the run
    starts, as a separate ``run_expid.py`` would) with :func:`threads_per_worker` torch threads; a line per
    finished run says how many are done. On a CPU, N one-thread runs finish sooner than
    N runs one after the other with N threads each (float reductions round by thread count, and every row
    records it). ``runner`` must then be picklable (a module-level function). The results file takes
    concurrent appends (it is locked). The first failed run stops the plan: the runs not yet started are
    cancelled, those running finish (their rows are kept), then its error is raised.
    """
    pending = pending_runs(runs, skip_done)
    runner = runner or default_runner()
    if workers <= 1 or len(pending) <= 1:
        made = []
        for index, run in enumerate(pending):
            print(f"  run {run.describe()} ({index + 1}/{len(pending)})", flush=True)
            made.append((run, runner(run.expid, **_run_arguments(run, gpu, data_root))))
        return made
    return _execute_in_workers(pending, runner, gpu, data_root, workers)


def _run_arguments(run: PlannedRun, gpu: int, data_root: Optional[str]) -> Dict[str, Any]:
    return dict(tag=run.tag, config_dir=run.config_dir, gpu=gpu, data_root=data_root,
                overrides=dict(run.overrides), results_file=run.results_file)


def _start_worker(threads: int) -> None:
    """Initialiser of a worker process: its thread count and the CPU runtime settings, before torch loads."""
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
    from .runtime import configure_cpu_runtime
    configure_cpu_runtime()
    import torch
    torch.set_num_threads(threads)


def _execute_in_workers(pending: Sequence[PlannedRun], runner: Runner, gpu: int, data_root: Optional[str],
                        workers: int) -> List[Tuple[PlannedRun, Dict[str, Any]]]:
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    threads = threads_per_worker(workers)
    print(f"  {len(pending)} runs, {workers} at a time, {threads} torch thread(s) each", flush=True)
    rows: List[Optional[Dict[str, Any]]] = [None] * len(pending)
    fresh_process_per_run: Dict[str, Any] = {"max_tasks_per_child": 1} if sys.version_info >= (3, 11) else {}
    started, done = time.monotonic(), 0
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker,
                             initargs=(threads,), **fresh_process_per_run) as pool:
        futures = {}
        for index, run in enumerate(pending):
            futures[pool.submit(runner, run.expid, **_run_arguments(run, gpu, data_root))] = index
        remaining = set(futures)
        while remaining:
            finished, remaining = wait(remaining, return_when=FIRST_COMPLETED)
            failed = [f for f in finished if f.exception() is not None]
            for future in finished:
                if future.exception() is None:
                    rows[futures[future]] = future.result()
                    done += 1
                    minutes = (time.monotonic() - started) / 60
                    print(f"  done {done}/{len(pending)}: {pending[futures[future]].describe()} "
                          f"({minutes:.1f} min since the first started)", flush=True)
            if failed:
                for future in remaining:
                    future.cancel()
                wait(remaining)
                error = failed[0].exception()
                assert error is not None   # failed holds only futures that raised
                print(f"  FAILED {pending[futures[failed[0]]].describe()}: {type(error).__name__}: {error}",
                      file=sys.stderr, flush=True)
                raise error
    return [(run, row) for run, row in zip(pending, rows) if row is not None]


def rebased_name(expid: str, old_dataset: str, new_dataset: str) -> str:
    """``DIN_synthetic`` on ``synthetic_lengthshift`` -> ``DIN_synthetic_lengthshift``: the expid with its
    dataset suffix replaced (``<expid>_<new dataset>`` when it has none)."""
    stem = expid[:-len(old_dataset) - 1] if expid.endswith("_" + old_dataset) else expid
    return f"{stem}_{new_dataset}"


def rebase_on_dataset(expids: Sequence[str], dataset_id: str, directory: str) -> Dict[str, str]:
    """The zoo's ``expids`` on ``dataset_id``; returns ``{expid: expid on the dataset}``.

    An expid whose name on the dataset (:func:`rebased_name`) the zoo defines for that dataset is that one;
    the others become ``base_expid`` blocks added to ``directory/rebased.yaml`` (a ``--config`` directory; the
    length buckets come with the new dataset).

    Raises:
        ConfigError: an unknown expid or dataset, or a zoo expid of the new name on another dataset.
    """
    config_lib.load_dataset_config(dataset_id)
    zoo_expids = set(config_lib.list_expids())
    path = os.path.join(directory, "rebased.yaml")
    blocks: Dict[str, Dict[str, str]] = {}
    if os.path.exists(path):
        with open(path) as fd:
            blocks = yaml.safe_load(fd) or {}
    names = {}
    for expid in expids:
        names[expid] = name = rebased_name(expid, str(config_lib.load_config(expid)["dataset_id"]), dataset_id)
        if name in zoo_expids:
            if config_lib.load_config(name)["dataset_id"] != dataset_id:
                raise config_lib.ConfigError(f"cannot run {expid} on {dataset_id}: the zoo's expid {name} is on "
                                             f"dataset {config_lib.load_config(name)['dataset_id']}")
            blocks.pop(name, None)
        else:
            blocks[name] = {"base_expid": expid, "dataset_id": dataset_id}

    def write(tmp: str) -> None:
        with open(tmp, "w") as fd:
            fd.write("# Generated by lainctr.run_plan: zoo expids on another dataset. Do not edit.\n")
            yaml.safe_dump(blocks, fd, sort_keys=False)
    write_atomically(path, write)
    return names
