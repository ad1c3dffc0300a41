"""May this run use its output dir? Decided before a single file in it is touched.

A dir holds one run of one recipe. Default (`auto`): a missing or empty dir starts fresh; a dir holding an
earlier run of the same recipe (same run fingerprint; training stages may have gained epochs) resumes it,
reusing every stage checkpoint whose stage fingerprint matches; anything else is refused (ResumeError, exit 2)
and the dir stays byte-identical. `resume` insists on an earlier run to continue. `restart` discards the
earlier run's outputs first. Runs made before fingerprints existed are checked by their stored stage settings,
with a warning when their checkpoints are resumed (see train.check_resumable).
"""
from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from robot_compress.compress.runinfo import FAILED_FILE, METRICS_FILE, RUN_FILE
from robot_compress.compress.train import RESTART_HINT, ResumeError

MODES = ("auto", "resume", "restart")
CHECKPOINT_DIR = "checkpoints"
ROLE_FILES = ("student.pt", "teacher.pt")


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def stored_run_fingerprint(out: Path) -> str | None:
    return ((_read_json(out / RUN_FILE) or {}).get("fingerprint") or {}).get("run")


def _checkpoint_problem(path: Path, fingerprint: str, config: dict, trust: bool) -> str | None:
    from robot_compress.compress.models import CheckpointError
    from robot_compress.compress.train import check_resumable, read_checkpoint

    try:
        check_resumable(path, read_checkpoint(path, trust=trust), config, fingerprint)
    except (ResumeError, CheckpointError) as exc:
        return str(exc).split(";")[0]
    return None


def check_output_dir(out: str | Path, run_fingerprint: str, expected: dict[str, tuple[str, dict]],
                     mode: str = "auto") -> str:
    """'fresh', 'resume' or 'restart' for this run in `out`; raises ResumeError when it may not use the dir.

    `expected` maps each checkpoint file name this recipe writes under checkpoints/ to (stage fingerprint,
    stage config as train.fit stores it)."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {MODES}")
    out = Path(out)
    has_run = (out / RUN_FILE).is_file()
    ckpt_dir = out / CHECKPOINT_DIR
    checkpoints = sorted(ckpt_dir.glob("*.pt")) if ckpt_dir.is_dir() else []
    if mode == "restart":
        return "restart" if has_run or checkpoints else "fresh"
    if not has_run and not checkpoints:
        if mode == "resume":
            raise ResumeError(f"--resume: {out} holds no earlier run to resume")
        return "fresh"
    problems = []
    stored = stored_run_fingerprint(out)
    if stored is not None and stored != run_fingerprint:
        problems.append(f"its recipe, data or starting weights differ (run fingerprint {stored[:12]}, now "
                        f"{run_fingerprint[:12]})")
    for path in checkpoints:
        if path.name not in expected:
            problems.append(f"{path} is not a checkpoint of this recipe")
            continue
        problem = _checkpoint_problem(path, *expected[path.name], trust=False)
        if problem:
            problems.append(problem)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ResumeError(f"{out} holds a run of a different configuration: {problems[0]}{more}; nothing in it "
                          f"was changed; {RESTART_HINT}")
    return "resume"


def clear_previous_run(out: str | Path, log: Callable[[str], None] | None = None) -> list[Path]:
    """--restart: remove what the earlier run wrote (stage checkpoints, role weights, the models and cards its
    metrics.json lists, metrics.json, FAILED). run.json and recipe.yaml are rewritten by the new run; log.txt
    keeps its history. Returns the removed paths."""
    out = Path(out)
    removed = []
    metrics = _read_json(out / METRICS_FILE) or {}
    exported = [out / e["path"] for e in metrics.get("onnx") or [] if isinstance(e, dict) and e.get("path")]
    for path in exported:
        if path.resolve().parent != out.resolve():  # only files inside this run dir
            continue
        for f in (path, path.with_suffix(".json"), path.with_suffix(".md")):
            if f.is_file():
                f.unlink()
                removed.append(f)
    for name in (*ROLE_FILES, METRICS_FILE, FAILED_FILE):
        if (out / name).is_file():
            (out / name).unlink()
            removed.append(out / name)
    if (out / CHECKPOINT_DIR).is_dir():
        shutil.rmtree(out / CHECKPOINT_DIR)
        removed.append(out / CHECKPOINT_DIR)
    if log is not None:
        log(f"--restart: removed {len(removed)} output(s) of the earlier run in {out}")
    return removed
