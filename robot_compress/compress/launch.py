"""`robot-compress run --nproc N`: torchrun's launcher for one machine, with one line when a rank fails.

The ranks are started by torch.distributed's elastic agent (what `torchrun` runs), with a static rendezvous on
127.0.0.1 and a free port: nothing listens beyond loopback. Each rank runs `robot-compress run` without
--nproc; rank 0 writes the output dir. When a rank dies, the agent stops the others (max_restarts=0) and this
prints which rank and how, marks run.json failed (a killed rank 0 cannot), and the same command resumes from
the last finished epoch.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import tempfile
import uuid
from pathlib import Path

LAUNCHED_ENV = "ROBOT_COMPRESS_LAUNCHED"  # set in the ranks: they leave the failure summary to the launcher


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


STOPPED_CODES = (130, 143)  # a rank that was told to stop (SIGINT/SIGTERM) is a consequence, not the cause
# The signals that stop a rank from outside: the agent sends SIGTERM to the survivors of a failure, and a rank
# that has already left its handler (cleaning up after a peer's error) dies of it rather than exiting 143.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# torch.distributed's errors when a peer vanished mid-collective (or the store with it): consequences.
PEER_ERRORS = ("DistBackendError", "DistNetworkError", "DistStoreError", "DistError")


def _message(failure) -> str:
    """What the rank wrote to its error file (cli._record_for_launcher), '' when nothing."""
    msg = failure.message
    if isinstance(msg, dict):
        msg = msg.get("message", "")
    return msg if isinstance(msg, str) and not msg.startswith(("Signal ", "To enable traceback")) else ""


def _recorded_time(failure) -> float:
    """When the rank recorded its error (cli._record_for_launcher writes sub-second time), else the agent's
    whole-second timestamp."""
    data = getattr(failure, "error_file_data", None) or {}
    extra = data.get("message", {}).get("extraInfo", {}) if isinstance(data.get("message"), dict) else {}
    return float(extra.get("time", failure.timestamp))


def _is_consequence(failure) -> bool:
    """The rank only saw another's failure: it was stopped (stop signal, or our handler's 130/143), or its own
    error was a broken collective."""
    if failure.exitcode < 0:
        return -failure.exitcode in STOP_SIGNALS or _message(failure).startswith(PEER_ERRORS)
    return failure.exitcode in STOPPED_CODES or _message(failure).startswith(PEER_ERRORS)


def _cause_order(failure) -> tuple:
    """Ranks that failed on their own (an error, or killed by e.g. SIGKILL/SIGSEGV) before ranks that only saw
    a peer's failure; then earlier before later: the agent's whole seconds, a rank killed outright before one
    that exited in the same second (its peers' errors follow from it), then the ranks' own sub-second times."""
    killed = failure.exitcode < 0
    return (_is_consequence(failure), failure.timestamp, not killed, _recorded_time(failure))


def _describe(rank: int, failure) -> str:
    if failure.exitcode < 0:
        return f"rank {rank} was killed by {signal.Signals(-failure.exitcode).name}"
    reason = _message(failure)
    return f"rank {rank} exited with code {failure.exitcode}" + (f" ({reason})" if reason else "")


def _mark_failed(out: Path, message: str) -> None:
    """run.json says `failed` with the launcher's reason, unless rank 0 recorded an outcome of its own."""
    from robot_compress.compress.runinfo import (
        FAILED_FILE,
        RUN_FILE,
        append_log,
        read_json,
        utc_now,
        write_json_atomic,
        write_text_atomic,
    )

    if not (out / RUN_FILE).is_file():
        return
    info = read_json(out / RUN_FILE)
    if info.get("status") in ("running", "interrupted", "failed"):
        if info.get("error") and info["error"] != message:
            info["error_rank0"] = info["error"]  # what rank 0 saw, often only the consequence
        info.update(status="failed", error=message, finished=utc_now())
        write_json_atomic(out / RUN_FILE, info)
        write_text_atomic(out / FAILED_FILE, message + "\n")
        append_log(out, f"error: {message}")


def launch(nproc: int, argv: list[str], out: Path, log=print) -> int:
    """Run `robot-compress <argv>` as `nproc` ranks on this machine; 0 on success, 1 when a rank failed."""
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    # The agent's own warnings (closing signals, per-rank tracebacks) would bury the one line below.
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    os.environ[LAUNCHED_ENV] = "1"
    if nproc > 1:
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    port = free_port()
    # The agent keeps each rank's error file in a log dir: ours, removed afterwards (its default one stays).
    logs = tempfile.TemporaryDirectory(prefix="robot-compress-ranks-")
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=uuid.uuid4().hex[:12],
                          rdzv_backend="static", rdzv_endpoint=f"127.0.0.1:{port}", rdzv_configs={"rank": 0},
                          max_restarts=0, monitor_interval=0.2, local_addr="127.0.0.1",
                          logs_specs=DefaultLogsSpecs(log_dir=logs.name))
    log(f"launching {nproc} ranks on this machine (gloo/nccl over 127.0.0.1:{port})")
    try:
        elastic_launch(config, entrypoint=sys.executable)("-m", "robot_compress.cli", *argv)
    except SignalException as exc:  # Ctrl-C / SIGTERM to the launcher: the agent stopped the ranks
        from robot_compress.compress.runinfo import Interrupted

        raise Interrupted(int(exc.sigval)) from None
    except ChildFailedError as exc:
        rank, failure = min(exc.failures.items(), key=lambda item: _cause_order(item[1]))
        first = _describe(rank, failure)
        message = (f"{first}; the other ranks were stopped; finished epochs in {out} are kept, rerun the same "
                   "command to resume")
        _mark_failed(out, message)
        print(f"robot-compress run: error: {message}", file=sys.stderr, flush=True)
        return 1
    finally:
        os.environ.pop(LAUNCHED_ENV, None)
        logs.cleanup()
    return 0
