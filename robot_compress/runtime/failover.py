"""Edge/local failover policy: pure decisions, no I/O, injected clock.

The offload processor (runtime/offload.py) asks this policy what to do with each frame and reports
what happened; the policy never touches a socket or a model. Deciding apart from doing keeps every
transition testable with a fake clock.

Modes (`mode` parameter; MODES below):
  local  every frame is answered by the local model; the network is never touched (runtime/processor.py's
         LocalProcessor: no policy at all).
  edge   every frame goes to the edge only; no hedging, no breaker; a failed frame is reported as failed.
  auto   the state machine below.

States of `auto` (circuit breaker with hysteresis):

| state   | frames go to                       | event                       | next state / effect                     |
|---------|------------------------------------|-----------------------------|-----------------------------------------|
| EDGE    | edge; local starts at hedge_after  | edge ok                     | EDGE, failures = 0                      |
| EDGE    |                                    | edge failure, failures < N  | EDGE, failures += 1                     |
| EDGE    |                                    | edge failure, failures == N | LOCAL, next probe at now + backoff      |
| LOCAL   | local; a probe when one is due     | probe ok                    | PROBING (healthy = 1); EDGE when M == 1 |
| LOCAL   |                                    | probe failure               | LOCAL, backoff *= probe_backoff, capped |
| PROBING | local; a probe every interval      | probe ok, healthy < M       | PROBING, healthy += 1                   |
| PROBING |                                    | probe ok, healthy == M      | EDGE, failures = 0, backoff reset       |
| PROBING |                                    | probe failure               | LOCAL, backoff *= probe_backoff, capped |

N = failure_threshold (consecutive edge failures), M = recovery_probes (consecutive healthy probes).
A probe is a real inference request on the current frame, sent in the background while the frame is
answered locally, so "healthy" means link, server, model and response format all work within the
frame deadline. Failed probes while LOCAL do not change state, so an outage costs one transition out
and one (or two) back, however long it lasts.

Edge replicas (`ReplicaSet`, below): each replica has a policy of its own (the table above, per replica). A
frame goes to the first replica whose breaker is closed and, if unanswered after `replica_hedge_s`, to the next
one too, before the local model starts at `hedge_after_s`; the first valid answer wins. The local model stays
the last line: with every breaker open it answers at once, while open replicas are probed in the background.

Every frame gets exactly one plan (`RacePlan` from the ReplicaSet; `FramePlan` is the single-breaker view of
the same decision). Hedging means a result is on time even while the breaker is still closed: the edge answer
is used if it arrives before local finishes, else the local one.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

OFFLOAD_MODES = ("edge", "auto")  # the modes a policy (and the OffloadProcessor) serves
MODES = ("local", *OFFLOAD_MODES)  # the node's `mode` parameter
EDGE, LOCAL, PROBING = "EDGE", "LOCAL", "PROBING"
STATES = (EDGE, LOCAL, PROBING)

# Outcomes of one edge request, as the offload processor reports them.
OK = "ok"
TIMEOUT = "timeout"        # no answer within the frame deadline (blackhole, stall, slow link)
CONNECT = "connect"        # refused / reset / closed: link down or server gone
INVALID = "invalid"        # answered, but not a valid result (garbage, wrong shape/dtype/classes)
SERVER = "server_error"    # an HTTP/protocol error status from the server
OUTCOMES = (OK, TIMEOUT, CONNECT, INVALID, SERVER)


@dataclass(frozen=True)
class FailoverConfig:
    """The policy's settings; these defaults are also the node's parameter defaults (ros/parameters.py)."""

    mode: str = "auto"
    deadline_s: float = 0.1               # per-frame budget from receipt to result
    hedge_after_s: float = 0.04           # start local inference if the edge has not answered by then
    failure_threshold: int = 5            # N consecutive edge failures open the breaker
    recovery_probes: int = 3              # M consecutive healthy probes close it again
    probe_interval_s: float = 0.2         # first probe delay and spacing between healthy probes
    probe_backoff: float = 2.0            # growth of the delay after each failed probe
    probe_backoff_max_s: float = 1.0      # cap, so recovery is noticed within about this long
    replica_hedge_s: float = 0.02         # with several edge replicas: a frame unanswered this long goes to the next
    max_in_flight: int = 4                # requests outstanding per replica; the OffloadProcessor sends no more

    def __post_init__(self):
        if self.mode not in OFFLOAD_MODES:
            raise ValueError(f"mode must be one of {OFFLOAD_MODES} (mode local needs no failover policy: "
                             f"runtime/processor.py's LocalProcessor), got {self.mode!r}")
        if not self.deadline_s > 0:
            raise ValueError(f"deadline_s must be > 0, got {self.deadline_s}")
        if not 0 <= self.hedge_after_s <= self.deadline_s:
            raise ValueError(f"hedge_after_s must be in [0, deadline_s={self.deadline_s}], got {self.hedge_after_s}")
        if int(self.failure_threshold) < 1:
            raise ValueError(f"failure_threshold must be >= 1, got {self.failure_threshold}")
        if int(self.max_in_flight) < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {self.max_in_flight}")
        if int(self.recovery_probes) < 1:
            raise ValueError(f"recovery_probes must be >= 1, got {self.recovery_probes}")
        if not self.probe_interval_s > 0:
            raise ValueError(f"probe_interval_s must be > 0, got {self.probe_interval_s}")
        if not self.probe_backoff >= 1.0:
            raise ValueError(f"probe_backoff must be >= 1, got {self.probe_backoff}")
        if not 0 <= self.replica_hedge_s <= self.deadline_s:
            raise ValueError(
                f"replica_hedge_s must be in [0, deadline_s={self.deadline_s}], got {self.replica_hedge_s}")
        if not self.probe_backoff_max_s >= self.probe_interval_s:
            raise ValueError(
                f"probe_backoff_max_s ({self.probe_backoff_max_s}) must be >= "
                f"probe_interval_s ({self.probe_interval_s})"
            )


@dataclass(frozen=True)
class FramePlan:
    """What to do with one frame. Times are on the policy's clock."""

    send_edge: bool          # send the frame to the edge as the primary path
    hedge_at: float | None   # start local inference at this time if the edge has not answered (None: never)
    probe: bool              # send the frame to the edge as a background probe (answer locally)
    deadline_at: float       # the result must be out by then

    @property
    def local_now(self) -> bool:
        """Local inference starts immediately (no edge primary)."""
        return not self.send_edge and self.hedge_at is not None


@dataclass(frozen=True)
class Transition:
    at: float
    from_state: str
    to: str
    reason: str


@dataclass
class FailoverPolicy:
    config: FailoverConfig = field(default_factory=FailoverConfig)
    clock: Callable[[], float] = time.monotonic
    listener: Callable[[Transition], None] | None = None

    def __post_init__(self):
        self.state = EDGE
        self.transitions: list[Transition] = []
        self.counts = {k: 0 for k in ("frames", "edge_sent", "edge_ok", "edge_failed", "hedged", "local_only",
                                      "probes_sent", "probes_ok", "probes_failed")}
        self.failures_by_kind = {k: 0 for k in OUTCOMES if k != OK}
        self._consecutive_failures = 0
        self._healthy_probes = 0
        self._backoff = self.config.probe_interval_s
        self._next_probe_at = 0.0
        self._probe_in_flight = False

    # ---- deciding -------------------------------------------------------------------------------------
    @property
    def accepts_frames(self) -> bool:
        """Whether frames go to this edge as the primary path (breaker closed, or mode edge)."""
        return self.config.mode == "edge" or self.state == EDGE

    def claim_probe(self, now: float | None = None) -> bool:
        """True when a probe is due (breaker open, none in flight); the caller must then send one and report it."""
        now = self.clock() if now is None else now
        if self.config.mode != "auto" or self.state == EDGE or self._probe_in_flight or now < self._next_probe_at:
            return False
        self._probe_in_flight = True
        self.counts["probes_sent"] += 1
        return True

    def plan(self, received_at: float | None = None, deadline_s: float | None = None) -> FramePlan:
        """One plan per frame. `received_at` defaults to now; `deadline_s` to the configured one."""
        now = self.clock()
        start = now if received_at is None else received_at
        deadline_at = start + (self.config.deadline_s if deadline_s is None else deadline_s)
        self.counts["frames"] += 1
        if self.config.mode == "edge":
            plan = FramePlan(True, None, False, deadline_at)
        elif self.state == EDGE:
            plan = FramePlan(True, min(start + self.config.hedge_after_s, deadline_at), False, deadline_at)
        else:
            plan = FramePlan(False, now, self.claim_probe(now), deadline_at)
        if plan.send_edge:
            self.counts["edge_sent"] += 1
        if plan.local_now:
            self.counts["local_only"] += 1
        return plan

    # ---- learning -------------------------------------------------------------------------------------
    def on_sent(self) -> None:
        """A primary request really went out (with replicas, a planned send may be answered before its turn)."""
        self.counts["edge_sent"] += 1

    def on_edge_result(self, outcome: str, plan: FramePlan | None = None) -> None:
        """Report the outcome of a primary edge request (not of a probe)."""
        self._check_outcome(outcome)
        if outcome == OK:
            self.counts["edge_ok"] += 1
            self._consecutive_failures = 0
            return
        self.counts["edge_failed"] += 1
        self.failures_by_kind[outcome] += 1
        if self.config.mode != "auto" or self.state != EDGE:
            return  # late answers of frames sent before the breaker opened change nothing
        self._consecutive_failures += 1
        if self._consecutive_failures >= self.config.failure_threshold:
            self._backoff = self.config.probe_interval_s
            self._next_probe_at = self.clock() + self._backoff
            self._healthy_probes = 0
            self._move(LOCAL, f"{self._consecutive_failures} consecutive edge failures (last: {outcome})")

    def on_probe_result(self, outcome: str) -> None:
        self._check_outcome(outcome)
        self._probe_in_flight = False
        now = self.clock()
        if outcome != OK:
            self.counts["probes_failed"] += 1
            self.failures_by_kind[outcome] += 1
            self._healthy_probes = 0
            self._backoff = min(self._backoff * self.config.probe_backoff, self.config.probe_backoff_max_s)
            self._next_probe_at = now + self._backoff
            if self.state == PROBING:
                self._move(LOCAL, f"probe failed ({outcome})")
            return
        self.counts["probes_ok"] += 1
        if self.state not in (LOCAL, PROBING):
            return
        self._healthy_probes += 1
        if self._healthy_probes >= self.config.recovery_probes:
            self._consecutive_failures = 0
            self._backoff = self.config.probe_interval_s
            self._move(EDGE, f"{self._healthy_probes} consecutive healthy probes")
            return
        self._next_probe_at = now + self.config.probe_interval_s
        if self.state == LOCAL:
            self._move(PROBING, "probe ok")

    # ---- diagnostics ----------------------------------------------------------------------------------
    def status(self) -> dict:
        return {
            "mode": self.config.mode,
            "state": self.state,
            "consecutive_failures": self._consecutive_failures,
            "healthy_probes": self._healthy_probes,
            "probe_backoff_s": round(self._backoff, 4),
            "transitions": len(self.transitions),
            "last_transition": _describe(self.transitions[-1]) if self.transitions else None,
            **self.counts,
            "failures_by_kind": dict(self.failures_by_kind),
        }

    def _move(self, to: str, reason: str) -> None:
        t = Transition(self.clock(), self.state, to, reason)
        self.state = to
        self.transitions.append(t)
        if self.listener is not None:
            self.listener(t)

    @staticmethod
    def _check_outcome(outcome: str) -> None:
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown edge outcome {outcome!r}; expected one of {OUTCOMES}")


def _describe(t: Transition) -> str:
    return f"{t.from_state}->{t.to} ({t.reason})"


@dataclass(frozen=True)
class RacePlan:
    """What to do with one frame across edge replicas. Times are on the policy clock."""

    sends: tuple[tuple[int, float], ...]  # (replica, send at): each joins if the earlier ones have not answered
    probes: tuple[int, ...]               # replicas with an open breaker, probed with this frame in the background
    hedge_at: float | None                # local inference starts then unless an edge answer came (None: never)
    deadline_at: float

    @property
    def local_now(self) -> bool:
        return not self.sends and self.hedge_at is not None


_SUMMED = ("edge_sent", "edge_ok", "edge_failed", "probes_sent", "probes_ok", "probes_failed")


class ReplicaSet:
    """Edge replicas in priority order, each with its own breaker and probing (one FailoverPolicy each).

    A frame goes to the first replica whose breaker is closed; if that one has not answered after replica_hedge_s,
    to the next one too, and so on until the local hedge time (auto) or the deadline (edge); the first valid
    answer wins. In auto the local model starts at hedge_after_s and stays the last line: it runs at once when
    every breaker is open. With one replica the plans are exactly those of a single FailoverPolicy.
    """

    def __init__(self, count: int, config: FailoverConfig, clock: Callable[[], float] = time.monotonic,
                 listener: Callable[[int, Transition], None] | None = None):
        if count < 1:
            raise ValueError(f"need at least one edge replica, got {count}")
        self.config = config
        self.clock = clock
        self.frames = 0
        self.policies = [FailoverPolicy(config, clock, self._relay(i, listener)) for i in range(count)]

    @staticmethod
    def _relay(index: int, listener):
        return None if listener is None else (lambda t: listener(index, t))

    def plan(self, received_at: float | None = None, deadline_s: float | None = None) -> RacePlan:
        now = self.clock()
        start = now if received_at is None else received_at
        deadline_at = start + (self.config.deadline_s if deadline_s is None else deadline_s)
        self.frames += 1
        probes = tuple(i for i, p in enumerate(self.policies) if p.claim_probe(now))
        ready = [i for i, p in enumerate(self.policies) if p.accepts_frames]
        if self.config.mode == "edge":
            limit, hedge_at = deadline_at, None
        else:
            limit = min(start + self.config.hedge_after_s, deadline_at)
            hedge_at = limit if ready else now
        step = self.config.replica_hedge_s
        sends = tuple((i, start + k * step) for k, i in enumerate(ready) if k == 0 or start + k * step < limit)
        return RacePlan(sends, probes, hedge_at, deadline_at)

    # ---- diagnostics ----------------------------------------------------------------------------------
    @property
    def state(self) -> str:
        """EDGE while any replica takes frames, PROBING while one is being probed back, else LOCAL."""
        states = {p.state for p in self.policies}
        return EDGE if EDGE in states else PROBING if PROBING in states else LOCAL

    @property
    def transitions(self) -> list[tuple[int, Transition]]:
        merged = [(i, t) for i, p in enumerate(self.policies) for t in p.transitions]
        return sorted(merged, key=lambda it: it[1].at)

    def status(self) -> dict:
        moves = self.transitions
        last = None
        if moves:
            index, move = moves[-1]
            last = _describe(move) if len(self.policies) == 1 else f"replica {index}: {_describe(move)}"
        kinds = {k: sum(p.failures_by_kind[k] for p in self.policies) for k in OUTCOMES if k != OK}
        return {
            "mode": self.config.mode,
            "state": self.state,
            "consecutive_failures": min(p.status()["consecutive_failures"] for p in self.policies),
            "transitions": len(moves),
            "last_transition": last,
            "frames": self.frames,
            **{k: sum(p.counts[k] for p in self.policies) for k in _SUMMED},
            "failures_by_kind": kinds,
            "replicas": [p.status() for p in self.policies],
        }
