#!/usr/bin/env bash
# Train the CamVid models of config/recipes in dependency order, logs in runs/logs/. Every step checkpoints each
# epoch: rerun this script after an interruption and each recipe resumes where it stopped (finished ones train
# nothing).
#   camvid_student_labels ─┬─> camvid_teacher (export + score only: flip-averaged) ─┐
#                          ├─> camvid_lraspp_student_nokd                            │
#                          └─> camvid_lraspp_student (KD from camvid_teacher's model) <┘ (and _s70)
#   camvid_teacher_deeplabv3 (the larger teacher that lost; needs camvid_student_labels) runs beside the rest.
set -uo pipefail
cd "$(dirname "$0")/.."
RC=${RC:-.venv/bin/robot-compress}
R=config/recipes
mkdir -p runs/logs
export PYTHONUNBUFFERED=1
run() { OMP_NUM_THREADS=$1 "$RC" run "$R/$2.yaml" >> "runs/logs/$2.log" 2>&1 || { echo "$2 failed: runs/logs/$2.log" >&2; exit 1; }; }
run 2 camvid_student_labels
run 2 camvid_teacher
run 2 camvid_lraspp_student
run 2 camvid_lraspp_student_s70
run 2 camvid_lraspp_student_nokd
run 2 camvid_teacher_deeplabv3
echo "done: runs/camvid_teacher runs/camvid_lraspp_student runs/camvid_lraspp_student_s70 runs/camvid_lraspp_student_nokd"
