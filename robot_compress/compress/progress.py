"""Progress that reads well on a terminal and in a log.

On a terminal: tqdm bars (transient, as before). Anywhere else (a pipe, nohup, CI, and so `log.txt`): a line
through the caller's log function every `every` items with the rate and the time left, so a long epoch or
evaluation shows that it is alive and when it will end.
"""
from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator


def is_terminal() -> bool:
    isatty = getattr(sys.stdout, "isatty", None)
    return bool(isatty and isatty())


def format_duration(seconds: float) -> str:
    """12s, 3m05s, 2h07m."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def default_every(total: int | None) -> int:
    """About ten lines per pass."""
    return max(1, math.ceil(total / 10)) if total else 50


def progress_line(desc: str, done: int, total: int | None, seconds: float, unit: str = "batch",
                  note: str = "") -> str:
    rate = done / seconds if seconds > 0 else float("inf")
    if total:
        eta = format_duration((total - done) / rate) if rate > 0 and math.isfinite(rate) else "?"
        text = f"{desc}: {unit} {done}/{total} ({100 * done / total:.0f} %), {rate:.2f} {unit}/s, eta {eta}"
    else:
        text = f"{desc}: {unit} {done}, {rate:.2f} {unit}/s"
    return text + (f", {note}" if note else "")


def track(iterable: Iterable, desc: str, total: int | None = None, log: Callable[[str], None] | None = None,
          every: int | None = None, unit: str = "batch", note: Callable[[], str] | None = None) -> Iterator:
    """Yield the items of `iterable`, showing progress: a tqdm bar on a terminal (or when there is no `log`,
    silent off a terminal as tqdm's disable=None), else a `log` line every `every` items (not after the last:
    the caller's summary line follows). `note()` adds e.g. the running loss to each line."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    if log is None or is_terminal():
        from tqdm import tqdm

        yield from tqdm(iterable, desc=desc, total=total, leave=False, disable=None, dynamic_ncols=True)
        return
    every = every or default_every(total)
    t0 = time.perf_counter()
    for done, item in enumerate(iterable, 1):
        yield item
        if done % every == 0 and (total is None or done < total):
            log(progress_line(desc, done, total, time.perf_counter() - t0, unit, note() if note else ""))
