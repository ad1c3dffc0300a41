"""`robot-compress serve` killed with SIGKILL takes tritonserver and its backend stubs along."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from edge_fixtures import start_server

from robot_compress.tools.synthetic_models import make_model

# The watchdog kills the group within milliseconds. Without it, tritonserver (parent-death SIGTERM from
# PyTriton) and the stubs shut down gracefully over seconds (2-5 s measured here), or not at all.
ORPHAN_GRACE_S = 1.5


def _group(pgid: int) -> list[str]:
    """Command lines of the living (not zombie) processes in process group `pgid`."""
    members = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # exited while we looked
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state ppid pgrp ...
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(cmd)
    return members


def test_kill_9_of_serve_leaves_no_tritonserver_or_stub(tmp_path):
    model = make_model(tmp_path / "tiny.onnx", input_size=(16, 16), model_id="tiny")
    server = start_server([model], tmp_path, payloads=("raw",))
    pgid = server.proc.pid  # started in a session of its own: the group is the server's tree
    try:
        before = _group(pgid)
        assert any("tritonserver" in c for c in before) and any("python_backend_stub" in c for c in before), before
        os.kill(server.proc.pid, signal.SIGKILL)  # the main process only, as a crash or an OOM kill would
        server.proc.wait(10)
        deadline = time.monotonic() + ORPHAN_GRACE_S
        while _group(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _group(pgid) == [], "orphans left behind"
    finally:
        server.stop()  # kills stragglers if the assertion failed
