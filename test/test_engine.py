"""Engine: metadata contract, pre-processing equivalence, buffer reuse, clear load errors."""
import json

import numpy as np
import onnxruntime as ort
import pytest

from robot_compress.runtime.engine import Engine, ModelLoadError, read_metadata
from robot_compress.runtime.metadata import REQUIRED_KEYS, ModelMetadata, ModelMetadataError
from robot_compress.tools.synthetic_models import make_model


def _reference_logits(path, rgb, meta):
    """Independent pre-processing: cv2 resize, colour order, (x/255 - mean)/std, plain session.run."""
    import cv2

    h, w = meta.input_size
    img = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255.0
    if meta.color_order == "BGR":
        img = img[:, :, ::-1]
    x = ((img - np.array(meta.mean, np.float32)) / np.array(meta.std, np.float32)).transpose(2, 0, 1)[None]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": np.ascontiguousarray(x, np.float32)})[0]


@pytest.mark.parametrize("color_order", ["RGB", "BGR"])
def test_segmentation_matches_independent_reference(tmp_path, color_order):
    path = make_model(tmp_path / "s.onnx", "segmentation", input_size=(24, 32), color_order=color_order,
                      mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))
    eng = Engine(path)
    rgb = np.random.default_rng(3).integers(0, 256, (48, 80, 3), dtype=np.uint8)
    ref = _reference_logits(path, rgb, eng.meta)
    np.testing.assert_allclose(eng.logits(rgb), ref, rtol=1e-4, atol=1e-4)
    res = eng.infer(rgb)
    assert res.mask.shape == (48, 80) and res.mask.dtype == np.uint8
    assert res.source == "local" and res.model_id == eng.model_id and res.latency_ms > 0
    assert sum(res.class_fractions.values()) == pytest.approx(1.0)


def test_classification_top_k(cls_model):
    eng = Engine(cls_model, top_k=3)
    rgb = np.random.default_rng(4).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    res = eng.infer(rgb)
    ref = _reference_logits(cls_model, rgb, eng.meta)[0]
    assert len(res.top_k) == 3
    assert res.top_k[0][0] == eng.meta.labels[int(np.argmax(ref))]
    assert [s for _, s in res.top_k] == sorted((s for _, s in res.top_k), reverse=True)


def test_buffers_are_reused_between_frames(seg_model):
    eng = Engine(seg_model)
    rng = np.random.default_rng(5)
    first = eng.logits(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    first_copy = first.copy()
    second = eng.logits(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    assert first is second  # the same output buffer every frame
    assert not np.array_equal(first_copy, second)  # ...holding the new frame's logits


def test_threads_must_be_positive(seg_model):
    with pytest.raises(ValueError, match="threads"):
        Engine(seg_model, threads=0)


def test_missing_model_file(tmp_path):
    with pytest.raises(ModelLoadError, match="model file not found: .*nope.onnx"):
        Engine(tmp_path / "nope.onnx")


def test_corrupt_model_file(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not protobuf at all")
    with pytest.raises(ModelLoadError, match="cannot load ONNX model"):
        Engine(bad)


@pytest.mark.parametrize("key", REQUIRED_KEYS)
def test_model_without_required_key_is_refused_naming_it(tmp_path, key):
    path = make_model(tmp_path / "m.onnx", drop_keys=[key])
    with pytest.raises(ModelLoadError, match=f"missing required key.*'{key}'"):
        Engine(path)


@pytest.mark.parametrize(
    "override, message",
    [
        ({"task": "tracking"}, "'task' must be one of"),
        ({"labels": "[]"}, "'labels' must be a non-empty"),
        ({"labels": "not json"}, "'labels' is not valid JSON"),
        ({"input_size": "[64]"}, "'input_size' must be"),
        ({"color_order": "RGBA"}, "'color_order' must be one of"),
        ({"std": "[0.1, 0, 0.1]"}, "'std' must be a JSON list of 3 positive"),
        ({"provenance": "[]"}, "'provenance' must be a JSON object"),
    ],
)
def test_invalid_metadata_values(tmp_path, override, message):
    path = make_model(tmp_path / "m.onnx", metadata=override)
    with pytest.raises(ModelLoadError, match=message):
        read_metadata(path)


def test_label_count_must_match_model_output(tmp_path):
    path = make_model(tmp_path / "m.onnx", task="classification", metadata={"labels": json.dumps(["a", "b"])})
    with pytest.raises(ModelLoadError, match="output shape .* does not fit task 'classification' with 2 labels"):
        Engine(path)


def test_input_size_must_match_graph(tmp_path):
    path = make_model(tmp_path / "m.onnx", input_size=(24, 32), metadata={"input_size": "[32, 32]"})
    with pytest.raises(ModelLoadError, match="disagrees with metadata input_size"):
        Engine(path)


def test_metadata_round_trip_keeps_extra_keys():
    meta = ModelMetadata.from_props(
        {"task": "segmentation", "labels": '["a","b"]', "input_size": "[2, 3]", "color_order": "RGB",
         "mean": "[0,0,0]", "std": "[1,1,1]", "provenance": '{"recipe": "r"}', "ignore_index": "11",
         "params_nonzero": "123"},
        default_model_id="stem",
    )
    assert meta.model_id == "stem" and meta.ignore_index == 11 and meta.extra == {"params_nonzero": "123"}
    assert ModelMetadata.from_props(meta.to_props()) == meta


def test_non_string_props_error_type():
    with pytest.raises(ModelMetadataError):
        ModelMetadata.from_props({})
