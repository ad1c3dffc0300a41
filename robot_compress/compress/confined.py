"""Run a command in a private network namespace that has nothing but loopback (tests and benchmarks).

Ray listens on all interfaces and probes an outside address to find its own; torchrun's rendezvous binds
wherever it is told. Inside `unshare -n` with only `lo` up, neither can reach or be reached from outside this
machine. Needs root (or unprivileged user namespaces) and the `unshare` and `ip` tools; `available()` says.

Every process left in the namespace when the command ends (Ray's daemons, a rank the launcher did not stop) is
killed, found by its network namespace, so nothing outlives the call.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

_PRELUDE = 'ip link set lo up && exec "$@"'


def available() -> tuple[bool, str]:
    """(True, '') when a loopback-only namespace can be made here, else (False, why)."""
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            return False, f"`{tool}` is not installed"
    try:
        probe = subprocess.run(["unshare", "-n", "sh", "-c", _PRELUDE, "sh", "true"], capture_output=True, text=True,
                               timeout=20)
    except (OSError, subprocess.SubprocessError) as exc:
        return False, f"unshare -n failed: {exc}"
    if probe.returncode != 0:
        return False, f"unshare -n failed (needs root): {probe.stderr.strip()[:200]}"
    return True, ""


def _netns(pid: int | str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return None


class Confined:
    """`subprocess.Popen` of `argv` inside a fresh loopback-only network namespace, in its own session.

    `stop()` (also on leaving a `with`) ends the command and every process in its namespace."""

    def __init__(self, argv: list[str], env: dict | None = None, cwd: str | Path | None = None, **popen):
        self.own_ns = _netns(os.getpid())
        self.proc = subprocess.Popen(["unshare", "-n", "sh", "-c", _PRELUDE, "sh", *argv], env=env, cwd=cwd,
                                     start_new_session=True, **popen)
        self.ns = self._wait_for_namespace()

    def _wait_for_namespace(self, timeout: float = 10.0) -> str | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ns = _netns(self.proc.pid)
            if ns is not None and ns != self.own_ns:
                return ns
            if self.proc.poll() is not None:
                return None
            time.sleep(0.01)
        return None

    def pids(self) -> list[int]:
        """Every process now in the namespace (the command and its descendants, daemons included)."""
        if self.ns is None:
            return []
        return [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid() and _netns(p) == self.ns]

    def environ(self, pid: int) -> dict[str, str]:
        try:
            raw = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            return {}
        return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if self.proc.poll() is None:  # never signal a group whose leader is gone: its id may be reused
                with _suppress():
                    os.killpg(self.proc.pid, sig)
            for pid in self.pids():
                with _suppress():
                    os.kill(pid, sig)
            deadline = time.monotonic() + 5.0
            while (self.proc.poll() is None or self.pids()) and time.monotonic() < deadline:
                time.sleep(0.05)
        with _suppress():
            self.proc.wait(timeout=5)

    def __enter__(self) -> Confined:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _suppress():
    import contextlib

    return contextlib.suppress(ProcessLookupError, PermissionError, subprocess.TimeoutExpired)


def run(argv: list[str], timeout: float, env: dict | None = None, cwd: str | Path | None = None
        ) -> subprocess.CompletedProcess:
    """Run `argv` confined to loopback; output captured as text; everything it started is gone on return.
    A command past `timeout` is killed and reported with returncode -9 and what it had printed."""
    with Confined(argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as c:
        try:
            out, err = c.proc.communicate(timeout=timeout)
            code = c.proc.returncode
        except subprocess.TimeoutExpired:
            c.stop()
            out, err = c.proc.communicate()
            code = -9
    return subprocess.CompletedProcess(argv, code, out, err)
