#!/usr/bin/env bash
# Train the training stages of the GPU-sized CIFAR-10 recipes on a lent GPU machine, then pack their run
# dirs so that `robot-compress run <recipe>` on the project's CPU resumes them as trained and exports,
# quantizes and scores the models there. Run from anywhere:
#   tools/gpu_train.sh OUT_DIR [DEADLINE_S]
# Needs: python3 with torch (+ pydantic: wheels in .whl/ are installed if present), the CIFAR-10 zip at
# ../shared/data/ or .gpu/, and the starting checkpoints under runs/ (see each recipe's header).
# Every job stops at DEADLINE_S (default 450) after the start; a stopped job keeps its last epoch's
# checkpoint. Output: OUT_DIR/runs.tgz.part-* (split to fit transfer limits) and OUT_DIR/summary.txt.
set -uo pipefail
out=$(realpath -m "${1:?usage: tools/gpu_train.sh OUT_DIR [DEADLINE_S]}")
deadline=${2:-450}
cd "$(dirname "$0")/.."
t0=$(date +%s)
left() { local s=$((deadline - ($(date +%s) - t0))); echo $((s > 1 ? s : 1)); }
mkdir -p "$out" runs/gpu_logs
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 2
  export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
if [ ! -e ../shared/data/cifar10-jpeg-train.zip ] && [ -e .gpu/cifar10-jpeg-train.zip ]; then
  mkdir -p ../shared/data && ln -s "$PWD/.gpu/cifar10-jpeg-train.zip" ../shared/data/
fi
rc() { timeout --signal=INT --kill-after=20 "$(left)" \
  python3 -c 'import sys; from robot_compress.cli import main; sys.exit(main(sys.argv[1:]))' "$@"; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c 'import torch, torchvision; print("torch", torch.__version__, "torchvision", torchvision.__version__)'

# Smoke test of the CUDA path (preload + bf16 + KD) in seconds, before the long jobs.
cat > /tmp/smoke.yaml <<'YAML'
name: gpu_smoke
device: auto
precision: bf16
dataset: {kind: synthetic_cls, input_size: [32, 32], val_fraction: 0.25, preload: true, options: {augment: true}}
teacher: {model: tiny_cnn, cfg: {width: 16}}
student: {model: tiny_cnn, cfg: {width: 8}}
stages:
  - {stage: train, model: teacher, epochs: 1, batch_size: 16}
  - {stage: distill, epochs: 2, batch_size: 16}
  - {stage: prune, criterion: class-blind, amount: 0.5}
  - {stage: finetune, epochs: 1, kd: true, batch_size: 16}
  - {stage: export}
YAML
rc run /tmp/smoke.yaml --out /tmp/smoke --train-only || { echo "SMOKE TEST FAILED"; exit 3; }

R=config/recipes
( rc run $R/cifar10_resnet18_teacher.yaml --train-only > runs/gpu_logs/r18.log 2>&1 \
  && rc run $R/cifar10_resnet18_to_resnet56_kd_cb40_int8.yaml --train-only > runs/gpu_logs/r56.log 2>&1 ) &
rc run $R/cifar10_resnet20_kd_long_int8.yaml --train-only > runs/gpu_logs/r20long.log 2>&1 &
rc run $R/cifar10_resnet20_kd_gradual_cb85_int8.yaml --train-only > runs/gpu_logs/r20grad.log 2>&1 &
while [ -n "$(jobs -r)" ]; do sleep 15; echo "t+$(( $(date +%s) - t0 ))s $(nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader)"; done
wait

# Optimizer state only matters to a resume that trains on: drop it from finished stage checkpoints.
python3 - <<'PY'
import glob, torch
from robot_compress.compress.models import torch_load  # weights_only, as every checkpoint read
for path in glob.glob("runs/*/checkpoints/*.pt"):
    state = torch_load(path)
    done = state.get("epoch", 0) >= int((state.get("config") or {}).get("epochs") or 10**9)
    if done and state.get("optimizer") is not None:
        state["optimizer"] = None
        torch.save(state, path)
PY
dirs=$(ls -d runs/cifar10_resnet18_teacher runs/cifar10_resnet18_to_resnet56_kd_cb40_int8 \
  runs/cifar10_resnet20_kd_long_int8 runs/cifar10_resnet20_kd_gradual_cb85_int8 2>/dev/null)
tar --exclude='*/student.pt' --exclude='*/teacher.pt' -czf - $dirs runs/gpu_logs | split -b 15M - "$out/runs.tgz.part-"
grep -h -E "epoch [0-9]+/[0-9]+ train_loss|Error|error|stopped|Traceback" runs/gpu_logs/*.log > "$out/summary.txt"
for f in runs/gpu_logs/*.log; do echo "== $f"; grep -E "train_loss" "$f" | sed -n '1p;$p'; tail -n 3 "$f"; done
ls -la "$out"; echo "total $(( $(date +%s) - t0 )) s"
