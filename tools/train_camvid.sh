#!/usr/bin/env bash
# Train the CamVid models of config/recipes in dependency order, two chains side by side (one core each on a
# 2-core machine; a GPU takes both), logs in runs/logs/. Every step checkpoints each epoch: rerun this script
# after an interruption and each recipe resumes where it stopped (finished ones train nothing).
#   teacher:  camvid_teacher ─────────────────────────────┐
#   student:  camvid_student_labels ─> camvid_lraspp_student_nokd ─> camvid_lraspp_student (KD, needs both)
set -uo pipefail
cd "$(dirname "$0")/.."
RC=${RC:-.venv/bin/robot-compress}
R=config/recipes
mkdir -p runs/logs
export PYTHONUNBUFFERED=1
run() { OMP_NUM_THREADS=$1 "$RC" run "$R/$2.yaml" >> "runs/logs/$2.log" 2>&1; }
run 1 camvid_teacher & teacher=$!
{ run 1 camvid_student_labels && run 1 camvid_lraspp_student_nokd; } & student=$!
wait "$teacher" || { echo "camvid_teacher failed: runs/logs/camvid_teacher.log" >&2; exit 1; }
wait "$student" || { echo "the label-trained student failed: runs/logs/camvid_student_labels.log" >&2; exit 1; }
run 2 camvid_lraspp_student || { echo "camvid_lraspp_student failed: runs/logs/camvid_lraspp_student.log" >&2; exit 1; }
echo "done: runs/camvid_teacher runs/camvid_lraspp_student runs/camvid_lraspp_student_nokd"
