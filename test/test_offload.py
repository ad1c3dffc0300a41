"""OffloadProcessor end to end: real local Engine, real Triton server behind the fault proxy, 30 Hz frames.

Where timing is not the point (which source answers, what is counted) the processor runs on a fake clock that
moves 1/30 s per frame and stands still within one, so every frame waits for its edge answer and no hedge can
win by accident on a loaded machine. Where timing is the point (switch-over within a deadline, recovery within
2 s, no flapping under stalls) frames come at 30 Hz of wall-clock time, with generous margins (2 shared cores);
counts and order are exact.
"""
from __future__ import annotations

import time

import numpy as np
import pytest
from edge_fixtures import assert_answered_in_time, start_server, teacher_and_student

from robot_compress.runtime.edge_client import EdgeClient
from robot_compress.runtime.engine import Engine
from robot_compress.runtime.failover import EDGE, LOCAL, FailoverConfig
from robot_compress.runtime.offload import EdgeUnavailableError, OffloadProcessor
from robot_compress.tools.faultproxy import FaultProxy, MisbehavingServer
from robot_compress.tools.serve import free_port

DEADLINE = 0.1
MARGIN = 0.15  # scheduling slack on a loaded 2-core machine
CFG = dict(deadline_s=DEADLINE, hedge_after_s=0.04, failure_threshold=3, recovery_probes=3,
           probe_interval_s=0.1, probe_backoff=2.0, probe_backoff_max_s=0.5)
PERIOD = 1 / 30


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("offload")
    teacher, student = teacher_and_student(tmp)
    return tmp, teacher, student


@pytest.fixture(scope="module")
def server(models):
    tmp, teacher, _ = models
    srv = start_server([teacher], tmp)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def engine(models):
    return Engine(models[2])


@pytest.fixture
def proxy(server):
    with FaultProxy(server.http_port, max_lifetime_s=120) as p:
        yield p


def processor(engine, url, mode="auto", clock=time.monotonic, **over):
    client = EdgeClient(url, "teacher_seg", engine.meta)
    return OffloadProcessor(engine, client, FailoverConfig(mode=mode, **{**CFG, **over}), clock=clock)


FRAME = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)


# On the fake clock the edge client still times its sockets in real time (the time left to the deadline): a
# long deadline keeps a slow answer on a loaded machine from turning into a timeout.
PATIENT = dict(deadline_s=5.0, hedge_after_s=4.0)


class FakeClock:
    """Stands still until the test moves it (the processor's own threads only read it)."""

    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def stream_on(clock, proc, frames):
    """`frames` frames 1/30 s apart on the fake clock, back to back in wall time: (source, model_id) each."""
    log = []
    for _ in range(frames):
        received = clock()
        result = proc.process(FRAME, received, received + proc.config.deadline_s)
        log.append((result.source, result.model_id))
        clock.t += PERIOD
    return log


def stream(proc, seconds, log, event=None):
    """Feed 30 Hz frames for `seconds`; log (t_received, source, latency_s, state). Exactly one result each."""
    n = int(round(seconds * 30))
    start = time.monotonic()
    for i in range(n):
        target = start + i * PERIOD
        time.sleep(max(0.0, target - time.monotonic()))
        if event is not None and i == event[0]:
            event[1]()
        received = time.monotonic()
        result = proc.process(FRAME, received, received + DEADLINE)
        assert result is not None and result.source in ("edge", "local")
        log.append((received, result.source, result.latency_ms / 1000.0, proc.state, result.model_id))
    return log


def first_after(log, t, source):
    return next((row for row in log if row[0] >= t and row[1] == source), None)


def test_healthy_link_serves_every_frame_from_the_edge(engine, proxy):
    clock = FakeClock()
    proc = processor(engine, proxy.url, clock=clock, **PATIENT)
    log = stream_on(clock, proc, 30)
    assert log == [("edge", "teacher_seg")] * 30
    assert proc.transitions == [] and proc.status()["results_edge"] == 30
    proc.close()


@pytest.mark.parametrize("fault", ["link_down", "blackhole"])
def test_fault_mid_stream_switches_within_one_deadline_and_recovers_within_2s(engine, proxy, fault):
    proc = processor(engine, proxy.url)
    log = []
    stream(proc, 1.0, log)
    t_fault = time.monotonic()
    getattr(proxy, fault)()
    stream(proc, 2.0, log)
    t_restore = time.monotonic()
    proxy.passthrough()
    stream(proc, 3.0, log)

    assert len(log) == 180  # no frame without a result
    during = [r for r in log if t_fault <= r[0] < t_restore]
    assert all(r[1] == "local" for r in during)
    assert_answered_in_time([r[2] for r in during], DEADLINE + MARGIN)  # from the very first faulty frame
    assert proc.transitions[0].from_state == EDGE and proc.transitions[0].to == LOCAL
    back = first_after(log, t_restore, "edge")
    assert back is not None and back[0] - t_restore <= 2.0 + MARGIN
    assert proc.state == EDGE and log[-1][1] == "edge"
    assert [t.to for t in proc.transitions][-1] == EDGE
    kind = "failures_connect" if fault == "link_down" else "failures_timeout"
    assert proc.status()[kind] >= CFG["failure_threshold"]
    proc.close()


def test_twenty_percent_stalls_do_not_flap(engine, proxy):
    proc = processor(engine, proxy.url, failure_threshold=5)
    proxy.stalls(0.2, stall_s=0.5)
    log = stream(proc, 5.0, [])
    assert len(log) == 150
    assert proxy.stalled >= 10  # the stalls really happened
    assert len(proc.transitions) <= 6, [f"{t.from_state}->{t.to}" for t in proc.transitions]
    assert sum(r[1] == "edge" for r in log) >= 0.5 * len(log)
    assert_answered_in_time([r[2] for r in log], DEADLINE + MARGIN)
    proc.close()


def test_garbage_response_is_a_counted_failure_and_the_frame_is_answered_locally(engine):
    with MisbehavingServer("teacher_seg", (96, 128), engine.meta.num_classes, kind="bad_class") as bad:
        clock = FakeClock()
        proc = processor(engine, bad.url, clock=clock, **PATIENT)
        log = stream_on(clock, proc, 15)
        assert [source for source, _ in log] == ["local"] * 15
        st = proc.status()
        assert st["failures_invalid"] >= CFG["failure_threshold"] and st["state"] in ("LOCAL", "PROBING")
        assert st["transitions"] >= 1 and "class id" in st["last_edge_error"]
        proc.close()


def test_mode_local_never_touches_the_network(engine, proxy):
    """Mode local is answered by the LocalProcessor alone: no edge client is even built."""
    from robot_compress.ros.parameters import PARAMETERS
    from robot_compress.ros.perception_core import make_processor
    from robot_compress.runtime.processor import LocalProcessor

    params = {**{p.name: p.default for p in PARAMETERS}, "mode": "local", "edge_urls": [proxy.url]}
    proc = make_processor(engine, params)
    assert isinstance(proc, LocalProcessor)
    now = time.monotonic()
    assert all(proc.process(FRAME, now, now + DEADLINE).source == "local" for _ in range(15))
    assert proxy.connections == 0 and proxy.requests == 0
    proc.close()


def test_mode_edge_without_server_fails_each_frame_clearly(engine):
    url = f"http://127.0.0.1:{free_port()}"
    clock = FakeClock()
    proc = processor(engine, url, mode="edge", clock=clock, **PATIENT)
    for _ in range(5):
        with pytest.raises(EdgeUnavailableError, match=f"mode=edge.*{url}.*(Connection|refused)"):
            proc.process(FRAME, clock(), clock() + proc.config.deadline_s)
        clock.t += PERIOD
    assert proc.status()["frames_failed"] == 5
    assert proc.status()["results_local"] == 0
    proc.close()


def test_server_crash_and_restart_recovers_without_restarting_the_processor(engine, server, proxy):
    proc = processor(engine, proxy.url)
    log = []
    stream(proc, 0.5, log)
    t_kill = time.monotonic()
    server.kill()
    stream(proc, 1.0, log)
    assert all(r[1] == "local" for r in log if r[0] >= t_kill)
    assert proc.state in ("LOCAL", "PROBING")
    server.start()  # same ports, a fresh process
    t_up = time.monotonic()
    stream(proc, 3.0, log)
    assert len(log) == 15 + 30 + 90
    back = first_after(log, t_up, "edge")
    assert back is not None and back[0] - t_up <= 2.0 + MARGIN
    assert proc.state == EDGE
    proc.close()
