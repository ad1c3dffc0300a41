"""Post-processing against hand-computed values."""
import math

import numpy as np
import pytest

from robot_compress.runtime import postprocess
from robot_compress.runtime.results import SCHEMA, InferenceResult


def test_top_k_hand_computed():
    logits = np.array([1.0, 3.0, 2.0, 0.0])
    labels = ["a", "b", "c", "d"]
    denom = sum(math.exp(v) for v in logits)
    got = postprocess.top_k(logits, labels, k=2)
    assert [lbl for lbl, _ in got] == ["b", "c"]
    assert got[0][1] == pytest.approx(math.exp(3.0) / denom)
    assert got[1][1] == pytest.approx(math.exp(2.0) / denom)


def test_top_k_clamps_k_and_breaks_ties_by_class_id():
    got = postprocess.top_k(np.zeros(3), ["x", "y", "z"], k=10)
    assert [lbl for lbl, _ in got] == ["x", "y", "z"]
    assert all(s == pytest.approx(1 / 3) for _, s in got)


def test_top_k_rejects_label_mismatch():
    with pytest.raises(ValueError, match="3 logits for 2 labels"):
        postprocess.top_k(np.zeros(3), ["a", "b"])


def test_argmax_mask_and_nearest_resize():
    logits = np.zeros((1, 3, 2, 2), np.float32)
    logits[0, 2, 0, 0] = 5  # class 2 top-left
    logits[0, 1, 1, 1] = 5  # class 1 bottom-right
    mask = postprocess.argmax_mask(logits)
    np.testing.assert_array_equal(mask, [[2, 0], [0, 1]])
    big = postprocess.resize_mask(mask, (4, 6))
    assert big.dtype == np.uint8 and big.shape == (4, 6)
    np.testing.assert_array_equal(big[:2, :3], 2)
    np.testing.assert_array_equal(big[2:, 3:], 1)
    assert set(np.unique(big)) == {0, 1, 2}  # nearest neighbour never invents class ids


@pytest.mark.parametrize("classes", [2, 11, 32])
def test_argmax_mask_equals_numpy_argmax_with_ties_on_the_lower_class(classes):
    rng = np.random.default_rng(classes)
    logits = rng.normal(size=(classes, 37, 53)).astype(np.float32)
    logits[:, :5] = np.round(logits[:, :5])  # many exact ties in the first rows
    logits[:, 5:8] = 0.0  # all classes tie: class 0
    mask = postprocess.argmax_mask(logits)
    assert mask.dtype == np.uint8
    np.testing.assert_array_equal(mask, logits.argmax(axis=0))


def test_class_fractions_equal_a_bincount_for_uint8_and_wider_masks():
    rng = np.random.default_rng(0)
    mask = rng.integers(0, 11, (36, 48)).astype(np.uint8)
    labels = [f"c{i}" for i in range(11)]
    want = np.bincount(mask.ravel(), minlength=11) / mask.size
    assert list(postprocess.class_fractions(mask, labels).values()) == pytest.approx(want.tolist())
    assert list(postprocess.class_fractions(mask.astype(np.int64), labels).values()) == pytest.approx(want.tolist())


def test_argmax_mask_rejects_batches_and_bad_shapes():
    with pytest.raises(ValueError, match="batch 1"):
        postprocess.argmax_mask(np.zeros((2, 3, 4, 4)))
    with pytest.raises(ValueError, match=r"\[C, H, W\]"):
        postprocess.argmax_mask(np.zeros((3, 4)))


def test_class_fractions_hand_computed():
    mask = np.array([[0, 0, 1], [2, 2, 2]], np.uint8)
    fr = postprocess.class_fractions(mask, ["a", "b", "c", "d"])
    assert fr == pytest.approx({"a": 2 / 6, "b": 1 / 6, "c": 3 / 6, "d": 0.0})


def test_palette_distinct_and_overlay_blends():
    pal = postprocess.palette(11)
    assert len({tuple(c) for c in pal}) == 11
    rgb = np.zeros((2, 2, 3), np.uint8)
    mask = np.array([[0, 1], [1, 0]], np.uint8)
    out = postprocess.overlay(rgb, mask, 11, alpha=0.5)
    np.testing.assert_array_equal(out[0, 1], np.round(pal[1] * 0.5).astype(np.uint8))
    np.testing.assert_array_equal(out[0, 0], np.round(pal[0] * 0.5).astype(np.uint8))


def test_result_json_schema():
    cls = InferenceResult("classification", "m", "local", 1.23456, top_k=[("cat", 0.75)])
    d = cls.to_dict(12, 34, "cam")
    assert d == {
        "schema": SCHEMA, "stamp": {"sec": 12, "nanosec": 34}, "frame_id": "cam", "task": "classification",
        "source": "local", "model_id": "m", "latency_ms": 1.235, "top_k": [{"label": "cat", "score": 0.75}],
    }
    seg = InferenceResult("segmentation", "m", "edge", 2.0, mask=np.zeros((3, 4), np.uint8),
                          class_fractions={"sky": 1.0})
    d = seg.to_dict(1, 2, "f")
    assert d["class_fractions"] == {"sky": 1.0} and d["mask_size"] == [3, 4] and d["source"] == "edge"
    assert "top_k" not in d


def test_class_fractions_of_an_integer_enlargement_equal_the_small_masks():
    """Engine.result_from_mask counts the model-resolution mask when the frame is a whole multiple of it."""
    rng = np.random.default_rng(1)
    labels = [str(i) for i in range(11)]
    small = rng.integers(0, 11, (45, 60)).astype(np.uint8)
    for hw, whole in (((90, 120), True), ((180, 240), True), ((90, 180), True), ((100, 120), False)):
        assert postprocess.is_integer_enlargement(small.shape, hw) is whole
        if whole:
            big = postprocess.resize_mask(small, hw)
            assert postprocess.class_fractions(big, labels) == postprocess.class_fractions(small, labels)
