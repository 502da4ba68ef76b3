"""The benchmark scripts run end to end and print complete tables (their numbers are not checked here:
speed is measured with the scripts, not in tests)."""
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(*args: str) -> str:
    done = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_benchmark_prints_every_table(tmp_path):
    out = tmp_path / "bench.md"
    text = run_script("benchmarks/benchmark.py", "--models", "DIN", "DIN_LAIN", "--max_len", "30", "--repeats", "1",
                      "--overhead_rounds", "2", "--threads", "1", "--processes", "2", "--no_upstream", "--out", str(out))
    number = r"[\d,]+(\.\d+)?"
    assert re.search(rf"\| 30 \| {number} \|", text)                                   # loader row
    for model in ("DIN", "DIN_LAIN"):
        assert re.search(rf"\| {model} \| 30 \| {number} \|\s*\|\s*\| {number} \|", text), model   # train, infer
    assert re.search(rf"\| DIN_LAIN \| 30 \| {number} \| {number} \| \+{number} % \|", text)   # LAIN overhead
    assert out.read_text().strip() == text.strip() and (tmp_path / "bench.json").exists()


def test_cells_take_the_median_of_their_processes():
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    from benchmark import median_of_processes
    cells = [{"train": 10.0, "infer": 5.0}, {"error": "timeout 600s"}, {"train": 30.0, "infer": 1.0},
             {"train": 20.0, "infer": 3.0}]
    assert median_of_processes(cells) == {"train": 20.0, "infer": 3.0}
    assert median_of_processes([{"error": "exit 1"}, {"error": "exit 2"}]) == {"error": "exit 1"}
    assert median_of_processes([{}, {}]) == {}                       # upstream absent: blank columns


def test_lain_params_covers_every_real_expid():
    text = run_script("benchmarks/lain_params.py")
    rows = [line for line in text.splitlines() if re.match(r"\| (kuaivideo|microvideo|ebnerd) \|", line)]
    assert len(rows) == 15 * 2                                           # lean and paper
    assert all(re.search(r"\| (lean|paper) \| [\d,]+ \| \+[\d,]+ \| \d+\.\d\d % \| .*prompts [\d,]+", row) for row in rows)


def test_sparse_scaling_prints_its_table():
    text = run_script("benchmarks/sparse_scaling.py", "--lengths", "40", "--batch_size", "2", "--repeats", "1",
                      "--threads", "1")
    number = r"[\d,]+\.\d"
    assert re.search(rf"\| 40 \| {number} \| {number} \| \d+\.\d\d \| {number} \| {number} \| \d+\.\d\d \| "
                     rf"{number} \| {number} \|$", text, re.MULTILINE), text
