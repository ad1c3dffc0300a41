"""The failover policy on a fake clock: transition table, hysteresis, backoff, hedging, no flapping."""
from __future__ import annotations

import random

import pytest

from robot_compress.runtime.failover import (
    CONNECT,
    EDGE,
    INVALID,
    LOCAL,
    OK,
    PROBING,
    TIMEOUT,
    FailoverConfig,
    FailoverPolicy,
    ReplicaSet,
)


class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t

    def advance(self, dt):
        self.t += dt


def make(**cfg):
    clock = FakeClock()
    seen = []
    policy = FailoverPolicy(FailoverConfig(**cfg), clock=clock, listener=seen.append)
    return policy, clock, seen


def drive(policy, clock, link_ok, frames, period=1 / 30):
    """Run frames through the policy as the offload processor would; link_ok(i, kind) -> bool."""
    plans = []
    for i in range(frames):
        plan = policy.plan()
        plans.append(plan)
        if plan.send_edge:
            policy.on_edge_result(OK if link_ok(i, "edge") else TIMEOUT, plan)
        if plan.probe:
            policy.on_probe_result(OK if link_ok(i, "probe") else CONNECT)
        clock.advance(period)
    return plans


def test_config_rejects_bad_values_with_named_parameter():
    for kwargs, word in [({"mode": "cloud"}, "mode"), ({"deadline_s": 0}, "deadline_s"),
                         ({"hedge_after_s": 1.0}, "hedge_after_s"), ({"failure_threshold": 0}, "failure_threshold"),
                         ({"recovery_probes": 0}, "recovery_probes"), ({"probe_backoff": 0.5}, "probe_backoff")]:
        with pytest.raises(ValueError, match=word):
            FailoverConfig(**kwargs)


def test_healthy_edge_stays_on_edge_with_hedge_at_hedge_after():
    policy, clock, seen = make(hedge_after_s=0.01, deadline_s=0.033)
    plans = drive(policy, clock, lambda i, k: True, 100)
    assert all(p.send_edge and not p.probe for p in plans)
    assert all(p.hedge_at == pytest.approx(p.deadline_at - 0.033 + 0.01) for p in plans)
    assert policy.state == EDGE and seen == []
    assert policy.counts["edge_ok"] == 100


def test_breaker_opens_after_exactly_n_consecutive_failures():
    policy, clock, seen = make(failure_threshold=3)
    for _ in range(2):
        policy.on_edge_result(TIMEOUT, policy.plan())
    assert policy.state == EDGE
    policy.on_edge_result(OK, policy.plan())  # a success resets the count
    for _ in range(2):
        policy.on_edge_result(INVALID, policy.plan())
    assert policy.state == EDGE
    policy.on_edge_result(CONNECT, policy.plan())
    assert policy.state == LOCAL
    assert [(t.from_state, t.to) for t in seen] == [(EDGE, LOCAL)]
    assert "3 consecutive" in seen[0].reason and "connect" in seen[0].reason
    assert policy.failures_by_kind == {"timeout": 2, "connect": 1, "invalid": 2, "server_error": 0}
    # while open, frames go local and no edge primary is sent
    plan = policy.plan()
    assert not plan.send_edge and plan.local_now


def test_full_transition_table_edge_local_probing_edge():
    policy, clock, seen = make(failure_threshold=2, recovery_probes=3, probe_interval_s=0.2)
    # outage from frame 10 to frame 60, then healthy
    plans = drive(policy, clock, lambda i, k: not (10 <= i < 60), 150)
    assert [(t.from_state, t.to) for t in seen] == [(EDGE, LOCAL), (LOCAL, PROBING), (PROBING, EDGE)]
    assert policy.state == EDGE and len(plans) == policy.counts["frames"] == 150


def test_failed_probe_in_probing_falls_back_and_hysteresis_needs_m_in_a_row():
    policy, clock, seen = make(failure_threshold=1, recovery_probes=3, probe_interval_s=0.1)
    policy.on_edge_result(TIMEOUT, policy.plan())
    results = iter([OK, OK, TIMEOUT, OK, OK, OK])
    for _ in range(6):
        clock.advance(5.0)  # make sure a probe is due
        plan = policy.plan()
        assert plan.probe
        policy.on_probe_result(next(results))
    assert [(t.from_state, t.to) for t in seen] == [(EDGE, LOCAL), (LOCAL, PROBING), (PROBING, LOCAL),
                                             (LOCAL, PROBING), (PROBING, EDGE)]


def test_probe_backoff_grows_to_cap_and_only_one_probe_in_flight():
    policy, clock, _ = make(failure_threshold=1, probe_interval_s=0.1, probe_backoff=2.0, probe_backoff_max_s=0.5)
    policy.on_edge_result(CONNECT, policy.plan())
    gaps = []
    last_probe = clock()
    for _ in range(600):
        clock.advance(0.01)
        plan = policy.plan()
        if plan.probe:
            assert not policy.plan().probe  # a second frame while the probe is in flight gets none
            gaps.append(round(clock() - last_probe, 2))
            last_probe = clock()
            policy.on_probe_result(TIMEOUT)
    assert gaps[:4] == [0.1, 0.2, 0.4, 0.5]
    assert set(gaps[3:]) == {0.5}


def test_recovery_time_is_bounded_by_backoff_cap_plus_m_intervals():
    policy, clock, seen = make(failure_threshold=3, recovery_probes=3, probe_interval_s=0.2, probe_backoff_max_s=1.0)
    period = 1 / 30
    restored_at_frame = 30 * 20  # a 20 s outage drives the backoff to its cap
    drive(policy, clock, lambda i, k: i < 30 or i >= restored_at_frame, restored_at_frame + 120)
    back = [t for t in seen if t.to == EDGE]
    assert len(back) == 1
    restored_at = 100.0 + restored_at_frame * period
    assert back[0].at - restored_at <= 1.0 + 3 * 0.2 + 2 * period


def test_no_flapping_under_twenty_percent_random_stalls():
    policy, clock, seen = make(failure_threshold=5, recovery_probes=3)
    rng = random.Random(7)
    frames = 30 * 60  # one minute at 30 Hz
    plans = drive(policy, clock, lambda i, k: rng.random() >= 0.2, frames)
    # 0.2**5 per frame: expected ~0.6 trips a minute; a naive "switch on every failure" flips ~360 times.
    assert len(seen) <= 6
    assert policy.counts["edge_failed"] > 200  # the stalls really happened
    assert sum(p.send_edge for p in plans) > 0.9 * frames


def test_mode_local_has_no_policy():
    """Mode local is the LocalProcessor's: no breaker, no plan; a policy refuses it, pointing there."""
    with pytest.raises(ValueError, match="LocalProcessor"):
        FailoverConfig(mode="local")


def test_mode_edge_never_hedges_nor_opens_the_breaker():
    policy, clock, seen = make(mode="edge", failure_threshold=1)
    plans = drive(policy, clock, lambda i, k: False, 100)
    assert all(p.send_edge and p.hedge_at is None and not p.probe for p in plans)
    assert policy.state == EDGE and seen == []
    assert policy.counts["edge_failed"] == 100


def test_late_failures_after_breaker_opened_do_not_add_transitions():
    policy, clock, seen = make(failure_threshold=2)
    in_flight = [policy.plan() for _ in range(6)]
    for plan in in_flight:
        policy.on_edge_result(TIMEOUT, plan)
    assert [(t.from_state, t.to) for t in seen] == [(EDGE, LOCAL)]


def test_unknown_outcome_is_rejected():
    policy, _, _ = make()
    with pytest.raises(ValueError, match="unknown edge outcome"):
        policy.on_edge_result("maybe", policy.plan())


def test_status_reports_state_and_counters():
    policy, clock, _ = make(failure_threshold=1)
    policy.on_edge_result(TIMEOUT, policy.plan())
    st = policy.status()
    assert st["state"] == LOCAL and st["transitions"] == 1 and st["edge_failed"] == 1
    assert st["last_transition"].startswith("EDGE->LOCAL")


# ---- edge replicas: one breaker each, staggered sends, local model last --------------------------------
def replicas(n=2, **cfg):
    clock = FakeClock()
    seen = []
    rs = ReplicaSet(n, FailoverConfig(**{"deadline_s": 0.1, "hedge_after_s": 0.04, "replica_hedge_s": 0.01, **cfg}),
                    clock=clock,
                    listener=lambda i, t: seen.append((i, t.from_state, t.to)))
    return rs, clock, seen


def test_one_replica_plans_like_the_single_policy():
    rs, clock, _ = replicas(1)
    single, _, _ = make(deadline_s=0.1, hedge_after_s=0.04, replica_hedge_s=0.01)
    plan, ref = rs.plan(), single.plan()
    assert plan.sends == ((0, clock()),) and plan.hedge_at == ref.hedge_at and not plan.probes


def test_frame_goes_to_replicas_in_turn_before_the_local_hedge():
    rs, clock, _ = replicas(3, replica_hedge_s=0.015)
    plan = rs.plan()
    t0 = clock()
    assert plan.sends == ((0, t0), (1, pytest.approx(t0 + 0.015)), (2, pytest.approx(t0 + 0.03)))
    assert plan.hedge_at == pytest.approx(t0 + 0.04)
    rs, clock, _ = replicas(3, replica_hedge_s=0.025)  # a third turn would come after the local hedge
    assert [i for i, _ in rs.plan().sends] == [0, 1]
    rs, clock, _ = replicas(2, replica_hedge_s=0.04)   # replica hedge >= local hedge: replicas only fail over
    assert [i for i, _ in rs.plan().sends] == [0]


def test_each_replica_has_its_own_breaker_and_probing():
    rs, clock, seen = replicas(2, failure_threshold=2, probe_interval_s=0.1)
    for _ in range(2):
        rs.plan()
        rs.policies[0].on_edge_result(CONNECT)
    assert seen == [(0, EDGE, LOCAL)]
    assert rs.state == EDGE and rs.policies[1].state == EDGE  # replica 1 still takes frames
    plan = rs.plan()
    assert [i for i, _ in plan.sends] == [1] and plan.sends[0][1] == clock()  # the next one is first now
    assert plan.probes == ()                                                  # not due yet
    clock.advance(0.1)
    plan = rs.plan()
    assert plan.probes == (0,) and [i for i, _ in plan.sends] == [1]
    assert rs.plan().probes == ()  # one probe in flight per replica
    rs.policies[0].on_probe_result(OK)
    assert rs.policies[0].state == PROBING and rs.state == EDGE


def test_all_breakers_open_answers_locally_at_once_and_probes_each():
    rs, clock, _ = replicas(2, failure_threshold=1, probe_interval_s=0.1)
    for i in (0, 1):
        rs.policies[i].on_edge_result(TIMEOUT)
    assert rs.state == LOCAL
    plan = rs.plan()
    assert plan.local_now and plan.hedge_at == clock() and plan.sends == ()
    clock.advance(0.1)
    assert rs.plan().probes == (0, 1)
    st = rs.status()
    assert st["state"] == LOCAL and st["transitions"] == 2 and st["probes_sent"] == 2
    assert st["last_transition"].startswith("replica ") and st["failures_by_kind"]["timeout"] == 2


def test_mode_edge_sends_to_every_replica_in_turn_and_never_hedges_locally():
    rs, clock, _ = replicas(2, mode="edge", failure_threshold=1)
    for _ in range(3):
        rs.policies[0].on_edge_result(CONNECT)
    plan = rs.plan()
    assert [i for i, _ in plan.sends] == [0, 1] and plan.hedge_at is None


def test_replica_hedge_is_validated():
    with pytest.raises(ValueError, match="replica_hedge_s"):
        FailoverConfig(deadline_s=0.1, replica_hedge_s=0.2)
    with pytest.raises(ValueError, match="at least one"):
        ReplicaSet(0, FailoverConfig())
