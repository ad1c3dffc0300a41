"""The seam between the perception node and whatever produces results for a frame.

The node's worker thread calls `process` once per frame and publishes what comes back; it does not
know whether the answer came from the local Engine, an edge server, or a failover policy choosing
between them. Edge offload plugs in here as another FrameProcessor.
"""
from __future__ import annotations

import time
from typing import Protocol

import numpy as np

from robot_compress.runtime.engine import Engine
from robot_compress.runtime.failover import LOCAL
from robot_compress.runtime.results import InferenceResult


class FrameProcessor(Protocol):
    def process(self, rgb: np.ndarray, received_monotonic: float, deadline_at: float) -> InferenceResult:
        """Blocking; returns exactly one result for the frame or raises.

        `received_monotonic` is time.monotonic() when the frame arrived in the camera callback;
        `deadline_at` is the time.monotonic() instant by which the result is wanted. The returned
        result's latency_ms is receipt -> result ready (see `settle`).
        """
        ...

    def status(self) -> dict[str, str | int | float]:
        """Flat key/values for diagnostics (state, counters)."""
        ...

    def close(self) -> None: ...


def settle(result: InferenceResult, received_monotonic: float, deadline_at: float, done: float) -> bool:
    """Every processor's latency and deadline accounting: set the result's latency (receipt -> `done`) and
    return whether it missed its deadline."""
    result.latency_ms = (done - received_monotonic) * 1000.0
    return done > deadline_at


class LocalProcessor:
    """Every frame through the on-robot Engine. A local run cannot be abandoned half-way, so a
    frame that finishes after its deadline is still returned and counted as a deadline miss."""

    def __init__(self, engine: Engine, clock=time.monotonic):
        self.engine = engine
        self._clock = clock
        self._frames = 0
        self._deadline_misses = 0
        self._infer_ms_total = 0.0

    def process(self, rgb: np.ndarray, received_monotonic: float, deadline_at: float) -> InferenceResult:
        result = self.engine.infer(rgb, source="local")
        self._frames += 1
        self._infer_ms_total += result.latency_ms  # the Engine's own time, before settle() makes it receipt-based
        if settle(result, received_monotonic, deadline_at, self._clock()):
            self._deadline_misses += 1
        return result

    def status(self) -> dict[str, str | int | float]:
        mean = self._infer_ms_total / self._frames if self._frames else 0.0
        return {
            "state": LOCAL,  # the same word OffloadProcessor reports while every frame is answered locally
            "local_frames": self._frames,
            "deadline_misses": self._deadline_misses,
            "local_infer_mean_ms": round(mean, 3),
        }

    def close(self) -> None:
        pass
