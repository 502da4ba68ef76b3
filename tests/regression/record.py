"""Record the regression fixture: every zoo model's ``<Model>_synthetic_tiny`` at seed 2026.

    .venv/bin/python tests/regression/record.py [--models DIN SIM ...]

Writes ``tests/regression/synthetic_tiny_seed2026.json`` (rows of the named models replaced, the others
kept): the parameter counts and the valid/test AUC, gAUC and logloss as exact floats, at the torch thread count
``THREADS``, under this machine's :func:`lainctr.cpu_kernels.kernel_fingerprint` (the rows of other fingerprints
are kept), and per model the NumPy minor release it was recorded with (rows recorded at different times may
differ in it).
``test_regression.py`` re-runs the same expids and compares.
"""
import argparse
import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

from lainctr.runtime import configure_cpu_runtime  # noqa: E402

configure_cpu_runtime()

import torch  # noqa: E402

from lainctr.cpu_kernels import kernel_fingerprint  # noqa: E402

FIXTURE = os.path.join(HERE, "synthetic_tiny_seed2026.json")
MODELS = ("DIN", "DIN_LAIN", "DIEN", "DIEN_LAIN", "SIM", "SIM_LAIN", "SDIM", "SDIM_LAIN", "TWIN", "TWIN_LAIN",
          "SparseCTR", "SparseCTR_LAIN", "DiffuMIN", "DiffuMIN_LAIN")
RECORDED = ("num_params", "num_params_lain", "valid_AUC", "valid_gAUC", "valid_logloss",
            "test_AUC", "test_gAUC", "test_logloss")
THREADS = 2


def numpy_major_minor() -> str:
    """NumPy's version to the minor release: its float64 ``log`` (SIMD) rounds the last bit differently in 1.26
    and 2.x, which moves logloss (not AUC, gAUC or the model) by about 1e-16."""
    import numpy
    return ".".join(numpy.__version__.split(".")[:2])


def run_tiny(model: str, data_root: str, work_dir: str) -> dict:
    """The recorded columns of one run of ``<model>_synthetic_tiny`` (seed 2026, checkpoints in work_dir)."""
    from lainctr.experiment import run_experiment
    row = run_experiment(f"{model}_synthetic_tiny", data_root=data_root,
                         results_file=os.path.join(work_dir, "results.csv"),
                         overrides={"seed": 2026, "model_root": work_dir, "verbose": 0})
    return {key: row[key] for key in RECORDED}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    fixture: dict = {"torch_threads": THREADS, "by_kernels": {}}
    if os.path.exists(FIXTURE):
        with open(FIXTURE) as fd:
            fixture = json.load(fd)
    if fixture["torch_threads"] != THREADS:
        raise SystemExit(f"{FIXTURE} was recorded at {fixture['torch_threads']} threads, THREADS is {THREADS}: "
                         "re-record every capability's rows or keep THREADS")
    kernels = kernel_fingerprint()
    rows = fixture["by_kernels"].setdefault(kernels, {})
    with tempfile.TemporaryDirectory() as work_dir:
        for model in args.models:
            rows[model] = dict(run_tiny(model, os.path.join(work_dir, "data"), work_dir),
                               numpy_major_minor=numpy_major_minor())
            print(kernels, model, rows[model], flush=True)
    fixture["by_kernels"][kernels] = {m: rows[m] for m in MODELS if m in rows}
    with open(FIXTURE + ".tmp", "w") as fd:
        json.dump(fixture, fd, indent=1)
    os.replace(FIXTURE + ".tmp", FIXTURE)


if __name__ == "__main__":
    main()
