#!/usr/bin/env bash
# GPU check (issue 13 item 6), for a CUDA machine; CI never runs it.
#
#   bash benchmarks/gpu_check.sh [GPU] [OUT_DIR]        # default GPU 0, OUT_DIR gpu_check_<UTC time>
#
# 1. every model's tiny expid trains and evaluates on --gpu GPU (14 models);
# 2. one demo expid (TWIN_LAIN_synthetic) in fp32 and in bf16, with the test-metric difference;
# 3. the throughput benchmark at max_len 1000 and 5000 (train/inference samples/s, peak GPU memory);
# 4. step time with and without prefetching, and 1 vs 2 processes (NCCL) when the machine has 2 GPUs.
# Everything is written under OUT_DIR (results CSVs, logs, tables; checkpoints in OUT_DIR/checkpoints);
# the script stops at the first failure and says which step failed.
set -euo pipefail
cd "$(dirname "$0")/.."
GPU=${1:-0}
OUT=${2:-gpu_check_$(date -u +%Y%m%dT%H%M%S)}
PY=${PYTHON:-.venv/bin/python}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export LAINCTR_DATA_ROOT=${LAINCTR_DATA_ROOT:-$PWD/data}

step() { echo; echo "=== $* ($(date -u +%H:%M:%S))"; }
trap 'echo "gpu_check: FAILED during: ${CURRENT:-setup} (logs in $OUT)" >&2' ERR

CURRENT="CUDA visible"
"$PY" - "$GPU" <<'PY'
import sys, torch
gpu = int(sys.argv[1])
if not torch.cuda.is_available() or gpu >= torch.cuda.device_count():
    sys.exit(f"gpu_check: no CUDA device {gpu} (torch {torch.__version__}, cuda {torch.version.cuda}); "
             "install a CUDA build of torch 2.13.0 first")
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(gpu)}, "
      f"{torch.cuda.device_count()} device(s)")
PY

CONFIG="$OUT/config"
mkdir -p "$CONFIG"
sed "s#^  model_root: .*#  model_root: $OUT/checkpoints#" config/base_config.yaml > "$CONFIG/base_config.yaml"

step "1. every model's tiny expid on cuda:$GPU"
for model in DIN DIN_LAIN DIEN DIEN_LAIN SIM SIM_LAIN SDIM SDIM_LAIN TWIN TWIN_LAIN \
             SparseCTR SparseCTR_LAIN DiffuMIN DiffuMIN_LAIN; do
  CURRENT="tiny expid ${model}_synthetic_tiny"
  "$PY" run_expid.py --expid "${model}_synthetic_tiny" --gpu "$GPU" --config "$CONFIG" \
    --results "$OUT/tiny_results.csv" > "$OUT/tiny_${model}.log" 2>&1
  tail -n 3 "$OUT/tiny_${model}.log" | sed "s/^/  [$model] /"
done

step "2. TWIN_LAIN_synthetic in fp32 and bf16"
for precision in fp32 bf16; do
  CURRENT="demo expid, $precision"
  "$PY" run_expid.py --expid TWIN_LAIN_synthetic --gpu "$GPU" --precision "$precision" --config "$CONFIG" \
    --results "$OUT/precision_results.csv" > "$OUT/demo_${precision}.log" 2>&1
done
CURRENT="precision comparison"
"$PY" - "$OUT/precision_results.csv" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
fp32, bf16 = rows[-2], rows[-1]
print("| metric | fp32 | bf16 | bf16 - fp32 |\n|---|---|---|---|")
for key in [k for k in fp32 if k.startswith("test_") and ("AUC" in k or "logloss" in k)]:
    print(f"| {key} | {float(fp32[key]):.6f} | {float(bf16[key]):.6f} | {float(bf16[key]) - float(fp32[key]):+.6f} |")
print(f"train seconds: fp32 {fp32['train_seconds']}, bf16 {bf16['train_seconds']}")
PY

step "3. throughput at max_len 1000 and 5000 (peak GPU memory)"
CURRENT="benchmark.py"
"$PY" benchmarks/benchmark.py --gpu "$GPU" --max_len 1000 5000 --processes 1 --out "$OUT/benchmark.md" \
  > "$OUT/benchmark.log" 2>&1
cat "$OUT/benchmark.md"

step "4. prefetching, and data parallelism when there are 2 GPUs"
CURRENT="prefetch_benchmark.py"
"$PY" benchmarks/prefetch_benchmark.py --gpu "$GPU" --models DIN TWIN --max_len 1000 5000 | tee "$OUT/prefetch.md"
if [ "$("$PY" -c 'import torch; print(torch.cuda.device_count())')" -ge 2 ]; then
  CURRENT="ddp_benchmark.py"
  "$PY" benchmarks/ddp_benchmark.py --gpu 0 --nproc 1 2 --models DIN TWIN --max_len 1000 | tee "$OUT/ddp.md"
else
  echo "one GPU: the NCCL data-parallel benchmark needs 2 (skipped)"
fi
echo; echo "gpu_check: all steps passed; outputs in $OUT"
