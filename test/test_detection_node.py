"""perception_node with a detection model, end to end: a subprocess started as launch starts it, frames published
over localhost DDS, results received with `detections` in the frame's pixels and the frame's exact stamp and
frame_id; no mask; the overlay draws the boxes when publish_overlay is on.

The model is tools/synthetic_models' fixed colour-cell detector (labels ["person"]: its "bright" feature): a white
rectangle covering one 16 px cell of its 64x64 input is one detection whose box is that cell scaled to the frame,
so every box below is known by hand.
"""
from __future__ import annotations

import uuid

import numpy as np
import pytest
from node_harness import NodeProcess, Peer, make_header, write_params_file

from robot_compress.runtime.detection import draw_detections
from robot_compress.runtime.engine import Engine
from robot_compress.tools.synthetic_models import make_model

pytestmark = pytest.mark.ros

MODEL_HW, CELL = (64, 64), 16


def _topics():
    uid = uuid.uuid4().hex[:8]
    return {"input_topic": f"/test_{uid}/image", "result_topic": f"/test_{uid}/result",
            "mask_topic": f"/test_{uid}/mask", "overlay_topic": f"/test_{uid}/overlay"}


@pytest.fixture
def detector(tmp_path):
    return make_model(tmp_path / "det.onnx", task="detection", labels=["person"], input_size=MODEL_HW, cell=CELL)


@pytest.fixture
def running(tmp_path):
    started = []

    def start(model, **params):
        topics = _topics()
        params_file = write_params_file(tmp_path / "params.yaml", model_path=str(model), threads=1,
                                        qos_reliability="reliable", qos_depth=10, diagnostics_period_s=0.5,
                                        **{**topics, **params})
        node = NodeProcess(params_file, log_dir=tmp_path)
        peer = Peer(input_topic=topics["input_topic"], result_topic=topics["result_topic"],
                    mask_topic=topics["mask_topic"], overlay_topic=topics["overlay_topic"])
        started.append((node, peer))
        return node, peer

    yield start
    for node, peer in started:
        peer.close()
        node.close()


def _cell_box(row: int, col: int, frame_hw) -> list[float]:
    """Model cell (row, col) in the frame's pixels: model pixels * frame size / model size."""
    h, w = frame_hw
    sy, sx = h / MODEL_HW[0], w / MODEL_HW[1]
    return [col * CELL * sx, row * CELL * sy, (col + 1) * CELL * sx, (row + 1) * CELL * sy]


def _frame(cells, frame_hw) -> np.ndarray:
    """Black frame with a white rectangle exactly over each model cell."""
    rgb = np.zeros((*frame_hw, 3), np.uint8)
    for row, col in cells:
        x1, y1, x2, y2 = (int(round(v)) for v in _cell_box(row, col, frame_hw))
        rgb[y1:y2, x1:x2] = 255
    return rgb


def _publish_each_after_the_last_answer(peer, node, messages):
    """One frame at a time, the next once the node has answered the last (the latest-frame-wins slot then
    never drops one, however loaded the machine): every frame gets its result."""
    for i, msg in enumerate(messages):
        peer.publish(msg)
        peer.wait_until(lambda n=i + 1: len(peer.results) >= n, 60, f"the result of frame {i}", node)


def _key(result):
    return (result["stamp"]["sec"], result["stamp"]["nanosec"], result["frame_id"])


def _hkey(header):
    return (header.stamp.sec, header.stamp.nanosec, header.frame_id)


def _scene(n=24):
    """(frame, header, expected cells) per message: 480x640 and 240x320 frames, one or two people, or none."""
    out = []
    for i in range(n):
        hw = (480, 640) if i % 3 else (240, 320)
        cells = [] if i % 7 == 6 else [(i % 4, (3 * i) % 4)]
        if i % 5 == 4:
            cells.append(((i % 4 + 2) % 4, ((3 * i) % 4 + 2) % 4))  # a second, distant person
        out.append((_frame(cells, hw), make_header(i), cells))
    return out


def test_detections_in_frame_pixels_with_the_frames_stamps(detector, running):
    from robot_compress.ros.image_msgs import rgb_to_image

    node, peer = running(detector)
    peer.wait_for_node(node)
    scene = _scene()
    expected = {_hkey(h): (rgb, cells) for rgb, h, cells in scene}
    _publish_each_after_the_last_answer(peer, node, [rgb_to_image(rgb, h) for rgb, h, _ in scene])
    counts = peer.wait_for_settled(len(scene), node)
    assert (counts["frames_out"], counts["dropped"], counts["bad_frames"], counts["errors"]) == (len(scene), 0, 0, 0)
    results = list(peer.results)
    # every frame answered once, with its exact stamp and frame_id, in order
    assert [_key(r) for r in results] == [_hkey(h) for _, h, _ in scene]

    engine = Engine(detector, threads=1)
    for result in results:
        rgb, cells = expected[_key(result)]
        hw = rgb.shape[:2]
        assert result["schema"] == "robot_compress/result/1" and result["task"] == "detection"
        assert result["source"] == "local" and result["model_id"] == engine.model_id
        assert result["image_size"] == list(hw) and "mask_size" not in result and "class_fractions" not in result
        dets = result["detections"]
        # by hand: one box per painted cell, in the frame's pixels (0.1 px), score ~1
        got = sorted(d["box"] for d in dets)
        want = sorted([round(v, 1) for v in _cell_box(r, c, hw)] for r, c in cells)
        assert got == want, (result, cells)
        assert all(d["label"] == "person" and d["class_id"] == 0 and 0.99 <= d["score"] <= 1.0 for d in dets)
        # and exactly what the Engine gives for the same frame
        assert dets == [d.to_dict() for d in engine.infer(rgb).detections]
    assert peer.masks == {}  # detection publishes no mask
    assert peer.overlays == {}  # publish_overlay is off by default

    diag = peer.latest_diagnostics()
    assert diag["task"] == "detection" and diag["model_id"] == engine.model_id and diag["mode"] == "local"
    assert diag["processor.state"] == "LOCAL" and float(diag["latency_p50_ms"]) > 0
    assert node.stop() == 0


def test_overlay_draws_the_boxes(detector, running):
    from robot_compress.ros.image_msgs import rgb_to_image

    node, peer = running(detector, publish_overlay=True)
    peer.wait_for_node(node)
    scene = _scene(10)
    frames = {_hkey(h): rgb for rgb, h, _ in scene}
    _publish_each_after_the_last_answer(peer, node, [rgb_to_image(rgb, h, encoding="bgr8") for rgb, h, _ in scene])
    peer.wait_until(lambda: len(peer.overlays) >= len(scene), 30, "overlays", node)
    engine = Engine(detector, threads=1)
    drawn = 0
    assert len(peer.results) == len(scene)
    for result in peer.results:
        key = _key(result)
        rgb = frames[key]
        overlay = peer.overlays[key]
        assert overlay.encoding == "rgb8" and _hkey(overlay.header) == key
        assert (overlay.height, overlay.width) == rgb.shape[:2]
        got = np.frombuffer(bytes(overlay.data), np.uint8).reshape(rgb.shape)
        np.testing.assert_array_equal(got, draw_detections(rgb, engine.infer(rgb).detections))
        drawn += bool(result["detections"]) and not np.array_equal(got, rgb)
    assert drawn > 0, "no overlay showed a box"
    assert peer.masks == {}
    assert node.stop() == 0
