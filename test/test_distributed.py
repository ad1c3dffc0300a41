"""Issue 15: data-parallel training under torchrun (gloo on CPU), confined to loopback in a private network
namespace. A 2-rank run equals the 1-process run with the same global batch; rank 0 alone writes; a rank
killed mid-epoch stops the run with one line, keeps the finished epochs, and the rerun resumes (at another
world size) to where an uninterrupted run ends."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

torch = pytest.importorskip("torch")

from robot_compress.compress import confined  # noqa: E402
from robot_compress.compress.distributed import ShardedBatchSampler, shard_bounds  # noqa: E402

pytestmark = pytest.mark.toolkit
REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "robot_compress.cli"]
# 2 ranks vs 1 process, same global batches: only the order of floating-point sums differs (DDP averages the
# two ranks' gradients). Measured here: 4e-6 after 5 epochs; the masks and metrics came out identical.
WEIGHT_ATOL = 1e-4

# LeNet-5 has no BatchNorm (whose batch statistics are per rank under DDP): the runs can be compared exactly.
# 123 training items in batches of 16: the last global batch (11) splits 6/5, so uneven shares are covered.
TINY = {
    "name": "tiny_ddp", "seed": 0,
    "dataset": {"kind": "synthetic_cls", "input_size": [32, 32], "val_fraction": 0.25, "seed": 0,
                "options": {"n": 164, "num_classes": 4}},
    "teacher": {"model": "lenet5"}, "student": {"model": "lenet5"},
    "stages": [
        {"stage": "train", "model": "teacher", "epochs": 2, "lr": 0.05, "batch_size": 16},
        {"stage": "distill", "epochs": 2, "lr": 0.05, "batch_size": 16, "temperature": 4.0, "alpha": 0.7},
        {"stage": "prune", "criterion": "class-blind", "amount": 0.5},
        {"stage": "finetune", "epochs": 1, "lr": 0.01, "batch_size": 16},
        {"stage": "export", "model_id": "tiny_ddp"},
        {"stage": "evaluate", "latency_runs": 0},
    ],
}


def _confinement():
    ok, why = confined.available()
    if not ok:
        pytest.skip(f"needs a loopback-only network namespace: {why}")


def _env() -> dict:
    env = dict(os.environ, GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
               ROBOT_COMPRESS_DIST_TIMEOUT_S="60")
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    return env


def _recipe(tmp_path: Path, data: dict, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def _run_single(recipe: Path, out: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, "run", str(recipe), "--out", str(out)], env=_env(), capture_output=True, text=True,
                          timeout=timeout)


def _model(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


# ---------------------------------------------------------------------------------------------- pure parts


def test_shards_cover_each_global_batch_once_with_weights_summing_to_world():
    for n in (1, 5, 16, 17):
        parts = [shard_bounds(n, r, 3) for r in range(3)]
        assert parts[0][0] == 0 and parts[-1][1] == n
        assert all(parts[i][1] == parts[i + 1][0] for i in range(2))
    batches = torch.utils.data.BatchSampler(range(11), 4, drop_last=False)  # 4, 4, 3
    per_rank = []
    for r in range(2):
        sampler = ShardedBatchSampler(batches, r, 2)
        got = []
        for part in sampler:
            got.append((part, sampler.weight))
        assert len(got) == len(sampler)
        per_rank.append(got)
    assert [p for got in per_rank for p, _ in got] and sorted(
        i for got in per_rank for p, _ in got for i in p) == list(range(11))
    last = [per_rank[r][-1] for r in range(2)]
    assert last[0] == ([8, 9], 2 * 2 / 3) and last[1] == ([10], 1 * 2 / 3)  # 2 + 1 items of 3: weights 4/3, 2/3


def test_preloaded_batches_split_each_augmented_global_batch_between_ranks():
    """dataset.preload under torchrun: the ranks' parts of a batch are the 1-process batch, augmentation included,
    and every rank's generator ends where the 1-process one does (same loader state in the checkpoint)."""
    import numpy as np

    from robot_compress.compress.tensor_batches import TensorBatches

    rng = np.random.default_rng(0)
    images, targets = rng.integers(0, 255, (11, 8, 8, 3), dtype=np.uint8), np.arange(11)
    common = {"mean": (0.5,) * 3, "std": (0.25,) * 3, "batch_size": 4, "shuffle": True, "augment": True, "seed": 3}
    whole = TensorBatches(images, targets, **common)
    parts = [TensorBatches(images, targets, **common, rank=r, world=2) for r in range(2)]
    expected = list(whole)
    got = [list(p) for p in parts]
    assert [len(g) for g in got] == [len(p) for p in parts] == [3, 3]
    for (x, y), (x0, y0), (x1, y1) in zip(expected, got[0], got[1], strict=True):
        assert torch.equal(torch.cat([x0, x1]), x) and torch.equal(torch.cat([y0, y1]), y)
    assert all(torch.equal(p.generator.get_state(), whole.generator.get_state()) for p in parts)


# ---------------------------------------------------------------------------------------------- torchrun


def test_two_ranks_equal_one_process_and_write_one_set_of_outputs(tmp_path):
    _confinement()
    recipe = _recipe(tmp_path, TINY)
    one, two = tmp_path / "one", tmp_path / "two"
    single = _run_single(recipe, one)
    assert single.returncode == 0, single.stderr[-2000:]
    res = confined.run([*CLI, "run", str(recipe), "--out", str(two), "--nproc", "2"], timeout=300, env=_env())
    assert res.returncode == 0, (res.stdout[-3000:], res.stderr[-3000:])
    assert "data-parallel over 2 ranks (gloo)" in res.stdout

    # One set of outputs: the same files as the single-process run, each written once (one "metrics:" line,
    # one log line per epoch: rank 1 wrote nothing).
    def files(d):
        return sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())

    assert files(two) == files(one)
    assert not list(two.rglob(".*tmp*"))
    log = (two / "log.txt").read_text()
    assert log.count("metrics: top1=") == 1 and log.count("student epoch 2/2 train_loss") == 1

    # The distilled and the pruned + fine-tuned student equal the 1-process run's; the masks are identical.
    distilled = [_model(d / "checkpoints" / "01_distill_student.pt") for d in (one, two)]
    final = [_model(d / "student.pt") for d in (one, two)]
    assert _max_diff(*distilled) < WEIGHT_ATOL
    assert _max_diff(*final) < WEIGHT_ATOL
    masks = [k for k in final[0] if k.endswith("_mask")]
    assert masks and all(torch.equal(final[0][k], final[1][k]) for k in masks)
    assert 0.45 < float(sum(final[1][k].sum() for k in masks) / sum(final[1][k].numel() for k in masks)) < 0.55
    # Validation covers the whole split on both (all-reduced meters), with the same result.
    m1, m2 = (json.loads((d / "metrics.json").read_text()) for d in (one, two))
    assert m2["student"]["metrics"]["n"] == m1["student"]["metrics"]["n"] == m1["dataset"]["n_val"]
    assert m2["student"]["metrics"]["top1"] == pytest.approx(m1["student"]["metrics"]["top1"], abs=1e-9)
    assert m2["pruning"]["after_pruning"]["n"] == m1["dataset"]["n_val"]
    # Checkpoints from 2 ranks carry the same shuffle state as the 1-process run's: resumable at any world size.
    s1, s2 = (torch.load(d / "checkpoints" / "01_distill_student.pt", weights_only=True) for d in (one, two))
    assert torch.equal(s1["loader"]["generator"], s2["loader"]["generator"])


def _checkpoint_epoch(path: Path) -> int:
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"])
    except Exception:  # noqa: BLE001 - not written yet (or being replaced)
        return 0


def test_a_killed_rank_stops_the_run_with_one_error_and_the_rerun_resumes(tmp_path):
    _confinement()
    data = dict(TINY, stages=[{"stage": "train", "model": "student", "epochs": 8, "lr": 0.02, "batch_size": 16},
                              {"stage": "evaluate", "onnx": False}])
    recipe = _recipe(tmp_path, data)
    out = tmp_path / "killed"
    ckpt = out / "checkpoints" / "00_train_student.pt"
    argv = [*CLI, "run", str(recipe), "--out", str(out), "--nproc", "2"]
    killed_at = 0
    with confined.Confined(argv, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as run:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and run.proc.poll() is None:
            killed_at = _checkpoint_epoch(ckpt)
            if killed_at >= 2:
                break
            time.sleep(0.05)
        assert 2 <= killed_at < 8, f"the run never got to epoch 2 ({run.proc.poll()})"
        rank1 = [pid for pid in run.pids() if run.environ(pid).get("RANK") == "1"]
        assert len(rank1) == 1
        os.kill(rank1[0], signal.SIGKILL)  # mid-epoch: the next epoch started as the checkpoint was written
        stdout, stderr = run.proc.communicate(timeout=120)
        code = run.proc.returncode
    assert code == 1
    # c10d warns that it cannot name the client socket's host: an artifact of the namespace (no name service
    # inside it), not of the failure; every other line counts.
    lines = [ln for ln in stderr.splitlines() if ln.strip() and "hostname of the client socket" not in ln]
    assert len(lines) == 1 and "rank 1 was killed by SIGKILL" in lines[0], stderr[-3000:]
    assert "resume" in lines[0] and "Traceback" not in stderr
    # Nothing finished is lost: the checkpoint holds every epoch finished before the kill; no result was written.
    kept = _checkpoint_epoch(ckpt)
    assert killed_at <= kept < 8
    status = json.loads((out / "run.json").read_text())
    assert status["status"] == "failed" and "rank 1 was killed by SIGKILL" in status["error"]
    assert not (out / "metrics.json").exists()

    # The rerun - as one process, not two - resumes there and ends where an uninterrupted run ends.
    rerun = _run_single(recipe, out)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"at epoch {kept}/8" in rerun.stdout
    whole = _run_single(recipe, tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr[-2000:]
    assert _max_diff(_model(out / "student.pt"), _model(tmp_path / "whole" / "student.pt")) < WEIGHT_ATOL
    losses = [[h["train_loss"] for h in torch.load(d / "checkpoints" / "00_train_student.pt",
                                                   weights_only=True)["history"]] for d in (out, tmp_path / "whole")]
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)
    assert json.loads((out / "run.json").read_text())["status"] == "succeeded"


def test_nproc_inside_torchrun_is_refused(tmp_path, monkeypatch, capsys):
    from robot_compress.cli import main

    recipe = _recipe(tmp_path, TINY)
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun sets it (the group itself is not joined here)
    monkeypatch.setattr("robot_compress.compress.distributed.init_from_env", lambda device="auto": False)
    assert main(["run", str(recipe), "--out", str(tmp_path / "o"), "--nproc", "2"]) == 2
    assert "drop --nproc" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
