"""docs/make_results.py's CamVid block: goals computed from the runs' metrics.json, never typed."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytestmark = pytest.mark.toolkit
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def make_results(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("make_results", ROOT / "docs" / "make_results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(module, "ROOT", tmp_path)
    return module


def _run(runs: Path, name: str, model: str, pixel_acc: float, miou: float, nonzero: int, kd: bool = False,
         onnx_kind: str = "fp32", onnx_shift: float = 0.0):
    """A finished run; its ONNX file scores `onnx_shift` above the torch model."""
    metrics = {"student": {"model": model, "kd": kd, "params": {"nonzero": nonzero},
                           "metrics": {"pixel_acc": pixel_acc, "miou": miou, "class_acc": 0.5,
                                       "iou_per_class": [miou] * 3}},
               "dataset": {"labels": ["a", "b", "c"]}, "stages": [{"stage": "train", "epochs": 4,
                                                                  "train_seconds_by_device": {"cpu": 600.0}}],
               "onnx": [{"kind": onnx_kind, "path": f"{name}.onnx",
                         "metrics": {"pixel_acc": pixel_acc + onnx_shift, "miou": miou + onnx_shift}}]}
    (runs / name).mkdir(parents=True)
    (runs / name / "metrics.json").write_text(json.dumps(metrics))


def test_goals_are_computed_from_the_runs(make_results, tmp_path):
    runs = tmp_path / "runs"
    # The goals read the shipped files (the teacher's float16 copy, the student's robot-size export)
    _run(runs, make_results.CAMVID_TEACHER, "deeplabv3_mobilenet_v3_large", 0.89, 0.55, 11_000_000,
         onnx_kind="fp16_weights", onnx_shift=0.01)
    _run(runs, "camvid_lraspp_student", "lraspp_mobilenet_v3_large", 0.88, 0.49, 840_000, kd=True,
         onnx_shift=-0.01)
    text = "\n".join(make_results.camvid_section())
    assert "| edge teacher mIoU >= 55 % | 56.00 % | yes |" in text
    assert "| student mIoU >= 50 % | 48.00 % | **no** |" in text
    assert "87.00 % vs 90.00 % (+3.00 pt) | **no** |" in text  # 3 pt below the teacher: outside 2 pt
    assert "(92.4 % fewer) | yes |" in text
    assert "| `camvid_lraspp_student_nokd` | not finished |" in text
    assert "no `make bench` output" in text


def test_the_block_replaces_only_itself(make_results, tmp_path):
    (tmp_path / "docs").mkdir()
    page = tmp_path / "docs" / "RESULTS.md"
    page.write_text("before\n<!-- camvid:begin -->\nstale 12.34 %\n<!-- camvid:end -->\nafter\n")
    make_results.write_camvid_section()
    text = page.read_text()
    assert text.startswith("before\n<!-- camvid:begin -->") and text.endswith("<!-- camvid:end -->\nafter\n")
    assert "stale" not in text and "| `camvid_teacher` | not finished |" in text
