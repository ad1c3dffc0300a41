"""Live reconfiguration of a running perception_node over the standard parameter services (`ros2 param set`),
while a camera streams at 30 Hz: the model swaps between frames, the mode changes where frames go, bad values
are refused with their reason, and every frame still gets at most one result."""
from __future__ import annotations

import threading
import time
import uuid

import pytest
from node_harness import NodeParams, NodeProcess, Peer, make_header, synthetic_frame, write_params_file
from rcl_interfaces.msg import ParameterType

from robot_compress.tools.faultproxy import MisbehavingServer
from robot_compress.tools.synthetic_models import make_model

pytestmark = pytest.mark.ros
RATE_HZ = 30
HW = (48, 64)


def _topics(uid):
    return {"input_topic": f"/test_{uid}/image", "result_topic": f"/test_{uid}/result",
            "mask_topic": f"/test_{uid}/mask", "overlay_topic": f"/test_{uid}/overlay"}


@pytest.fixture
def running(tmp_path):
    """A node on model A in mode local, an edge look-alike for mode auto, a peer and a parameter client."""
    model_a = make_model(tmp_path / "a.onnx", input_size=HW, seed=1, model_id="model_a")
    model_b = make_model(tmp_path / "b.onnx", input_size=HW, seed=2, model_id="model_b")
    edge = MisbehavingServer("model_b", HW, 11, kind="valid", max_lifetime_s=300)  # answers model_id "bogus"
    uid = uuid.uuid4().hex[:8]
    name = f"perception_{uid}"
    params = write_params_file(
        tmp_path / "params.yaml", model_path=str(model_a), threads=1, qos_reliability="reliable", qos_depth=10,
        diagnostics_period_s=0.5, mode="local", edge_urls=[edge.url], edge_payload="raw",
        frame_deadline_ms=1000.0, hedge_after_ms=500.0, **_topics(uid))
    node = NodeProcess(params, node_name=name, log_dir=tmp_path)
    topics = _topics(uid)
    peer = Peer(input_topic=topics["input_topic"], result_topic=topics["result_topic"],
                mask_topic=topics["mask_topic"], overlay_topic=topics["overlay_topic"])
    try:
        peer.wait_for_node(node, need_mask=True)
        yield node, peer, NodeParams(peer, name, node), model_b, edge, tmp_path
    finally:
        peer.close()
        node.close()
        edge.close()


class Camera:
    """Publishes frames at 30 Hz from a thread; `index` is the next frame's number."""

    def __init__(self, peer, frames: int):
        from robot_compress.ros.image_msgs import rgb_to_image

        self.messages = [rgb_to_image(synthetic_frame(i % 8, 120, 160), make_header(i)) for i in range(frames)]
        self.peer, self.index = peer, 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        start = time.monotonic()
        for i, msg in enumerate(self.messages):
            time.sleep(max(0.0, start + i / RATE_HZ - time.monotonic()))
            self.peer.publish(msg)
            self.index = i + 1

    def wait_for(self, index, timeout=60):
        deadline = time.monotonic() + timeout
        while self.index < index and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.index >= index

    def join(self):
        self._thread.join(60)


CONFIGURATIONS = ["model_a", "model_b", "edge", "model_b"]  # local A, local B, auto (edge), local B again


def _answered_by(result, edge_url) -> str:
    if result["source"] == "edge":
        assert result["edge_replica"] == edge_url and result["model_id"] == "bogus"
        return "edge"
    assert "edge_replica" not in result
    return result["model_id"]


def _configuration_of_each(labels: list[str]) -> list[int]:
    """Number the runs of equal answers: 0 for the first configuration, 1 for the next, ..."""
    runs = [0]
    for prev, cur in zip(labels, labels[1:], strict=False):
        runs.append(runs[-1] + (cur != prev))
    return runs


def test_mode_and_model_path_change_while_frames_stream(running):
    node, peer, params, model_b, edge, tmp_path = running
    camera = Camera(peer, 150)
    after = {}  # phase -> index of the first frame published after the change was acknowledged

    def change(phase, at, **values):
        camera.wait_for(at)
        results = params.set(**values)
        assert all(r.successful for r in results), [r.reason for r in results]
        after[phase] = camera.index

    change(1, 30, model_path=str(model_b))
    change(2, 60, mode="auto")
    camera.wait_for(90)
    refused = params.set(model_path=str(tmp_path), mode="cloud", input_topic="/elsewhere", hedge_after_ms=5000.0,
                         threads=0)
    reasons = [r.reason for r in refused]
    assert not any(r.successful for r in refused), reasons
    assert "is a directory" in reasons[0] and "'mode' must be one of local, edge, auto" in reasons[1]
    assert "read-only" in reasons[2] and "'hedge_after_ms'" in reasons[3] and "'threads' must be >= 1" in reasons[4]
    assert params.get("model_path", "mode") == {"model_path": str(model_b), "mode": "auto"}
    change(3, 110, mode="local")
    camera.join()
    counts = peer.wait_for_settled(150, node)

    assert counts["frames_in"] == 150 and counts["errors"] == 0 and counts["bad_frames"] == 0
    assert counts["frames_out"] + counts["dropped"] == 150
    results = sorted(peer.results, key=lambda r: r["stamp"]["sec"])
    secs = [r["stamp"]["sec"] for r in results]
    assert len(results) == counts["frames_out"] and len(set(secs)) == len(secs), "one result per frame"
    labels = [_answered_by(r, edge.url) for r in results]
    runs = _configuration_of_each(labels)
    # in frame order, each configuration answers one contiguous stretch: never an older one after a newer one
    assert [labels[runs.index(k)] for k in range(runs[-1] + 1)] == CONFIGURATIONS, labels
    for k, first in after.items():
        later = [run for r, run in zip(results, runs, strict=True) if r["stamp"]["sec"] - 1000 >= first]
        assert later and min(later) >= k, f"frames sent after change {k} answered by an older configuration"
    diag = peer.latest_diagnostics()
    assert diag["model_id"] == "model_b" and diag["mode"] == "local" and diag["processor.state"] == "LOCAL"
    assert node.stop() == 0, node.output


def test_integers_for_float_parameters_at_start_up_and_at_runtime(tmp_path):
    model = make_model(tmp_path / "m.onnx", input_size=(16, 16))
    uid = uuid.uuid4().hex[:8]
    name = f"perception_{uid}"
    # `-p frame_deadline_ms:=100` as the README writes it: an integer on the command line
    node = NodeProcess(write_params_file(tmp_path / "p.yaml", **_topics(uid)), node_name=name, log_dir=tmp_path,
                       params={"model_path": str(model), "frame_deadline_ms": 100, "hedge_after_ms": 40})
    peer = Peer(input_topic=_topics(uid)["input_topic"])
    try:
        params = NodeParams(peer, name, node)
        assert params.get("frame_deadline_ms", "hedge_after_ms") == {"frame_deadline_ms": 100.0,
                                                                     "hedge_after_ms": 40.0}
        assert set(params.types("frame_deadline_ms").values()) == {ParameterType.PARAMETER_DOUBLE}
        assert all(r.successful for r in params.set(frame_deadline_ms=250))
        assert params.get("frame_deadline_ms") == {"frame_deadline_ms": 250.0}
        assert params.types("frame_deadline_ms")["frame_deadline_ms"] == ParameterType.PARAMETER_DOUBLE
        assert node.stop() == 0, node.output
    finally:
        peer.close()
        node.close()
