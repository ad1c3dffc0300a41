"""perception_lifecycle_node driven through every transition over the standard lifecycle_msgs services
(ChangeState / GetState), as a lifecycle manager brings nodes up in a navigation stack."""
from __future__ import annotations

import uuid

import pytest
from lifecycle_msgs.msg import Transition
from node_harness import (
    LIFECYCLE_MODULE,
    Lifecycle,
    NodeParams,
    NodeProcess,
    Peer,
    make_header,
    synthetic_frame,
    write_params_file,
)

from robot_compress.tools.serve import free_port
from robot_compress.tools.synthetic_models import make_model

pytestmark = pytest.mark.ros


def _start(tmp_path, **params):
    uid = uuid.uuid4().hex[:8]
    name = f"perception_{uid}"
    topics = {"input_topic": f"/test_{uid}/image", "result_topic": f"/test_{uid}/result",
              "mask_topic": f"/test_{uid}/mask", "overlay_topic": f"/test_{uid}/overlay"}
    params_file = write_params_file(tmp_path / f"{uid}.yaml", threads=1, qos_reliability="reliable", qos_depth=10,
                                    diagnostics_period_s=0.3, **{**topics, **params})
    node = NodeProcess(params_file, module=LIFECYCLE_MODULE, node_name=name, log_dir=tmp_path)
    peer = Peer(input_topic=topics["input_topic"], result_topic=topics["result_topic"],
                mask_topic=topics["mask_topic"], overlay_topic=topics["overlay_topic"])
    return node, peer, Lifecycle(peer, name, node), NodeParams(peer, name, node)


def _send(peer, first, count):
    from robot_compress.ros.image_msgs import rgb_to_image

    for i in range(first, first + count):
        peer.publish(rgb_to_image(synthetic_frame(i % 4, 60, 80), make_header(i)))
        peer.wait_until(lambda i=i: any(r["stamp"]["sec"] == 1000 + i for r in peer.results), 30, f"result {i}")


def _subscribed(peer) -> bool:
    return peer.publisher.get_subscription_count() >= 1


def _publishing(peer) -> bool:
    return peer.subs[0].get_publisher_count() >= 1


def test_every_transition_over_lifecycle_services(tmp_path):
    model = make_model(tmp_path / "seg.onnx", input_size=(48, 64), model_id="seg_model")
    node, peer, lifecycle, params = _start(tmp_path, model_path=str(tmp_path / "not_there.onnx"))
    try:
        assert lifecycle.state == "unconfigured"
        assert not _subscribed(peer) and not _publishing(peer)

        # configure loads the model: a missing one fails the transition and leaves the node unconfigured
        assert lifecycle.transition(Transition.TRANSITION_CONFIGURE) is False
        assert lifecycle.state == "unconfigured" and "model file not found" in node.output
        assert params.set(model_path=str(model))[0].successful
        assert lifecycle.transition(Transition.TRANSITION_CONFIGURE)
        assert lifecycle.state == "inactive"
        peer.wait_until(lambda: _publishing(peer), 30, "the result publisher", node)
        assert not _subscribed(peer), "an inactive node must not take camera frames"

        assert lifecycle.transition(Transition.TRANSITION_ACTIVATE) and lifecycle.state == "active"
        peer.wait_until(lambda: _subscribed(peer), 30, "the camera subscription", node)
        _send(peer, 0, 3)

        # deactivate stops taking frames but keeps the model, the processor and the counters
        assert lifecycle.transition(Transition.TRANSITION_DEACTIVATE) and lifecycle.state == "inactive"
        peer.wait_until(lambda: not _subscribed(peer), 30, "the camera subscription to go", node)
        assert params.set(mode="local", top_k=3)[0].successful  # parameters still change while inactive
        assert lifecycle.transition(Transition.TRANSITION_ACTIVATE)
        peer.wait_until(lambda: _subscribed(peer), 30, "the camera subscription to come back", node)
        _send(peer, 3, 3)
        peer.wait_until(lambda: int(peer.latest_diagnostics().get("frames_out", 0)) == 6, 30,
                        "counters kept across deactivate", node)
        assert peer.latest_diagnostics()["model_id"] == "seg_model"

        # cleanup releases the model and the publishers; configure + activate bring it all back
        assert lifecycle.transition(Transition.TRANSITION_DEACTIVATE)
        assert lifecycle.transition(Transition.TRANSITION_CLEANUP) and lifecycle.state == "unconfigured"
        peer.wait_until(lambda: not _publishing(peer), 30, "the publishers to go", node)
        assert lifecycle.transition(Transition.TRANSITION_CONFIGURE)
        assert lifecycle.transition(Transition.TRANSITION_ACTIVATE)
        peer.wait_until(lambda: _subscribed(peer) and _publishing(peer), 30, "the node back up", node)
        _send(peer, 6, 2)
        results = list(peer.results)
        assert sorted(r["stamp"]["sec"] - 1000 for r in results) == list(range(8)), "one result per frame"

        # shutdown from active ends the process
        assert lifecycle.transition(Transition.TRANSITION_ACTIVE_SHUTDOWN)
        assert node.wait(30) == 0, node.output
        assert "Traceback" not in node.output
    finally:
        peer.close()
        node.close()


@pytest.mark.parametrize("path", ["inactive", "unconfigured"])
def test_shutdown_from_inactive_and_unconfigured_exits_0(tmp_path, path):
    model = make_model(tmp_path / "seg.onnx", input_size=(16, 16))
    node, peer, lifecycle, _ = _start(tmp_path, model_path=str(model))
    try:
        if path == "inactive":
            assert lifecycle.transition(Transition.TRANSITION_CONFIGURE) and lifecycle.state == "inactive"
            assert lifecycle.transition(Transition.TRANSITION_INACTIVE_SHUTDOWN)
        else:
            assert lifecycle.transition(Transition.TRANSITION_UNCONFIGURED_SHUTDOWN)
        assert node.wait(30) == 0, node.output
    finally:
        peer.close()
        node.close()


def test_configure_in_mode_edge_checks_the_edge(tmp_path):
    model = make_model(tmp_path / "seg.onnx", input_size=(16, 16))
    nowhere = f"http://127.0.0.1:{free_port()}"
    node, peer, lifecycle, params = _start(tmp_path, model_path=str(model), mode="edge", edge_urls=[nowhere])
    try:
        assert lifecycle.transition(Transition.TRANSITION_CONFIGURE) is False
        assert lifecycle.state == "unconfigured"
        assert "not ready on " + nowhere in node.output and "mode edge has no local fallback" in node.output
        assert params.set(mode="auto")[0].successful  # auto falls back locally: configure goes through, warning
        assert lifecycle.transition(Transition.TRANSITION_CONFIGURE) and lifecycle.state == "inactive"
        assert node.stop() == 0, node.output
    finally:
        peer.close()
        node.close()
