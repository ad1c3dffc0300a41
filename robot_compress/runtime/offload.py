"""OffloadProcessor: a FrameProcessor that sends frames to edge replicas and fails over to the local model.

The policy (runtime/failover.py: a breaker per replica and the per-frame race plan) decides; this class does
the I/O. Each replica has a small pool of worker threads, so the caller's thread can race them: a frame goes to
the first replica whose breaker is closed, to the next one too if no answer came after replica_hedge_s, and in
auto mode the local model runs on the caller's thread at hedge_after_s; the first valid result is returned.
Every call returns exactly one result (auto) or raises EdgeUnavailableError (edge mode only). An edge result
names its replica (`result.edge_replica`). Mode local never comes here: runtime/processor.py's LocalProcessor.

Threads: the caller (the node's worker), the edge pool threads and the diagnostics reader (the node's timer)
share the policy, the counters, the in-flight counts and the last error; all of them change and are read only
under self._lock.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

import numpy as np

from robot_compress.runtime import failover
from robot_compress.runtime.edge_client import EdgeClient, EdgeError
from robot_compress.runtime.engine import Engine
from robot_compress.runtime.processor import settle
from robot_compress.runtime.results import InferenceResult

COUNTERS = ("results_edge", "results_local", "hedged", "edge_busy", "frames_failed", "deadline_misses")


class EdgeUnavailableError(RuntimeError):
    """mode=edge and no replica gave a valid result for this frame (the message says why)."""


class _EdgeJob:
    """One request to one replica; records when it finished so the race can tell which answer came first."""

    def __init__(self, replica: int):
        self.replica = replica
        self.future: Future = Future()
        self.done_at: float | None = None

    @property
    def succeeded(self) -> bool:
        return self.future.done() and self.future.exception() is None


class _Replica:
    """One edge server: its client, its worker pool and its bookkeeping (guarded by the processor's lock)."""

    def __init__(self, index: int, client: EdgeClient, max_in_flight: int):
        self.client = client
        self.pool = ThreadPoolExecutor(max_workers=max_in_flight, thread_name_prefix=f"edge{index}")
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self.results = 0


def _first_success(jobs: list[_EdgeJob], by: float | None = None) -> _EdgeJob | None:
    """The job whose valid answer came first (and no later than `by`), if any."""
    done = [j for j in jobs if j.succeeded and (by is None or j.done_at <= by)]
    return min(done, key=lambda j: j.done_at) if done else None


def _pending(jobs: list[_EdgeJob]) -> list[_EdgeJob]:
    return [j for j in jobs if not j.future.done()]


class OffloadProcessor:
    def __init__(self, engine: Engine, clients: EdgeClient | Sequence[EdgeClient],
                 config: failover.FailoverConfig, log: Callable[[str], None] | None = None, clock=time.monotonic):
        self.clients = [clients] if isinstance(clients, EdgeClient) else list(clients)
        if not self.clients:
            raise ValueError(f"mode {config.mode!r} needs an edge client (edge_urls and edge_model)")
        self.engine = engine
        self.config = config
        self._clock = clock
        self._log = log
        self._lock = threading.Lock()
        self.replicas = failover.ReplicaSet(len(self.clients), config, clock=clock, listener=self._on_transition)
        self._replicas = [_Replica(i, c, config.max_in_flight) for i, c in enumerate(self.clients)]
        self._counts = dict.fromkeys(COUNTERS, 0)
        self._last_edge_error = ""

    # ---- FrameProcessor ----------------------------------------------------------------------------
    def process(self, rgb: np.ndarray, received_monotonic: float, deadline_at: float) -> InferenceResult:
        with self._lock:
            plan = self.replicas.plan(received_at=received_monotonic, deadline_s=deadline_at - received_monotonic)
        for index in plan.probes:
            self._submit(index, rgb, plan, probe=True)
        if not plan.sends:
            return self._finish(self.engine.infer(rgb, source="local"), received_monotonic, deadline_at)
        jobs = self._race(rgb, plan)
        winner = _first_success(jobs)
        if winner is not None:
            return self._finish_edge(winner, received_monotonic, deadline_at)
        if self.config.mode == "edge":
            return self._fail(jobs)
        if jobs:  # an edge request was out but late or failed (not merely every worker busy)
            self._count("hedged")
        local = self.engine.infer(rgb, source="local")
        local_done = self._clock()
        winner = _first_success(jobs, by=local_done)
        if winner is not None:
            return self._finish_edge(winner, received_monotonic, deadline_at)
        return self._finish(local, received_monotonic, deadline_at, done=local_done)

    def status(self) -> dict[str, str | int | float]:
        with self._lock:
            st = self.replicas.status()
            counts = dict(self._counts)
            in_flight = sum(r.in_flight for r in self._replicas)
            results = [r.results for r in self._replicas]
            last_error = self._last_edge_error
        flat = {k: v for k, v in st.items() if not isinstance(v, (dict, list)) and v is not None}
        flat.update({f"failures_{k}": v for k, v in st["failures_by_kind"].items()})
        flat.update(counts)
        flat["edge_in_flight"] = in_flight
        flat["edge_url"] = self.clients[0].url
        flat["edge_model"] = self.clients[0].model
        if len(self._replicas) > 1:
            flat.update(self._replica_rows(st["replicas"], results))
        if last_error:
            flat["last_edge_error"] = last_error[:200]
        return flat

    def _replica_rows(self, policy_status: list[dict], results: list[int]) -> dict[str, str | int]:
        rows: dict[str, str | int] = {"edge_urls": ",".join(c.url for c in self.clients)}
        for i, (st, n) in enumerate(zip(policy_status, results, strict=True)):
            rows.update({f"replica{i}.url": self.clients[i].url, f"replica{i}.state": st["state"],
                         f"replica{i}.results": n, f"replica{i}.transitions": st["transitions"],
                         f"replica{i}.failures": st["edge_failed"] + st["probes_failed"]})
        return rows

    @property
    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    @property
    def last_edge_error(self) -> str:
        with self._lock:
            return self._last_edge_error

    @property
    def transitions(self) -> list[failover.Transition]:
        with self._lock:
            return [t for _, t in self.replicas.transitions]

    @property
    def state(self) -> str:
        with self._lock:
            return self.replicas.state

    def close(self) -> None:
        for replica in self._replicas:
            replica.pool.shutdown(wait=False, cancel_futures=True)
        for client in self.clients:
            client.close()

    # ---- doing -------------------------------------------------------------------------------------
    def _race(self, rgb, plan: failover.RacePlan) -> list[_EdgeJob]:
        """Send to the planned replicas in turn until one answers validly or the hedge time (deadline) comes."""
        queue, jobs = list(plan.sends), []
        until = plan.deadline_at if plan.hedge_at is None else plan.hedge_at
        while True:
            now = self._clock()
            # the next replica joins when its turn comes, or at once when every request so far has failed
            while queue and _first_success(jobs) is None and (queue[0][1] <= now or not _pending(jobs)):
                job = self._submit(queue.pop(0)[0], rgb, plan, probe=False)
                if job is not None:
                    jobs.append(job)
            pending = _pending(jobs)
            if _first_success(jobs) is not None or now >= until or not (pending or queue):
                return jobs
            wake = min(until, queue[0][1]) if queue else until
            wait([j.future for j in pending], timeout=max(wake - now, 0.0), return_when=FIRST_COMPLETED)

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    def _finish(self, result, received, deadline_at, done=None, replica: _Replica | None = None) -> InferenceResult:
        missed = settle(result, received, deadline_at, self._clock() if done is None else done)
        with self._lock:
            self._counts["results_local" if replica is None else "results_edge"] += 1
            if replica is not None:
                replica.results += 1
            if missed:
                self._counts["deadline_misses"] += 1
        return result

    def _finish_edge(self, job: _EdgeJob, received, deadline_at) -> InferenceResult:
        return self._finish(job.future.result(), received, deadline_at, done=job.done_at,
                            replica=self._replicas[job.replica])

    def _fail(self, jobs: list[_EdgeJob]):
        self._count("frames_failed")
        urls = ", ".join(c.url for c in self.clients)
        raise EdgeUnavailableError(f"mode=edge: no edge result for this frame from {urls} "
                                   f"model {self.clients[0].model!r}: {self._why(jobs)}")

    def _submit(self, index: int, rgb, plan: failover.RacePlan, probe: bool) -> _EdgeJob | None:
        replica, policy = self._replicas[index], self.replicas.policies[index]
        with self._lock:
            if replica.in_flight >= replica.max_in_flight:
                if probe:
                    policy.on_probe_result(failover.TIMEOUT)
                else:
                    self._counts["edge_busy"] += 1
                return None
            replica.in_flight += 1
            if not probe:
                policy.on_sent()
        job = _EdgeJob(index)
        frame = np.array(rgb, copy=True) if probe else rgb  # a probe outlives this call; the caller may reuse rgb
        replica.pool.submit(self._run_edge, job, frame, plan, probe)
        return job

    def _run_edge(self, job: _EdgeJob, rgb, plan: failover.RacePlan, probe: bool) -> None:
        replica, policy = self._replicas[job.replica], self.replicas.policies[job.replica]
        outcome, result, error = failover.OK, None, None
        try:
            result = replica.client.infer(rgb, timeout_s=max(plan.deadline_at - self._clock(), 0.0))
            result.edge_replica = replica.client.url
        except EdgeError as exc:
            outcome, error = exc.kind, exc
        except Exception as exc:  # noqa: BLE001 - anything else is a bad answer, never a result
            outcome, error = failover.INVALID, exc
        job.done_at = self._clock()
        with self._lock:
            replica.in_flight -= 1
            if error is not None:
                self._last_edge_error = f"{outcome} from {replica.client.url}: {error}"
            if probe:
                policy.on_probe_result(outcome)
            else:
                policy.on_edge_result(outcome)
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(result)

    @staticmethod
    def _why(jobs: list[_EdgeJob]) -> str:
        if not jobs:
            return "all edge workers busy with earlier frames"
        failed = [j for j in jobs if j.future.done()]
        if len(failed) < len(jobs):
            return "no answer before the frame deadline"
        exc = failed[-1].future.exception()
        return f"{exc.__class__.__name__}: {exc}"

    def _on_transition(self, index: int, t: failover.Transition) -> None:
        if self._log is None:
            return
        where = f" replica {index} ({self.clients[index].url})" if len(self.clients) > 1 else ""
        self._log(f"failover{where} {t.from_state} -> {t.to}: {t.reason}")

