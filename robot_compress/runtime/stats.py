"""Rolling frame statistics for a perception loop: counters, latency percentiles, output rate.

Plain code with an injectable clock so tests need no sleeps; thread-safe because the camera callback,
the worker thread and the diagnostics timer all touch it.
"""
from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np

COUNTERS = ("frames_in", "frames_out", "dropped", "bad_frames", "errors")


class FrameStats:
    """Counters plus the latencies of the last `window` results and the completion times of the last `rate_window_s`."""

    def __init__(self, window: int = 300, rate_window_s: float = 5.0, clock=time.monotonic):
        self._lock = threading.Lock()
        self._clock = clock
        self._started = clock()
        self._latencies_ms: deque[float] = deque(maxlen=window)
        self._done_times: deque[float] = deque()
        self._rate_window_s = float(rate_window_s)
        self.counters = dict.fromkeys(COUNTERS, 0)

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counters[name] += n

    def result(self, latency_ms: float) -> None:
        """One result published: counts frames_out and feeds latency and rate."""
        now = self._clock()
        with self._lock:
            self.counters["frames_out"] += 1
            self._latencies_ms.append(float(latency_ms))
            self._done_times.append(now)
            self._trim(now)

    def _trim(self, now: float) -> None:
        while self._done_times and self._done_times[0] < now - self._rate_window_s:
            self._done_times.popleft()

    def snapshot(self) -> dict[str, float | int]:
        """Counters, fps over the rate window, latency p50/p95 over the last results (0 when none yet)."""
        now = self._clock()
        with self._lock:
            self._trim(now)
            span = min(self._rate_window_s, max(now - self._started, 1e-9))
            fps = len(self._done_times) / span
            lat = np.asarray(self._latencies_ms, dtype=np.float64)
            out: dict[str, float | int] = dict(self.counters)
        out["fps"] = fps
        out["latency_p50_ms"] = float(np.percentile(lat, 50)) if lat.size else 0.0
        out["latency_p95_ms"] = float(np.percentile(lat, 95)) if lat.size else 0.0
        return out
