"""Replay bags through perception_node (started as launch starts it) and check what comes back."""
from __future__ import annotations

import json

import numpy as np
import pytest
from node_harness import NodeProcess, synthetic_frame, write_params_file

from robot_compress.runtime.engine import Engine
from robot_compress.tools import bags
from robot_compress.tools.replay import REPLAY_INFO_TOPIC, default_record_topics, replay, replay_info

pytestmark = pytest.mark.ros

N_FRAMES = 24
MASK, RESULT = "/perception/mask", "/perception/result"


def _start_node(tmp_path, model, input_topic, compressed):
    params = write_params_file(
        tmp_path / "params.yaml", model_path=str(model), input_topic=input_topic, compressed_input=compressed,
        qos_reliability="reliable", qos_depth=50, threads=1, mode="local", diagnostics_period_s=0.5)
    return NodeProcess(params, log_dir=tmp_path)


def _results_by_key(report):
    return [json.loads(m.data) for m in report.messages(RESULT)]


@pytest.mark.parametrize("storage,fmt", [("sqlite3", "rgb8"), ("mcap", "jpeg")])
def test_replay_through_node(tmp_path, seg_model, storage, fmt):
    bag = tmp_path / "in"
    frames = [synthetic_frame(i, 96, 128) for i in range(N_FRAMES)]
    bags.write_frames(bag, frames, topic="/cam/image", rate_hz=30.0, frame_id="cam_front", fmt=fmt,
                      storage=storage, info={"source": "test"})
    out = tmp_path / "out"
    with _start_node(tmp_path, seg_model, "/cam/image", fmt == "jpeg") as node:
        # Half speed (15 Hz) and reliable QoS: the latest-frame-wins node keeps up with a tiny model.
        report = replay(bag, out, rate=0.5, wait_timeout_s=60, drain_s=10, storage=storage)
        assert node.alive(), node.output

    assert report.frames_published == N_FRAMES
    assert report.drained, f"only {report.counts} for {N_FRAMES} frames"
    results = _results_by_key(report)
    masks = report.messages(MASK)
    sent = [(stamp, fid) for _, stamp, fid in report.published]
    # One result and one mask per frame, in publishing order, headers preserved.
    assert [(r["stamp"]["sec"] * 10**9 + r["stamp"]["nanosec"], r["frame_id"]) for r in results] == sent
    assert [(bags.stamp_to_ns(m.header.stamp), m.header.frame_id) for m in masks] == sent
    assert sent[0] == (1_000_000_000, "cam_front") and {r["source"] for r in results} == {"local"}

    # Masks bit-identical to calling Engine directly on the frames as stored in the bag.
    engine = Engine(seg_model, threads=1)
    stored = bags.read_frames(bag)
    for frame, mask in zip(stored, masks, strict=True):
        expected = engine.infer(frame.rgb).mask
        np.testing.assert_array_equal(bags.mono8_to_array(mask), expected)

    # The output bag holds the same outputs, the provenance and the replay record.
    with bags.BagReader(out) as reader:
        topics = reader.topics
        assert topics[MASK].count == N_FRAMES and topics[RESULT].count == N_FRAMES
        assert topics["/diagnostics"].count >= 1
        assert topics[bags.INFO_TOPIC].count == 1 and topics[REPLAY_INFO_TOPIC].count == 1
        assert reader.info()["source"] == "test"
        # Output times are on the source bag's timeline: within the replayed span plus processing.
        times = [t for topic, _, t, _ in reader.messages([RESULT])]
        assert times == sorted(times) and 1_000_000_000 <= times[0] < times[-1] < 5_000_000_000
    info = replay_info(out)
    assert info["frames_published"] == N_FRAMES and info["drained"] is True


def test_loop_remap_offset_and_clock(tmp_path, seg_model):
    bag = tmp_path / "in"
    bags.write_frames(bag, [synthetic_frame(i, 48, 64) for i in range(10)], topic="/recorded/image",
                      rate_hz=20.0, frame_id="cam")
    record = default_record_topics()
    record["/clock"] = bags.CLOCK
    with _start_node(tmp_path, seg_model, "/live/image", False) as node:
        report = replay(bag, None, rate=0.5, loops=2, start_offset_s=0.2, remap={"/recorded/image": "/live/image"},
                        clock=True, record=record, wait_timeout_s=60, drain_s=10)
        assert node.alive(), node.output
    # Offset 0.2 s at 20 Hz skips 4 frames; two loops of the remaining 6, the second re-stamped.
    assert report.frames_published == 12 and {t for t, _, _ in report.published} == {"/live/image"}
    stamps = [s for _, s, _ in report.published]
    assert len(set(stamps)) == 12 and stamps == sorted(stamps)
    assert stamps[0] == 1_200_000_000 and stamps[6] - stamps[0] == 6 * 50_000_000
    assert report.drained and len(_results_by_key(report)) == 12
    clocks = [bags.stamp_to_ns(m.clock) for m in report.messages("/clock")]
    assert clocks == stamps


def test_no_subscriber_is_a_clear_error(tmp_path):
    from robot_compress.tools.replay import ReplayError

    bag = tmp_path / "in"
    bags.write_frames(bag, [synthetic_frame(0, 16, 16)], topic="/nobody/listens")
    with pytest.raises(ReplayError, match="no subscriber on /nobody/listens"):
        replay(bag, None, wait_timeout_s=2)


def test_message_type_mismatch_is_named(tmp_path, seg_model):
    """A JPEG bag into a node that subscribes raw Image: the error says which types disagree."""
    from robot_compress.tools.replay import ReplayError

    bag = tmp_path / "in"
    bags.write_frames(bag, [synthetic_frame(0, 16, 16)], topic="/cam/image", fmt="jpeg")
    with _start_node(tmp_path, seg_model, "/cam/image", compressed=False):
        with pytest.raises(ReplayError, match="subscribers of type sensor_msgs/msg/Image but the bag holds "
                                              "sensor_msgs/msg/CompressedImage"):
            replay(bag, None, wait_timeout_s=5)


@pytest.mark.slow
def test_replay_with_edge_link_drop(tmp_path):
    """mode auto through the fault proxy: the link drops for the middle third of the bag and comes back."""
    from edge_fixtures import start_server, teacher_and_student

    from robot_compress.tools.faultproxy import FaultProxy

    teacher, student = teacher_and_student(tmp_path)
    server = start_server([teacher], tmp_path)
    bag = tmp_path / "in"
    bags.write_frames(bag, [synthetic_frame(i % 8, 120, 160) for i in range(90)], topic="/drop/image",
                      rate_hz=30.0, frame_id="cam")
    try:
        with FaultProxy(server.http_port, max_lifetime_s=300) as proxy:
            params = write_params_file(
                tmp_path / "params.yaml", model_path=str(student), input_topic="/drop/image", threads=1,
                qos_reliability="reliable", qos_depth=10, diagnostics_period_s=0.5, mode="auto", edge_url=proxy.url,
                edge_model="teacher_seg", frame_deadline_ms=100.0, hedge_after_ms=40.0, failure_threshold=3,
                recovery_probes=3, probe_interval_ms=100.0, probe_backoff_max_ms=500.0)

            def link(index, total):
                if index == 30:
                    proxy.link_down()
                elif index == 60:
                    proxy.passthrough()

            with NodeProcess(params, log_dir=tmp_path) as node:
                # Half the camera rate leaves margin on a loaded 2-core machine (latest-frame-wins drops).
                report = replay(bag, None, rate=0.5, on_frame=link, wait_timeout_s=60, drain_s=10)
                assert node.alive(), node.output
    finally:
        server.stop()
    results = _results_by_key(report)
    sent = [(stamp, fid) for _, stamp, fid in report.published]
    assert report.drained and len(results) == 90, f"{len(results)} results for 90 frames: {report.counts}"
    assert [(r["stamp"]["sec"] * 10**9 + r["stamp"]["nanosec"], r["frame_id"]) for r in results] == sent
    sources = [r["source"] for r in results]
    assert set(sources) == {"edge", "local"}, sources
    assert "edge" in sources[:30], "healthy link: the edge answers"
    assert set(sources[40:60]) == {"local"}, f"link down: local answers every frame: {sources}"
