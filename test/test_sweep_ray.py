"""Issue 15: `sweep --executor ray` on a local Ray instance (started and stopped by the sweep inside a
loopback-only network namespace) gives the sequential sweep's layout and metrics; a cell whose worker dies
is retried. Skipped without Ray (requirements/cluster.txt)."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("torch")

from robot_compress.compress import confined  # noqa: E402

pytestmark = pytest.mark.toolkit
HERE = Path(__file__).resolve().parent
CLI = [sys.executable, "-m", "robot_compress.cli"]
GRID = ["--criteria", "random", "class-blind", "--amounts", "0.3", "0.6", "--kd", "on"]

TINY = {
    "name": "tiny_sweep", "seed": 0,
    "dataset": {"kind": "synthetic_cls", "input_size": [16, 16], "val_fraction": 0.25, "seed": 0,
                "options": {"n": 160, "num_classes": 4}},
    "teacher": {"model": "tiny_cnn", "cfg": {"width": 8}},
    "student": {"model": "test_sweep_ray_model:tiny_cnn_dies_once", "cfg": {"num_classes": 4, "width": 4}},
    "stages": [
        {"stage": "train", "model": "teacher", "epochs": 1, "lr": 0.05, "batch_size": 16},
        {"stage": "distill", "epochs": 1, "lr": 0.05, "batch_size": 16},
        {"stage": "prune", "criterion": "random", "amount": 0.5},
        {"stage": "finetune", "epochs": 1, "lr": 0.01, "batch_size": 16},
        {"stage": "evaluate", "onnx": False},
    ],
}


def _cells(out: Path) -> dict:
    """Relative dir -> metrics.json of every finished run under a sweep dir."""
    return {str(p.parent.relative_to(out)): json.loads(p.read_text()) for p in sorted(out.rglob("metrics.json"))}


def _comparable(metrics: dict) -> dict:
    """What a sweep reports per cell (not timings, commands or commits)."""
    return {"student": metrics["student"]["metrics"], "before": metrics["student"]["before_pruning"],
            "pruning": metrics["pruning"] and {k: metrics["pruning"][k] for k in ("criterion", "amount",
                                                                                  "after_pruning")},
            "params": metrics["student"]["params"], "teacher": (metrics.get("teacher") or {}).get("metrics")}


def test_ray_sweep_equals_the_sequential_sweep_and_retries_a_dead_worker(tmp_path, monkeypatch):
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install -r requirements/cluster.txt")
    ok, why = confined.available()
    if not ok:
        pytest.skip(f"needs a loopback-only network namespace: {why}")
    from robot_compress.cli import main

    recipe = tmp_path / "sweep.yaml"
    recipe.write_text(yaml.safe_dump(TINY))
    monkeypatch.syspath_prepend(str(HERE))  # the student builder, for the sequential sweep in this process
    seq = tmp_path / "seq"
    assert main(["sweep", str(recipe), "--out", str(seq), *GRID]) == 0

    ray_out, marker = tmp_path / "ray", tmp_path / "worker-died"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
               ROBOT_COMPRESS_TEST_DIE_ONCE=str(marker),
               ROBOT_COMPRESS_TEST_BASE_STUDENT=str(ray_out / "base-kd" / "student.pt"), OMP_NUM_THREADS="1")
    res = confined.run([*CLI, "sweep", str(recipe), "--out", str(ray_out), *GRID, "--executor", "ray",
                        "--cpus-per-cell", "1", "--max-retries", "2"], timeout=420, env=env)
    assert res.returncode == 0, (res.stdout[-3000:], res.stderr[-3000:])
    assert "sweep on Ray: 4 cells" in res.stdout and res.stdout.count("done") >= 4
    assert marker.is_file(), "no cell's worker died: the retry was not exercised"

    seq_cells, ray_cells = _cells(seq), _cells(ray_out)
    assert sorted(ray_cells) == sorted(seq_cells) == sorted(
        ["base-kd", "kd/random/0.3", "kd/random/0.6", "kd/class-blind/0.3", "kd/class-blind/0.6"])
    for name in seq_cells:
        assert _comparable(ray_cells[name]) == _comparable(seq_cells[name]), name
    # Same layout file for file (checkpoints, role weights, run.json, recipe.yaml, log.txt) in every dir.
    def files(d):
        return sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())

    assert files(ray_out) == files(seq)


def test_sweep_executor_flags_and_torchrun_are_checked(tmp_path, monkeypatch, capsys):
    from robot_compress.cli import main

    recipe = tmp_path / "sweep.yaml"
    recipe.write_text(yaml.safe_dump(TINY))
    assert main(["sweep", str(recipe), "--out", str(tmp_path / "a"), "--address", "auto"]) == 2
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun sets it
    monkeypatch.setattr("robot_compress.compress.distributed.init_from_env", lambda device="auto": False)
    assert main(["sweep", str(recipe), "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "--address and --gpus-per-cell need --executor ray" in err and "spread its cells with --executor ray" in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
