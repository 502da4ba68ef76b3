#!/usr/bin/env bash
# docs/first_hour.md as one script: bash docs/first_hour/walkthrough.sh [SCRATCH_DIR]   (from the repository root)
# Writes the shop log, its dataset folder, your expids and the outputs under SCRATCH_DIR (default /tmp/first_hour);
# config/datasets_local.yaml (your own, git-ignored) is written for the run and removed after it, so the script
# refuses to start if you have one. Checkpoints and results go where run_expid.py puts them (checkpoints/, results/).
set -euo pipefail
cd "$(dirname "$0")/../.."
SCRATCH="${1:-/tmp/first_hour}"
[ ! -e config/datasets_local.yaml ] || { echo "error: config/datasets_local.yaml exists; move it away first" >&2; exit 2; }
export PATH="$PWD/.venv/bin:$PATH" LAINCTR_DATA_ROOT="$SCRATCH/data"
mkdir -p "$SCRATCH/my_expids" "$SCRATCH/out"
trap 'rm -f config/datasets_local.yaml' EXIT
step() { echo; echo "\$ $*"; "$@"; }
step python docs/first_hour/make_shop_log.py --out "$SCRATCH/shop_x1"
step python -m data_preprocess.bars_x1_csv --layout microvideo --input "$SCRATCH/shop_x1" \
    --output "$LAINCTR_DATA_ROOT/shop" --dataset_id shop --no_progress
printf 'shop:\n  data_dir: shop\n  length_buckets: [30, 80]\n' > config/datasets_local.yaml
cat > "$SCRATCH/my_expids/shop.yaml" <<'YAML'
DIN_shop:
  base_expid: DIN_synthetic
  dataset_id: shop
  max_len: 100
  epochs: 4
TWIN_LAIN_shop:
  base_expid: TWIN_LAIN_synthetic
  dataset_id: shop
  max_len: 100
  epochs: 4
YAML
step python run_expid.py --expid DIN_shop --config "$SCRATCH/my_expids"
step python run_expid.py --expid TWIN_LAIN_shop --config "$SCRATCH/my_expids"
step python -m lainctr.leaderboard --out "$SCRATCH/reports"
step python docs/first_hour/new_samples.py --data "$LAINCTR_DATA_ROOT/shop" --out "$SCRATCH/out/new_samples.csv"
step python -m lainctr.predict --expid TWIN_LAIN_shop --config "$SCRATCH/my_expids" \
    --input "$SCRATCH/out/new_samples.csv" --out "$SCRATCH/out/scores.csv"
step python -m lainctr.export --expid TWIN_LAIN_shop --config "$SCRATCH/my_expids" --out "$SCRATCH/out/twin_lain_shop.onnx"
step python docs/first_hour/score_onnx.py --model "$SCRATCH/out/twin_lain_shop.onnx" --data "$LAINCTR_DATA_ROOT/shop" \
    --samples "$SCRATCH/out/new_samples.csv"
