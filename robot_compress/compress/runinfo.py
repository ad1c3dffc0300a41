"""Output-dir bookkeeping: what made a run (recipe, commit, dataset fingerprint, seeds) and what it gave.

Layout of a run dir:
    run.json       command, resolved config, commit, fingerprints, seeds, status (running | succeeded | failed |
                   stopped | interrupted), timings (rewritten as it goes)
    recipe.yaml    the resolved recipe/config (same content as run.json["config"])
    metrics.json   written atomically ONLY when the run succeeded; report/sweep read nothing else as results
    FAILED         present when the run stopped with an error (contains the message)

Every file is written through a temp file + rename, so an interrupted write never leaves half a file. Nothing
here is touched before `start()`, which a run calls only once everything that can refuse it has been checked.
"""
from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

RUN_SCHEMA = "robot_compress/run/1"
METRICS_FILE = "metrics.json"
RUN_FILE = "run.json"
FAILED_FILE = "FAILED"
LOG_FILE = "log.txt"


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived: stop now, keep every finished epoch, mark the run `interrupted`."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


def signal_name(exc: BaseException) -> str:
    return signal.Signals(getattr(exc, "signum", signal.SIGINT)).name


def git_commit(cwd: str | Path | None = None) -> str:
    """`git rev-parse HEAD` of the checkout this code runs from, or "unknown"."""
    here = Path(cwd) if cwd else Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write text through a temp file + rename, so readers never see half a file (nor does an interruption
    leave one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_json_atomic(path: str | Path, data) -> Path:
    """Write JSON through a temp file + rename, so readers never see half a file."""
    return write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False, default=_jsonable) + "\n")


def append_log(out_dir: str | Path, message: str) -> None:
    """One timestamped line in the run's log.txt (appended: resumes and restarts show up there)."""
    with open(Path(out_dir) / LOG_FILE, "a", encoding="utf-8") as f:
        f.write(f"{utc_now()} {message}\n")


def _jsonable(obj):
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, tuple)):
        return list(obj)
    return str(obj)


def read_json(path: str | Path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def is_finished(out_dir: str | Path) -> bool:
    return (Path(out_dir) / METRICS_FILE).is_file()


class RunDir:
    """One output dir. `start()` records inputs, `stage()` timings, `succeed()` writes metrics.json last."""

    def __init__(self, path: str | Path, command: str, config: dict, seed: int):
        self.path = Path(path)
        self.info = {
            "schema": RUN_SCHEMA,
            "command": command,
            "status": "running",
            "started": utc_now(),
            "finished": None,
            "commit": git_commit(),
            "seeds": {"seed": int(seed)},
            "dataset_fingerprint": None,
            "config": config,
            "timings_s": {},
            "host": {"python": platform.python_version(), "machine": platform.machine()},
        }
        self._t0 = time.perf_counter()

    def start(self) -> RunDir:
        """Take the dir over. Call only after every check that can refuse the run has passed."""
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / FAILED_FILE).unlink(missing_ok=True)
        (self.path / METRICS_FILE).unlink(missing_ok=True)  # a rerun's result replaces, never mixes with, the old
        self._write_recipe()
        self.save()
        return self

    def _write_recipe(self):
        import yaml

        write_text_atomic(self.path / "recipe.yaml",
                          yaml.safe_dump(self.info["config"], sort_keys=False, default_flow_style=None))

    def set_fingerprint(self, fingerprint: str):
        self.info["dataset_fingerprint"] = fingerprint
        self.save()

    def add_seed(self, name: str, value: int):
        self.info["seeds"][name] = int(value)

    def record_time(self, name: str, seconds: float):
        self.info["timings_s"][name] = round(float(seconds), 3)
        self.save()

    def save(self):
        write_json_atomic(self.path / RUN_FILE, self.info)

    def succeed(self, metrics: dict) -> Path:
        self.info["timings_s"]["total"] = round(time.perf_counter() - self._t0, 3)
        self.info["status"] = "succeeded"
        self.info["finished"] = utc_now()
        self.save()
        payload = {
            "schema": RUN_SCHEMA,
            "command": self.info["command"],
            "commit": self.info["commit"],
            "dataset_fingerprint": self.info["dataset_fingerprint"],
            "seeds": self.info["seeds"],
            **metrics,
        }
        return write_json_atomic(self.path / METRICS_FILE, payload)

    def stop(self, message: str):
        """Mark the dir deliberately unfinished (e.g. `run --train-only`): checkpoints, no metrics.json."""
        self.info["status"] = "stopped"
        self.info["error"] = message
        self.info["finished"] = utc_now()
        self.save()

    def interrupt(self, signame: str):
        """Mark the dir interrupted (SIGINT/SIGTERM): its checkpoints resume with a rerun of the same command."""
        self.info["status"] = "interrupted"
        self.info["error"] = f"interrupted by {signame}"
        self.info["finished"] = utc_now()
        if self.path.is_dir():
            self.save()

    def fail(self, message: str):
        """Mark the dir failed; whatever checkpoints it holds are not results (start() removed metrics.json)."""
        self.info["status"] = "failed"
        self.info["error"] = message
        self.info["finished"] = utc_now()
        if self.path.is_dir():
            self.save()
            write_text_atomic(self.path / FAILED_FILE, message + "\n")
