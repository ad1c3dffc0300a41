"""Detectors: registry entries of task detection, the wrapper's outputs in eval and train mode, torchvision's
losses, the MobileNetV3 backbone start from a segmentation checkpoint, and structured pruning."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

from robot_compress.compress.detection.data import Targets  # noqa: E402
from robot_compress.compress.models import CheckpointError, get_model, list_models  # noqa: E402

pytestmark = pytest.mark.toolkit


def _targets():
    return Targets([{"boxes": torch.tensor([[4.0, 6.0, 30.0, 40.0]]), "labels": torch.tensor([1])},
                    {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}])


def test_registry_lists_detectors_as_detection():
    models = list_models()
    for name in ("ssdlite_mobilenet_v3_large", "fcos_mobilenet_v3_large_fpn", "retinanet_resnet50_fpn",
                 "tiny_detector"):
        assert models[name] == "detection"


@pytest.mark.parametrize("family", ["ssd", "fcos"])
def test_eval_outputs_follow_the_contract_and_train_gives_losses(family):
    torch.manual_seed(0)
    m = get_model("tiny_detector", 2, width=32, family=family)
    m.eval()
    with torch.no_grad():
        boxes, scores = m(torch.randn(2, 3, 48, 64))
    assert boxes.shape[:2] == scores.shape[:2] and boxes.shape[-1] == 4 and scores.shape[-1] == 2
    assert float(boxes[..., 0::2].min()) >= 0 and float(boxes[..., 0::2].max()) <= 64
    assert float(boxes[..., 1::2].max()) <= 48 and 0 <= float(scores.min()) and float(scores.max()) <= 1
    m.train()
    dense = m(torch.randn(2, 3, 48, 64))
    losses = m.losses(dense, _targets())
    assert {"classification", "bbox_regression"} <= set(losses)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in m.parameters())


def test_ssd_labels_shift_for_the_background_column():
    ssd, fcos = get_model("tiny_detector", 2), get_model("tiny_detector", 2, width=32, family="fcos")
    t = _targets()
    assert ssd.tv_targets(t)[0]["labels"].tolist() == [2] and fcos.tv_targets(t)[0]["labels"].tolist() == [1]


def test_native_size_teacher_answers_in_the_callers_pixels():
    torch.manual_seed(0)
    m = get_model("tiny_detector", 1).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref_boxes, ref_scores = m(x)
        m.native_size = (64, 64)
        small = torch.nn.functional.interpolate(x, size=(32, 48), mode="bilinear", align_corners=False)
        boxes, scores = m(small)
    # run at 64x64 internally: the same number of candidates, boxes scaled to the 32x48 input
    assert boxes.shape == ref_boxes.shape
    assert float(boxes[..., 0::2].max()) <= 48 + 1e-4 and float(boxes[..., 1::2].max()) <= 32 + 1e-4


def _lraspp_checkpoint(tmp_path):
    seg = get_model("lraspp_mobilenet_v3_large", 3)
    path = tmp_path / "seg.pt"
    torch.save({"model": seg.state_dict()}, path)
    return seg, path


def test_backbone_starts_from_a_segmentation_mobilenet(tmp_path):
    from robot_compress.compress.detection.build import init_backbone

    seg, path = _lraspp_checkpoint(tmp_path)
    det = get_model("ssdlite_mobilenet_v3_large", 1)
    report = init_backbone(det, path, "model.backbone.")
    assert report["copied"] == report["backbone"] == 308 and report["skipped_shape"] == 0
    state = det.state_dict()
    src = seg.state_dict()
    for key in ("0.0.weight", "5.block.0.0.weight", "13.block.1.0.weight", "16.0.weight", "16.1.running_var"):
        assert torch.equal(state[det.backbone_map[key]], src[f"model.backbone.{key}"])


def test_backbone_init_fails_loudly_when_nothing_fits(tmp_path):
    from robot_compress.compress.detection.build import DetectionBuildError, init_backbone

    _, path = _lraspp_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="no tensor name starts with"):
        init_backbone(get_model("ssdlite_mobilenet_v3_large", 1), path, "backbone.")
    slim = get_model("ssdlite_mobilenet_v3_large", 1, width_mult=0.5)
    with pytest.raises(CheckpointError, match="differ in shape"):
        init_backbone(slim, path, "model.backbone.")
    with pytest.raises(DetectionBuildError, match="no MobileNetV3 backbone"):
        init_backbone(get_model("tiny_detector", 1), path, "model.backbone.")


def test_camvid_student_backbone_fits_the_detectors():
    from conftest import REPO_ROOT

    from robot_compress.compress.detection.build import init_backbone

    ckpt = REPO_ROOT / "runs" / "camvid_student_labels" / "student.pt"
    if not ckpt.is_file():
        pytest.skip(f"needs {ckpt} (the CamVid labels-trained LR-ASPP run)")
    for name in ("ssdlite_mobilenet_v3_large", "fcos_mobilenet_v3_large_fpn"):
        report = init_backbone(get_model(name, 1), ckpt, "model.backbone.")
        assert report["copied"] == 308, (name, report)


def test_structured_pruning_shrinks_a_detector_and_keeps_its_outputs():
    from robot_compress.compress.detection.structured import prediction_layers, structured_prune_detector

    torch.manual_seed(0)
    m = get_model("tiny_detector", 2, width=16)
    heads = prediction_layers(m)
    widths = [h.out_channels for h in heads]
    report = structured_prune_detector(m, torch.zeros(1, 3, 64, 64), 0.5)
    assert report["params_after"] < report["params_before"] and report["macs_after"] < report["macs_before"]
    assert [h.out_channels for h in heads] == widths  # the prediction convs keep every output
    m.eval()
    with torch.no_grad():
        boxes, scores = m(torch.zeros(1, 3, 64, 64))
    assert scores.shape[-1] == 2 and torch.isfinite(boxes).all()
