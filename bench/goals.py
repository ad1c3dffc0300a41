"""The project's goals, one definition for the benchmark report (bench/run_all.py) and the results report
(docs/make_results.py). Each number names the issue that set it."""
from __future__ import annotations

# Speed and robot-side goals (issue 8), measured by `make bench`.
SPEEDUP_GOAL = 5.0  # student vs teacher, p50, one thread
FPS_GOAL = 30.0  # camera frames per second on one core, Engine.infer including pre/post-processing
NODE_OVERHEAD_GOAL_MS = 2.0  # the node beyond a no-op echo node
# Issue 12: Engine.infer's work outside the onnxruntime session (resize, normalise, argmax, mask to frame size)
FRAME_PATH_GOAL_MS = 1.0
NODE_RSS_GOAL_MB = 250.0
# Accuracy budgets below the teacher (issue 7): top-1 / global pixel accuracy, percentage points.
ACC_BUDGET_PTS = {"classification": 1.0, "segmentation": 2.0}
# Parameter budgets (issue 7): the student's nonzero parameters as a share of the teacher's.
PARAM_SHARE_GOAL = {"classification": 0.05, "segmentation": 0.10}
# CamVid on its own val split scored at 360x480 (issue 12).
CAMVID_TEACHER_MIOU_GOAL = 0.55
CAMVID_STUDENT_MIOU_GOAL = 0.50
# Published CamVid test-split anchors (11 classes, 360x480), for context only: global accuracy / mIoU.
CAMVID_ANCHORS = (("SegNet-Basic (from scratch)", 0.827, 0.472), ("ENet", None, 0.513), ("ESPNet", None, 0.556))
# Penn-Fudan pedestrian detection (issue 14): AP50 on the 24 val images (every 5th by name), COCO-style through
# pycocotools, on 640x480 camera frames; speed, fps and parameter goals as above (SPEEDUP_GOAL, FPS_GOAL).
DETECTION_AP50_BUDGET_PTS = 3.0
DETECTION_PARAM_SHARE_GOAL = 0.10
