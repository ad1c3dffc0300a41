"""A one-element, latest-wins hand-off between a camera callback and a single worker thread.

`put` never blocks (the callback must not wait on inference); a frame that is replaced before the
worker took it is reported back to the caller so it can be counted as dropped.
"""
from __future__ import annotations

import threading
from typing import Any


class LatestSlot:
    def __init__(self):
        self._cond = threading.Condition()
        self._item: Any = None
        self._full = False
        self._closed = False

    def put(self, item: Any) -> bool:
        """Store `item`; returns True when it replaced a frame the worker never saw (a drop)."""
        with self._cond:
            replaced = self._full
            self._item, self._full = item, True
            self._cond.notify()
        return replaced

    def take(self, timeout: float | None = None) -> tuple[bool, Any]:
        """Wait for a frame; (True, item), or (False, None) on timeout or after close()."""
        with self._cond:
            self._cond.wait_for(lambda: self._full or self._closed, timeout)
            if not self._full:
                return False, None
            item, self._item, self._full = self._item, None, False
            return True, item

    def close(self) -> None:
        """Wake the worker for shutdown; a pending frame is still handed out first."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed
