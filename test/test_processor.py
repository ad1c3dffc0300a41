"""Node internals without ROS: the latest-wins slot, frame statistics, the local FrameProcessor."""
import inspect
import threading

import numpy as np
import pytest

from robot_compress.runtime.engine import Engine
from robot_compress.runtime.latest_slot import LatestSlot
from robot_compress.runtime.processor import FrameProcessor, LocalProcessor
from robot_compress.runtime.stats import FrameStats


def test_slot_latest_wins_and_reports_drops():
    slot = LatestSlot()
    assert slot.put("a") is False
    assert slot.put("b") is True  # "a" was never taken: a drop
    assert slot.take(0) == (True, "b")
    assert slot.take(0) == (False, None)
    assert slot.put("c") is False


def test_slot_close_wakes_a_waiting_worker():
    slot = LatestSlot()
    got = []
    worker = threading.Thread(target=lambda: got.append(slot.take(timeout=30)))
    worker.start()
    slot.close()
    worker.join(10)
    assert not worker.is_alive() and got == [(False, None)]


def test_slot_hands_out_pending_frame_after_close():
    slot = LatestSlot()
    slot.put("last")
    slot.close()
    assert slot.take(0) == (True, "last")


class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_stats_counters_percentiles_and_rate():
    clock = FakeClock()
    stats = FrameStats(rate_window_s=2.0, clock=clock)
    for i, latency in enumerate([10.0, 20.0, 30.0, 40.0]):
        clock.t = 100.0 + 0.5 * (i + 1)
        stats.count("frames_in")
        stats.result(latency)
    stats.count("dropped", 2)
    snap = stats.snapshot()
    assert (snap["frames_in"], snap["frames_out"], snap["dropped"], snap["bad_frames"]) == (4, 4, 2, 0)
    assert snap["latency_p50_ms"] == pytest.approx(25.0)
    assert snap["latency_p95_ms"] == pytest.approx(38.5)
    assert snap["fps"] == pytest.approx(4 / 2.0)  # results at t=100.5..102.0, window 2 s
    clock.t = 110.0  # nothing for a while: rate falls to zero, counters stay
    later = stats.snapshot()
    assert later["fps"] == 0.0 and later["frames_out"] == 4


def test_stats_empty_snapshot_is_zero():
    snap = FrameStats().snapshot()
    assert snap["latency_p50_ms"] == 0.0 and snap["fps"] == 0.0 and snap["frames_out"] == 0


def test_local_processor_has_the_protocol_signatures():
    for name in ("process", "status", "close"):
        assert inspect.signature(getattr(LocalProcessor, name)) == inspect.signature(getattr(FrameProcessor, name))


def test_local_processor_matches_engine_and_measures_from_receipt(seg_model):
    engine = Engine(seg_model)
    clock = FakeClock()
    proc = LocalProcessor(engine, clock=clock)
    rgb = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    result = proc.process(rgb, received_monotonic=99.5, deadline_at=99.6)  # clock says 100.0: a miss
    np.testing.assert_array_equal(result.mask, Engine(seg_model).infer(rgb).mask)
    assert result.source == "local"
    assert result.latency_ms == pytest.approx(500.0)
    proc.process(rgb, received_monotonic=99.9, deadline_at=101.0)
    status = proc.status()
    assert status["state"] == "LOCAL" and status["local_frames"] == 2 and status["deadline_misses"] == 1
