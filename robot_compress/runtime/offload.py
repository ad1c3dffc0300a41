"""OffloadProcessor: a FrameProcessor that sends frames to the edge server and fails over to the local model.

The failover policy (runtime/failover.py) decides; this class does the I/O. Edge requests run on a small
pool of worker threads so the caller's thread can hedge: if the edge has not answered by hedge_after,
the frame is run locally on the caller's thread, and whichever valid result is ready first is returned.
Every call returns exactly one result (auto/local) or raises EdgeUnavailableError (edge mode only).
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from robot_compress.runtime import failover
from robot_compress.runtime.edge_client import EdgeClient, EdgeError
from robot_compress.runtime.engine import Engine
from robot_compress.runtime.results import InferenceResult


class EdgeUnavailableError(RuntimeError):
    """mode=edge and the edge gave no valid result for this frame (the message says why)."""


class _EdgeJob:
    """One edge request; records when it finished so the hedge can tell which result came first."""

    def __init__(self):
        self.future: Future = Future()
        self.done_at: float | None = None


class OffloadProcessor:
    def __init__(self, engine: Engine, client: EdgeClient | None, config: failover.FailoverConfig,
                 max_in_flight: int = 4, log: Callable[[str], None] | None = None, clock=time.monotonic):
        if config.mode != "local" and client is None:
            raise ValueError(f"mode {config.mode!r} needs an edge client (edge_url and edge_model)")
        self.engine = engine
        self.client = client
        self.config = config
        self._clock = clock
        self._log = log
        self._lock = threading.Lock()  # the policy is touched from the caller and the edge workers
        self.policy = failover.FailoverPolicy(config, clock=clock, listener=self._on_transition)
        self._pool = ThreadPoolExecutor(max_workers=max_in_flight, thread_name_prefix="edge") \
            if config.mode != "local" else None
        self._max_in_flight = max_in_flight
        self._in_flight = 0
        self.counts = {"results_edge": 0, "results_local": 0, "hedged": 0, "edge_busy": 0,
                       "frames_failed": 0, "deadline_misses": 0}
        self.last_edge_error = ""

    # ---- FrameProcessor ----------------------------------------------------------------------------
    def process(self, rgb: np.ndarray, received_monotonic: float, deadline_s: float) -> InferenceResult:
        with self._lock:
            plan = self.policy.plan(received_at=received_monotonic, deadline_s=deadline_s - received_monotonic)
        if plan.probe:
            self._submit(rgb, plan, probe=True)
        if not plan.send_edge:
            return self._local(rgb, received_monotonic, deadline_s)

        job = self._submit(rgb, plan, probe=False)
        if job is None:  # every worker still busy with earlier frames: the link is not keeping up
            self.counts["edge_busy"] += 1
            if self.config.mode == "edge":
                return self._fail("all edge workers busy with earlier frames")
            return self._local(rgb, received_monotonic, deadline_s)

        wait_until = deadline_s if plan.hedge_at is None else plan.hedge_at
        edge = self._wait(job, wait_until)
        if edge is not None:
            return self._finish(edge, "results_edge", received_monotonic, deadline_s)
        if self.config.mode == "edge":
            return self._fail(self._why(job))
        # hedge: the edge is late or failed; run locally, then take whichever valid answer was first
        self.counts["hedged"] += 1
        local = self.engine.infer(rgb, source="local")
        local_done = self._clock()
        edge = self._wait(job, self._clock())  # non-blocking look
        if edge is not None and job.done_at is not None and job.done_at <= local_done:
            return self._finish(edge, "results_edge", received_monotonic, deadline_s)
        return self._finish(local, "results_local", received_monotonic, deadline_s, done=local_done)

    def status(self) -> dict[str, str | int | float]:
        with self._lock:
            st = self.policy.status()
        flat = {k: v for k, v in st.items() if not isinstance(v, dict) and v is not None}
        flat.update({f"failures_{k}": v for k, v in st["failures_by_kind"].items()})
        flat.update(self.counts)
        flat["edge_in_flight"] = self._in_flight
        if self.client is not None:
            flat["edge_url"] = self.client.url
            flat["edge_model"] = self.client.model
        if self.last_edge_error:
            flat["last_edge_error"] = self.last_edge_error[:200]
        return flat

    @property
    def transitions(self) -> list[failover.Transition]:
        return list(self.policy.transitions)

    @property
    def state(self) -> str:
        return self.policy.state

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        if self.client is not None:
            self.client.close()

    # ---- doing -------------------------------------------------------------------------------------
    def _local(self, rgb, received, deadline_at) -> InferenceResult:
        result = self.engine.infer(rgb, source="local")
        return self._finish(result, "results_local", received, deadline_at)

    def _finish(self, result, counter, received, deadline_at, done=None) -> InferenceResult:
        done = self._clock() if done is None else done
        self.counts[counter] += 1
        if done > deadline_at:
            self.counts["deadline_misses"] += 1
        result.latency_ms = (done - received) * 1000.0
        return result

    def _fail(self, why: str):
        self.counts["frames_failed"] += 1
        raise EdgeUnavailableError(f"mode=edge: no edge result for this frame from {self.client.url} "
                                   f"model {self.client.model!r}: {why}")

    def _submit(self, rgb, plan: failover.FramePlan, probe: bool) -> _EdgeJob | None:
        with self._lock:
            if self._in_flight >= self._max_in_flight:
                if probe:
                    self.policy.on_probe_result(failover.TIMEOUT)
                return None
            self._in_flight += 1
        job = _EdgeJob()
        frame = np.array(rgb, copy=True) if probe else rgb  # a probe outlives this call; the caller may reuse rgb
        self._pool.submit(self._run_edge, job, frame, plan, probe)
        return job

    def _run_edge(self, job: _EdgeJob, rgb, plan: failover.FramePlan, probe: bool) -> None:
        outcome, result, error = failover.OK, None, None
        try:
            result = self.client.infer(rgb, timeout_s=max(plan.deadline_at - self._clock(), 0.0))
        except EdgeError as exc:
            outcome, error = exc.kind, exc
        except Exception as exc:  # noqa: BLE001 - anything else is a bad answer, never a result
            outcome, error = failover.INVALID, exc
        job.done_at = self._clock()
        with self._lock:
            self._in_flight -= 1
            if error is not None:
                self.last_edge_error = f"{outcome}: {error}"
            if probe:
                self.policy.on_probe_result(outcome)
            else:
                self.policy.on_edge_result(outcome, plan)
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(result)

    def _wait(self, job: _EdgeJob, until: float) -> InferenceResult | None:
        """The edge result if it is (or becomes, by `until`) ready and valid; None otherwise."""
        try:
            return job.future.result(timeout=max(until - self._clock(), 0.0))
        except TimeoutError:
            return None
        except Exception:  # noqa: BLE001 - the failure is already counted by the worker
            return None

    @staticmethod
    def _why(job: _EdgeJob) -> str:
        if not job.future.done():
            return "no answer before the frame deadline"
        exc = job.future.exception()
        return f"{exc.__class__.__name__}: {exc}"

    def _on_transition(self, t: failover.Transition) -> None:
        if self._log is not None:
            self._log(f"failover {t.frm} -> {t.to}: {t.reason}")


def offload_from_params(mode: str, engine: Engine, params: dict, log: Callable[[str], None] | None = None,
                        ) -> OffloadProcessor:
    """Build the processor from the node's parameters (names as in perception_node.PARAMETERS).

    Raises ValueError naming the offending parameter.
    """
    from robot_compress.runtime.edge_client import PAYLOADS

    deadline_ms = float(params["frame_deadline_ms"])
    hedge_ms = float(params["hedge_after_ms"])
    if not 0 <= hedge_ms <= deadline_ms:
        raise ValueError(f"parameter 'hedge_after_ms' must be in [0, frame_deadline_ms={deadline_ms}], got {hedge_ms}")
    if mode != "local" and not params.get("edge_url"):
        raise ValueError(f"mode {mode!r} needs parameter 'edge_url' (e.g. http://127.0.0.1:8000)")
    if params.get("edge_payload", "jpeg") not in PAYLOADS:
        raise ValueError(f"parameter 'edge_payload' must be one of {'|'.join(PAYLOADS)}")
    config = failover.FailoverConfig(
        mode=mode, deadline_s=deadline_ms / 1000.0, hedge_after_s=hedge_ms / 1000.0,
        failure_threshold=int(params["failure_threshold"]), recovery_probes=int(params["recovery_probes"]),
        probe_interval_s=float(params["probe_interval_ms"]) / 1000.0, probe_backoff=float(params["probe_backoff"]),
        probe_backoff_max_s=float(params["probe_backoff_max_ms"]) / 1000.0)
    client = None
    if mode != "local":
        model = params.get("edge_model") or engine.model_id
        client = EdgeClient(params["edge_url"], model, engine.meta, payload=params.get("edge_payload", "jpeg"))
    return OffloadProcessor(engine, client, config, max_in_flight=int(params.get("edge_max_in_flight", 4)), log=log)
