"""`robot-compress run` on the tiny synthetic detection recipe: teacher -> KD student -> class-blind prune ->
fine-tune -> export -> evaluate (AP in torch and through the Engine), resume, and refused stages."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("torchvision")
pytest.importorskip("pycocotools")

from robot_compress.cli import main  # noqa: E402

pytestmark = pytest.mark.toolkit
RECIPE = Path(__file__).resolve().parents[1] / "config" / "examples" / "tiny_synthetic_detection.yaml"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("detpipe") / "run"
    assert main(["run", str(RECIPE), "--out", str(out), "--set", "stages.5.latency_runs=2",
                 "--set", "stages.4.fp16_weights=true"]) == 0
    return out


def test_metrics_record_ap_for_teacher_student_and_onnx(run_dir):
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["task"] == "detection" and m["primary"] == "ap50"
    assert [s["stage"] for s in m["stages"]] == ["train", "distill", "prune", "finetune", "export", "evaluate"]
    for metrics in (m["student"]["metrics"], m["teacher"]["metrics"], m["onnx"][0]["metrics"]):
        assert {"ap", "ap50", "ap75"} <= set(metrics) and 0.0 <= metrics["ap"] <= metrics["ap50"] <= 1.0
        assert metrics["images"] == 12 and metrics["ground_truth"] > 0
    onnx = m["onnx"][0]
    # torch and the Engine score alike (same postprocess, boxes in frame pixels)
    assert max(onnx["agreement_pts"].values()) < 1.0
    assert onnx["metrics"]["latency_ms_p50_1thread_640x480"] > 0
    assert abs(onnx["sparsity"] - 0.5) < 0.02 and m["student"]["kd"] is True
    card = json.loads((run_dir / "tiny_detector_kd_cb50.json").read_text())
    assert card["metrics"]["ap50"] == onnx["metrics"]["ap50"]


def test_fp16_weight_export_is_checked_against_torch_and_scored_like_fp32(run_dir):
    import onnx

    m = json.loads((run_dir / "metrics.json").read_text())
    fp32, fp16 = m["onnx"]
    assert (fp32["kind"], fp16["kind"]) == ("fp32", "fp16_weights")
    assert fp16["path"] == "tiny_detector_kd_cb50_fp16.onnx"
    # float16 weights move boxes by a fraction of a pixel and scores by far less than a threshold step
    assert fp16["max_abs_diff_detail"]["boxes"] < 0.5 and fp16["max_abs_diff_detail"]["scores"] < 1e-2
    assert abs(fp16["metrics"]["ap50"] - fp32["metrics"]["ap50"]) <= 0.02
    props = {p.key: p.value for p in onnx.load(str(run_dir / fp16["path"])).metadata_props}
    assert props["weights_storage"] == "float16" and props["task"] == "detection"
    assert (run_dir / "tiny_detector_kd_cb50_fp16.json").is_file()


def test_metrics_name_the_by_image_split_it_was_scored_on(run_dir):
    m = json.loads((run_dir / "metrics.json").read_text())
    validation = m["dataset"]["validation"]
    # detection validation is every k-th image (no seed, no val_split), scored in frame pixels
    assert validation["split"].startswith("every ") and "seed" not in validation["split"]
    assert validation["score_at"] == "frame" and validation["val_split"] is None


def test_training_lowers_the_detection_loss(run_dir):
    ckpt = torch.load(run_dir / "checkpoints" / "00_train_teacher.pt", weights_only=True)
    losses = [h["train_loss"] for h in ckpt["history"]]
    assert len(losses) == 3 and losses[-1] < losses[0]


def test_rerun_resumes_without_training(run_dir):
    before = (run_dir / "checkpoints" / "01_distill_student.pt").stat().st_mtime_ns
    assert main(["run", str(RECIPE), "--out", str(run_dir), "--set", "stages.5.latency_runs=2",
                 "--set", "stages.4.fp16_weights=true"]) == 0
    assert (run_dir / "checkpoints" / "01_distill_student.pt").stat().st_mtime_ns == before
    assert "nothing to train" in (run_dir / "log.txt").read_text()


def test_unsupported_stage_is_refused_with_its_name_before_training(tmp_path, capsys):
    out = tmp_path / "q"
    code = main(["run", str(RECIPE), "--out", str(out), "--set",
                 "stages=[{stage: train, model: teacher}, {stage: export}, {stage: quantize}]"])
    assert code == 2
    assert "quantize" in capsys.readouterr().err
    assert not (out / "checkpoints").exists()  # refused up front: nothing trained
    code = main(["run", str(RECIPE), "--out", str(tmp_path / "c"),
                 "--set", "stages=[{stage: distill, cache_teacher: true}]"])
    assert code == 2 and "cache_teacher" in capsys.readouterr().err
