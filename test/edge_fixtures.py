"""Helpers shared by the edge tests: a real Triton server on loopback (skipped without .venv-edge)."""
from __future__ import annotations

import pytest

from robot_compress.tools.serve import EdgeServerProcess, edge_python
from robot_compress.tools.synthetic_models import make_model

TEACHER_HW = (96, 128)
STUDENT_HW = (48, 64)


def teacher_and_student(tmp_dir):
    teacher = make_model(tmp_dir / "teacher.onnx", task="segmentation", input_size=TEACHER_HW, seed=1,
                         model_id="teacher_seg")
    student = make_model(tmp_dir / "student.onnx", task="segmentation", input_size=STUDENT_HW, seed=2,
                         model_id="student_seg")
    return teacher, student


def start_server(models, tmp_dir, payloads=("jpeg", "raw")) -> EdgeServerProcess:
    if edge_python() is None:
        pytest.skip("edge server venv (.venv-edge) is not installed; run `make edge-venv`")
    return EdgeServerProcess(models, payloads=payloads, log_path=tmp_dir / "server.log", max_lifetime_s=600).start()
