"""The benchmark scripts run end to end and print complete tables (their numbers are not checked here:
speed is measured with the scripts, not in tests)."""
import os
import re
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(*args: str) -> str:
    done = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-10000:]
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


def test_ddp_benchmark_prints_a_row_per_world_size():
    text = run_script("benchmarks/ddp_benchmark.py", "--models", "DIN", "--max_len", "30", "--steps", "2",
                      "--warmup", "1", "--rounds", "1")
    for processes, threads in ((1, 2), (2, 1)):
        assert re.search(rf"\| DIN \| 30 \| {processes} \| {threads} \| [\d,]+ \| [\d.]+x \| [\d,]+ \|", text), text


def test_memory_benchmark_prints_both_modes(data_root):
    text = run_script("benchmarks/memory_benchmark.py", "--datasets", "synthetic_tiny", "--steps", "2",
                      "--max_len", "30", "--eval_batch_size", "512", "--data_root", str(data_root))
    for mode in ("memory", "out_of_core"):
        assert re.search(rf"\| synthetic_tiny \| 14,280/1,776/1,392 \| {mode} \|( [\d,]+ \|){{4}} [\d.]+ \| [\d.]+ \|",
                         text), text


def test_prefetch_benchmark_prints_both_loaders():
    text = run_script("benchmarks/prefetch_benchmark.py", "--models", "DIN", "--max_len", "30", "--steps", "2",
                      "--rounds", "2", "--threads", "1")
    assert re.search(r"\| DIN \| 30 \| [\d.]+ \| [\d.]+ \| [\d.]+ \|", text), text


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a CUDA machine gpu_check.sh is run by hand (it trains every model)")
def test_gpu_check_refuses_a_machine_without_cuda(tmp_path):
    done = subprocess.run(["bash", "benchmarks/gpu_check.sh", "0", str(tmp_path / "out")], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHON": sys.executable})
    assert done.returncode != 0 and "no CUDA device 0" in done.stderr, done.stderr


def test_diffumin_steps_prints_a_row_per_step_count():
    text = run_script("benchmarks/diffumin_steps.py", "--sample_steps", "0", "2", "--max_len", "30", "--batch_size", "32",
                      "--train_batch_size", "16", "--repeats", "1", "--threads", "1", "--train")
    number = r"[\d,]+(\.\d+)?"
    for steps in (0, 2):
        assert re.search(rf"^\| {steps} \| {number} \| {number} \| {number} \| {number} \|$", text, re.M), text
    assert "max_len 30" in text and "commit" in text


def test_sparse_scaling_prints_its_table():
    text = run_script("benchmarks/sparse_scaling.py", "--lengths", "40", "--batch_size", "2", "--repeats", "1",
                      "--threads", "1")
    number = r"[\d,]+\.\d"
    assert re.search(rf"\| 40 \| {number} \| {number} \| \d+\.\d\d \| {number} \| {number} \| \d+\.\d\d \| "
                     rf"{number} \| {number} \|$", text, re.MULTILINE), text
