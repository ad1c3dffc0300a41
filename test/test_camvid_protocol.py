"""The segmentation protocol and training recipe: CamVid validates on its own val split scored at the labels'
native size through the runtime Engine, never on frames carved from train; augmentation, class balancing,
the poly schedule and the float16-weight export behave as documented."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from robot_compress.cli import main  # noqa: E402
from robot_compress.compress.balancing import median_frequency_weights, scheme_weights  # noqa: E402
from robot_compress.compress.data import SegAugment, augment_segmentation, load_dataset  # noqa: E402
from robot_compress.compress.recipe import RecipeError, parse_recipe  # noqa: E402
from robot_compress.compress.train import poly_lr, scheduled_lr  # noqa: E402

pytestmark = pytest.mark.toolkit
RECIPES = sorted((Path(__file__).resolve().parents[1] / "config" / "recipes").glob("*.yaml"))
CAMVID = {"kind": "camvid", "root": "x.zip", "input_size": [360, 480]}


# ------------------------------------------------------------------ the protocol is enforced


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_no_camvid_recipe_carves_validation_from_train(path):
    data = yaml.safe_load(path.read_text())["dataset"]
    if data["kind"] == "camvid":
        assert "val_fraction" not in data
        assert data["val_split"] == "val" and data["score_at"] == "native"


@pytest.mark.parametrize("bad", [{}, {"val_fraction": 0.15}, {"val_split": "val"},
                                 {"val_split": "train", "score_at": "native"}])
def test_a_camvid_recipe_that_carves_or_scores_at_model_size_is_refused(bad):
    recipe = {"name": "x", "dataset": {**CAMVID, **bad}, "student": {"model": "lraspp_mobilenet_v3_large"},
              "stages": [{"stage": "export"}]}
    with pytest.raises(RecipeError, match="camvid must be validated on its own 'val' split"):
        parse_recipe(recipe)


def test_val_split_and_val_fraction_together_are_refused():
    recipe = {"name": "x", "dataset": {"kind": "synthetic_seg", "val_split": "val", "val_fraction": 0.2},
              "student": {"model": "tiny_segnet"}, "stages": [{"stage": "export"}]}
    with pytest.raises(RecipeError, match="either val_split"):
        parse_recipe(recipe)


# ------------------------------------------------------------------ pure pieces


def test_median_frequency_weights_follow_segnet():
    # class 0: 900 of 1000 pixels in the 1 image it is in; class 1: 100 px over 1000; class 2: 10 px in 100.
    pixels, image_pixels = np.array([900, 100, 10]), np.array([1000, 1000, 100])
    w = median_frequency_weights(pixels, image_pixels)
    freq = pixels / image_pixels
    np.testing.assert_allclose(w, np.median(freq) / freq)
    assert w[0] < w[2] and w[1] == pytest.approx(1.0)
    np.testing.assert_allclose(scheme_weights("sqrt_median_frequency", pixels, image_pixels), np.sqrt(w))
    assert scheme_weights("none", pixels, image_pixels) is None


def test_a_class_absent_from_training_gets_weight_zero_and_empty_labels_are_refused():
    w = median_frequency_weights([50, 0, 50], [100, 0, 200])
    assert w[1] == 0.0 and np.all(np.isfinite(w))
    with pytest.raises(ValueError, match="empty label set"):
        median_frequency_weights([0, 0], [0, 0])


def test_poly_schedule_starts_at_base_and_decays_monotonically():
    lrs = [poly_lr(0.01, e, 10) for e in range(10)]
    assert lrs[0] == 0.01 and all(a > b > 0 for a, b in zip(lrs, lrs[1:], strict=False))
    assert scheduled_lr("none", 0.01, 5, 10) == 0.01
    with pytest.raises(ValueError, match="unknown scheduler"):
        scheduled_lr("step", 0.01, 0, 10)


def test_augmentation_crops_to_size_pads_with_void_and_keeps_pixel_label_pairs():
    torch.manual_seed(0)
    h, w = 40, 60
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = np.arange(w, dtype=np.uint8)[None, :]  # red channel encodes the column
    label = np.tile((np.arange(w) // 20).astype(np.uint8)[None, :], (h, 1))  # 3 vertical bands: 0, 1, 2
    aug = SegAugment(scale=(0.5, 1.5), crop=(24, 32), flip=True, color_jitter=0.0)
    seen_void = False
    for _ in range(30):
        out_img, out_label = augment_segmentation(img, label, aug, (h, w), ignore=11)
        assert out_img.shape == (24, 32, 3) and out_label.shape == (24, 32)
        void = out_label == 11
        seen_void |= bool(void.any())
        assert (out_img[void] == 0).all()  # padding is black image and void label
        # Labels still match the image content: the band of a pixel follows from its red value (the column).
        real = ~void & (out_img[..., 0] > 0)
        bands = np.minimum(out_img[..., 0][real].astype(int) * 3 // w, 2)
        assert np.mean(bands == out_label[real]) > 0.9
    assert seen_void  # scale 0.5 makes 20x30 frames: smaller than the crop


def test_colour_jitter_changes_pixels_but_never_labels():
    torch.manual_seed(1)
    img = np.full((16, 16, 3), 120, np.uint8)
    img[:, :8] = (200, 50, 20)
    label = np.zeros((16, 16), np.uint8)
    label[:, 8:] = 1
    aug = SegAugment(scale=(1.0, 1.0), crop=(16, 16), flip=False, color_jitter=0.4)
    out_img, out_label = augment_segmentation(img, label, aug, (16, 16), ignore=11)
    assert not np.array_equal(out_img, img)
    np.testing.assert_array_equal(out_label, label)


# ------------------------------------------------------------------ end to end on synthetic frames


def _recipe(tmp_path) -> Path:
    recipe = {
        "name": "tiny_native", "seed": 0,
        "dataset": {"kind": "synthetic_seg", "input_size": [24, 32], "val_split": "val", "score_at": "native",
                    "options": {"native_size": [36, 48], "n": 16},
                    "augment": {"scale": [0.5, 1.5], "crop": [16, 24], "color_jitter": 0.2}},
        "student": {"model": "tiny_segnet", "cfg": {"width": 4}},
        "stages": [{"stage": "train", "epochs": 3, "optimizer": "adamw", "lr": 0.01, "batch_size": 4,
                    "scheduler": "poly", "class_weights": "median_frequency", "val_every": 2},
                   {"stage": "export", "fp16_weights": True},
                   {"stage": "evaluate", "latency_runs": 0}],
    }
    path = tmp_path / "tiny_native.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.fixture(scope="module")
def native_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("native")
    out = tmp / "run"
    assert main(["run", str(_recipe(tmp)), "--out", str(out)]) == 0
    return out, json.loads((out / "metrics.json").read_text())


def test_reported_numbers_name_the_split_and_the_resolution(native_run):
    _, metrics = native_run
    assert metrics["dataset"]["validation"] == {"split": "the dataset's own 'val' split", "val_split": "val",
                                               "score_at": "native", "scored_at": [36, 48]}
    # Every pixel of the 16 native 36x48 validation frames is scored (minus the void border).
    assert metrics["student"]["metrics"]["n_pixels"] == 16 * (36 * 48 - 2 * 36 - 2 * 48 + 4)
    assert {"class_acc", "iou_per_class", "acc_per_class"} <= set(metrics["student"]["metrics"])


def test_validation_runs_every_n_epochs_and_after_the_last(native_run):
    out, _ = native_run
    state = torch.load(next((out / "checkpoints").glob("*_train_student.pt")), weights_only=False)
    assert [h["val"] is not None for h in state["history"]] == [False, True, True]


def test_torch_and_engine_agree_when_scoring_at_frame_size(native_run):
    _, metrics = native_run
    fp32 = next(e for e in metrics["onnx"] if e["kind"] == "fp32")
    assert fp32["agreement_pts"]["pixel_acc"] < 0.05 and fp32["agreement_pts"]["miou"] < 0.05


def test_fp16_weight_export_halves_the_file_and_keeps_the_masks(native_run):
    out, metrics = native_run
    fp32 = next(e for e in metrics["onnx"] if e["kind"] == "fp32")
    fp16 = next(e for e in metrics["onnx"] if e["kind"] == "fp16_weights")
    from robot_compress.runtime.engine import Engine

    engine = Engine(out / fp16["path"])
    assert engine.model_id == "tiny_native_fp16" and engine.meta.extra["weights_storage"] == "float16"
    assert fp16["max_abs_diff"] < 1e-2
    assert abs(fp16["metrics"]["pixel_acc"] - fp32["metrics"]["pixel_acc"]) < 0.01
    card = json.loads((out / fp16["path"]).with_suffix(".json").read_text())
    assert card["model_id"] == "tiny_native_fp16" and "pixel_acc" in card["metrics"]


def test_fp16_storage_shrinks_a_large_model(tmp_path):
    from onnx import TensorProto, helper, numpy_helper

    from robot_compress.compress.fp16 import store_weights_fp16
    from robot_compress.runtime.engine import Engine
    from robot_compress.tools.synthetic_models import make_model

    src = make_model(tmp_path / "seg.onnx", task="segmentation", input_size=(32, 32), labels=["a", "b", "c"])
    # Widen it: a 3 -> 256 -> 3 pair of 3x3 convs carries ~14k weights, so the file is mostly weights.
    model = onnx.load(str(src))
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.normal(0, 0.1, (256, 3, 3, 3)).astype(np.float32), "W1")
    w2 = numpy_helper.from_array(rng.normal(0, 0.1, (3, 256, 3, 3)).astype(np.float32), "W2")
    model.graph.initializer.extend([w1, w2])
    first = model.graph.node[0]
    first.input[0] = "wide2"
    model.graph.node.insert(0, helper.make_node("Conv", ["input", "W1"], ["wide1"], kernel_shape=[3, 3],
                                                pads=[1, 1, 1, 1]))
    model.graph.node.insert(1, helper.make_node("Conv", ["wide1", "W2"], ["wide2"], kernel_shape=[3, 3],
                                                pads=[1, 1, 1, 1]))
    assert TensorProto.FLOAT == w1.data_type
    onnx.save(model, str(src))
    dst = store_weights_fp16(src, tmp_path / "seg_fp16.onnx", model_id="seg_fp16")
    a, b = Engine(src), Engine(dst)
    frame = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    np.testing.assert_allclose(a.logits(frame).copy(), b.logits(frame), rtol=0, atol=5e-2)
    assert b.model_id == "seg_fp16"
    assert dst.stat().st_size < 0.6 * src.stat().st_size


def test_shared_camvid_val_is_its_own_split_at_full_resolution():
    from conftest import shared_path

    root = shared_path("data", "camvid-trainval.zip")
    val, info = load_dataset("camvid", str(root), input_size=(180, 240), train=False, split="val")
    train, _ = load_dataset("camvid", str(root), input_size=(180, 240), train=True)
    assert len(val) == 101 and len(train) == 367
    frame, label = val.variant(raw_uint8=True, native=True)[0]
    assert frame.shape == (360, 480, 3) and label.shape == (360, 480)
    image, label = val.variant(native=True)[0]
    assert tuple(image.shape) == (3, 180, 240) and tuple(label.shape) == (360, 480)
