"""Edge replicas in the OffloadProcessor: the race across replicas with scripted clients (no network), then a
real Triton server behind two fault proxies (one per replica) at 30 Hz."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from edge_fixtures import assert_answered_in_time, start_server, teacher_and_student

from robot_compress.runtime.edge_client import EdgeClient, EdgeConnectionError, EdgeTimeout
from robot_compress.runtime.engine import Engine
from robot_compress.runtime.failover import EDGE, LOCAL, FailoverConfig
from robot_compress.runtime.offload import EdgeUnavailableError, OffloadProcessor
from robot_compress.runtime.results import InferenceResult
from robot_compress.tools.faultproxy import FaultProxy

FRAME = np.zeros((12, 16, 3), np.uint8)


class ScriptedClient:
    """An EdgeClient stand-in: answers, refuses, or hangs until released (then times out)."""

    def __init__(self, url, behaviour="ok"):
        self.url, self.model, self.top_k = url, "teacher", 5
        self.behaviour = behaviour
        self.calls: list[float] = []
        self.release = threading.Event()

    def infer(self, rgb, timeout_s):
        self.calls.append(time.monotonic())
        if self.behaviour == "refuse":
            raise EdgeConnectionError(f"{self.url}: connection refused")
        if self.behaviour == "hang":
            self.release.wait(timeout_s)
            raise EdgeTimeout(f"{self.url}: no answer")
        return InferenceResult("segmentation", "teacher", "edge")

    def close(self):
        self.release.set()


class CountingEngine:
    model_id, top_k = "student", 5

    def __init__(self):
        self.calls = 0

    def infer(self, rgb, source="local"):
        self.calls += 1
        return InferenceResult("segmentation", "student", source)


def offload(behaviours, mode="auto", **cfg):
    clients = [ScriptedClient(f"http://replica{i}:8000", b) for i, b in enumerate(behaviours)]
    config = FailoverConfig(mode=mode, **{"deadline_s": 30.0, "hedge_after_s": 20.0, "replica_hedge_s": 10.0,
                                          "failure_threshold": 3, **cfg})
    engine = CountingEngine()
    return OffloadProcessor(engine, clients, config), clients, engine


def process(proc):
    now = time.monotonic()
    return proc.process(FRAME, now, now + proc.config.deadline_s)


def test_a_refusing_replica_passes_the_frame_on_at_once_not_after_the_replica_hedge():
    proc, (first, second), engine = offload(["refuse", "ok"])
    t0 = time.monotonic()
    result = process(proc)
    assert result.source == "edge" and result.edge_replica == second.url
    assert time.monotonic() - t0 < 5.0  # the replica hedge is 10 s: it did not wait for it
    assert len(first.calls) == 1 and engine.calls == 0
    proc.close()


def test_a_silent_replica_is_joined_by_the_next_after_the_replica_hedge():
    proc, (first, second), engine = offload(["hang", "ok"], replica_hedge_s=0.05)
    result = process(proc)
    assert result.edge_replica == second.url and engine.calls == 0
    assert second.calls[0] - first.calls[0] >= 0.05  # the next replica waited for its turn
    proc.close()


def test_a_quick_first_replica_leaves_the_others_alone():
    proc, (first, second), _ = offload(["ok", "ok"])
    for _ in range(5):
        assert process(proc).edge_replica == first.url
    assert len(second.calls) == 0
    proc.close()


def test_all_replicas_silent_means_the_local_model_answers_at_the_hedge():
    proc, clients, engine = offload(["hang", "hang"], hedge_after_s=0.1, replica_hedge_s=0.02, deadline_s=5.0)
    result = process(proc)
    assert result.source == "local" and result.edge_replica is None and engine.calls == 1
    assert all(len(c.calls) == 1 for c in clients) and proc.status()["hedged"] == 1
    proc.close()


def test_one_breaker_opens_and_frames_go_to_the_other_replica_first():
    proc, (first, second), engine = offload(["refuse", "ok"], failure_threshold=3, probe_interval_s=60.0,
                                            probe_backoff_max_s=60.0)
    for _ in range(6):
        assert process(proc).edge_replica == second.url
    assert len(first.calls) == 3  # its breaker opened after 3 failures; no probe due within a minute
    st = proc.status()
    assert st["replica0.state"] == LOCAL and st["replica1.state"] == EDGE and st["state"] == EDGE
    assert st["replica1.results"] == 6 and st["results_local"] == 0 and engine.calls == 0
    assert st["edge_urls"] == f"{first.url},{second.url}"
    proc.close()


def test_mode_edge_with_every_replica_refusing_fails_the_frame_naming_them():
    proc, clients, engine = offload(["refuse", "refuse"], mode="edge")
    with pytest.raises(EdgeUnavailableError, match="replica0.*replica1.*refused"):
        process(proc)
    assert engine.calls == 0 and proc.status()["frames_failed"] == 1
    proc.close()


class HeldLock:
    """A lock that knows whether it is held, to check where shared state is touched."""

    def __init__(self):
        self._lock = threading.Lock()
        self.held = False

    def __enter__(self):
        self._lock.acquire()
        self.held = True

    def __exit__(self, *exc):
        self.held = False
        self._lock.release()


class GuardedDict(dict):
    def __init__(self, lock, *args):
        super().__init__(*args)
        self.lock, self.unguarded = lock, []

    def _check(self, what):
        if not self.lock.held:
            self.unguarded.append(what)

    def __setitem__(self, key, value):
        self._check(f"set {key}")
        super().__setitem__(key, value)

    def __getitem__(self, key):
        self._check(f"get {key}")
        return super().__getitem__(key)

    def __iter__(self):
        self._check("iterate")
        return super().__iter__()

    def keys(self):
        self._check("keys")
        return super().keys()


def test_counters_are_only_touched_under_the_processor_lock():
    """The worker counts results while the diagnostics timer reads status(): both under one lock."""
    proc, _, _ = offload(["refuse", "ok"], hedge_after_s=0.1, replica_hedge_s=0.02, deadline_s=5.0)
    lock = HeldLock()
    proc._lock = lock
    proc._counts = GuardedDict(lock, proc._counts)
    reader = threading.Thread(target=lambda: [proc.status() for _ in range(200)])
    reader.start()
    for _ in range(20):
        process(proc)
    reader.join(30)
    assert proc._counts.unguarded == []
    assert proc.status()["results_edge"] == 20
    proc.close()


# ---- a real server behind one fault proxy per replica ---------------------------------------------------
DEADLINE = 0.3
MARGIN = 0.15
REAL_CFG = dict(deadline_s=DEADLINE, hedge_after_s=0.15, replica_hedge_s=0.02, failure_threshold=3,
                recovery_probes=3, probe_interval_s=0.1, probe_backoff_max_s=0.5)
CAMERA = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("replicas")
    teacher, student = teacher_and_student(tmp)
    server = start_server([teacher], tmp)
    yield server, Engine(student)
    server.stop()


@pytest.fixture
def two_links(rig):
    server, engine = rig
    with FaultProxy(server.http_port, max_lifetime_s=120) as a, FaultProxy(server.http_port, max_lifetime_s=120) as b:
        clients = [EdgeClient(p.url, "teacher_seg", engine.meta) for p in (a, b)]
        proc = OffloadProcessor(engine, clients, FailoverConfig(mode="auto", **REAL_CFG))
        yield proc, a, b
        proc.close()


def stream(proc, seconds):
    rows = []
    start = time.monotonic()
    for i in range(int(seconds * 30)):
        time.sleep(max(0.0, start + i / 30 - time.monotonic()))
        received = time.monotonic()
        result = proc.process(CAMERA, received, received + DEADLINE)
        rows.append((result.source, result.edge_replica, result.latency_ms / 1000.0, result.model_id))
    return rows


@pytest.mark.parametrize("fault", ["link_down", "blackhole"])
def test_one_replica_down_the_other_answers_without_local_fallback(two_links, fault):
    proc, a, b = two_links
    healthy = stream(proc, 0.5)
    assert {r[1] for r in healthy if r[0] == "edge"} <= {a.url, b.url}
    getattr(a, fault)()
    during = stream(proc, 1.5)
    assert len(during) == 45
    assert all(r[0] == "edge" and r[3] == "teacher_seg" for r in during), [r[:2] for r in during if r[0] != "edge"]
    assert sum(r[1] == b.url for r in during) >= 40  # the first frames may still be answered through a
    st = proc.status()
    assert st["replica0.state"] in (LOCAL, "PROBING") and st["replica1.state"] == EDGE and st["state"] == EDGE
    assert st["results_local"] == 0


def test_every_replica_down_answers_locally_within_the_deadline(two_links):
    proc, a, b = two_links
    stream(proc, 0.3)
    a.link_down()
    b.blackhole()
    during = stream(proc, 1.5)
    assert all(r[0] == "local" and r[1] is None and r[3] == "student_seg" for r in during)
    assert_answered_in_time([r[2] for r in during], DEADLINE + MARGIN)
    assert proc.state == LOCAL
