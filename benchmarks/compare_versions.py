"""Train and inference samples/s of this checkout against another one, side by side in one run.

    .venv/bin/python benchmarks/compare_versions.py --baseline ../before --models DIN TWIN --max_len 200 1000

``--baseline`` is a second checkout of the zoo (e.g. ``git worktree add ../before <commit>``). For every model
and max_len both checkouts time the same batches with ``benchmark.py``'s worker cell (one process per cell,
this checkout and the baseline alternating, ``--processes`` each); the table shows the medians and the ratio
this / baseline with its spread (the smallest and largest ratio of the paired processes), so a refactor can
show it is no slower. Cells run on the data this checkout's ``benchmark.py`` builds.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from lainctr.runtime import configure_cpu_runtime  # noqa: E402

configure_cpu_runtime()

from benchmark import build_data  # noqa: E402


def cell(checkout: str, model: str, max_len: int, data: str, args) -> dict:
    """One worker cell of ``<checkout>/benchmarks/benchmark.py`` (its own code on PYTHONPATH)."""
    cmd = [sys.executable, os.path.join(checkout, "benchmarks", "benchmark.py"), "--worker", "ours", "--model", model,
           "--max_len", str(max_len), "--data", data, "--parquet", data, "--batch_size", str(args.batch_size),
           "--repeats", str(args.repeats), "--threads", str(args.threads)]
    env = dict(os.environ, PYTHONPATH=checkout, LAINCTR_ZOO_ROOT=checkout)
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{checkout} {model}@{max_len}: {done.stderr.strip().splitlines()[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", required=True, help="the other checkout")
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--max_len", type=int, nargs="+", default=[200, 1000])
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--timeout", type=int, default=600)
    args = parser.parse_args(argv)
    this, baseline = os.path.dirname(HERE), os.path.abspath(args.baseline)
    print(f"this checkout {this} vs baseline {baseline}; batch {args.batch_size}, {args.threads} threads, median of "
          f"{args.repeats} batches per process, {args.processes} alternating processes each; samples/s\n")
    print("| model | max_len | train this | train baseline | ratio (spread) | infer this | infer baseline | ratio (spread) |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for max_len in args.max_len:
            data = build_data(os.path.join(tmp, f"L{max_len}"), max_len)
            for model in args.models:
                pairs = [(cell(this, model, max_len, data, args), cell(baseline, model, max_len, data, args))
                         for _ in range(args.processes)]
                row = [model, str(max_len)]
                for phase in ("train", "infer"):
                    ours = statistics.median(p[0][phase] for p in pairs)
                    theirs = statistics.median(p[1][phase] for p in pairs)
                    ratios = [p[0][phase] / p[1][phase] for p in pairs]
                    row += [f"{ours:,.0f}", f"{theirs:,.0f}",
                            f"{ours / theirs:.3f} ({min(ratios):.2f}-{max(ratios):.2f})"]
                print("| " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()
