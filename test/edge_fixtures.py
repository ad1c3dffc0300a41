"""Helpers shared by the edge tests: a real Triton server on loopback (skipped without .venv-edge)."""
from __future__ import annotations

import pytest

from robot_compress.tools.serve import EdgeServerProcess, edge_python
from robot_compress.tools.synthetic_models import make_model

# Deadline checks on a shared 2-core CI box: a scheduler or GC stall can delay any single frame, so a few
# frames may run late; a processor that blocked on a dead link instead of answering locally would run late
# on many of them, and by whole timeouts.
STALLED_FRACTION = 0.05
HANG_S = 1.0

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


def assert_answered_in_time(latencies_s, budget_s: float) -> None:
    """All but a stall's worth of frames within budget_s, and not one frame near a hang."""
    late = sorted(x for x in latencies_s if x > budget_s)
    allowed = max(1, int(STALLED_FRACTION * len(latencies_s)))
    assert len(late) <= allowed, f"{len(late)}/{len(latencies_s)} frames over {budget_s * 1e3:.0f} ms: {late[-5:]}"
    assert max(latencies_s) <= HANG_S, f"a frame took {max(latencies_s):.2f} s: blocked on the edge?"
