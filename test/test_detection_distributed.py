"""Detection recipes data-parallel under torchrun (gloo on CPU, confined to loopback as test_distributed.py): the
tiny synthetic detection recipe trains over 2 ranks and writes AP; validation AP over 2 ranks (the ranks'
predictions gathered, the whole split scored) equals a one-process evaluation of the same model; a rank that
fails with its own error is the one the launcher names."""
from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
pytest.importorskip("pycocotools")

from robot_compress.compress import confined  # noqa: E402

pytestmark = pytest.mark.toolkit
REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "config" / "examples" / "tiny_synthetic_detection.yaml"
CLI = [sys.executable, "-m", "robot_compress.cli"]
# One epoch per training stage (seconds); the fine-tune's batch of 5 splits 3/2 and, for the last training batch
# of one item, leaves rank 1 without a share (DDP's join). Validation (12 images) in batches of 5: 3/2, 3/2, 1/1.
SHORT = ["--set", "stages.0.epochs=1", "--set", "stages.1.epochs=1", "--set", "stages.3.batch_size=5",
         "--set", "stages.5.latency_runs=0"]
AP_KEYS = ("ap", "ap50", "ap75", "ap_per_class", "ap50_per_class", "images", "ground_truth", "detections")


def _env(**extra) -> dict:
    env = dict(os.environ, GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
               ROBOT_COMPRESS_DIST_TIMEOUT_S="60", **extra)
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def _confinement():
    ok, why = confined.available()
    if not ok:
        pytest.skip(f"needs a loopback-only network namespace: {why}")


@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory):
    _confinement()
    out = tmp_path_factory.mktemp("detddp") / "run"
    res = confined.run([*CLI, "run", str(RECIPE), "--out", str(out), "--nproc", "2", *SHORT], timeout=300,
                       env=_env())
    assert res.returncode == 0, (res.stdout[-3000:], res.stderr[-3000:])
    return out, res


def test_two_ranks_train_the_detection_recipe_and_write_ap_once(two_rank_run):
    out, res = two_rank_run
    assert "data-parallel over 2 ranks (gloo)" in res.stdout
    m = json.loads((out / "metrics.json").read_text())
    assert m["task"] == "detection" and m["primary"] == "ap50"
    assert [s["stage"] for s in m["stages"]] == ["train", "distill", "prune", "finetune", "export", "evaluate"]
    for metrics in (m["student"]["metrics"], m["teacher"]["metrics"], m["onnx"][0]["metrics"]):
        assert {"ap", "ap50", "ap75"} <= set(metrics) and 0.0 <= metrics["ap"] <= metrics["ap50"] <= 1.0
        assert metrics["images"] == m["dataset"]["n_val"] == 12  # the whole split, not one rank's part
    # Rank 0 alone wrote: one line per epoch and one result; the ONNX was exported (and scored) once.
    log = (out / "log.txt").read_text()
    assert log.count("metrics: ap50=") == 1 and log.count("student epoch 1/1 train_loss") == 2
    assert not list(out.rglob(".*tmp*"))
    assert (out / "tiny_detector_kd_cb50.onnx").is_file() and len(m["onnx"]) == 1
    assert abs(m["onnx"][0]["sparsity"] - 0.5) < 0.02 and m["student"]["kd"] is True


def test_two_rank_validation_ap_equals_one_process(two_rank_run):
    """The fine-tune's last validation ran over 2 ranks; the evaluate stage scored the same model in one process
    (rank 0 alone, another batch size). Equal to the last digit, and not trivially (it found boxes)."""
    out, _ = two_rank_run
    two = torch.load(out / "checkpoints" / "03_finetune_student.pt", weights_only=True)["history"][-1]["val"]
    one = json.loads((out / "metrics.json").read_text())["student"]["metrics"]
    assert one["detections"] > 0 and one["ap50"] > 0
    assert {k: two[k] for k in AP_KEYS} == {k: one[k] for k in AP_KEYS}


EVAL_SCRIPT = textwrap.dedent("""
    import json, sys
    from robot_compress.compress import distributed, recipe as rc
    from robot_compress.compress.evaluate import evaluate_torch
    from robot_compress.compress.pipeline import build_model, load_data

    recipe_path, checkpoint, out = sys.argv[1:4]
    distributed.init_from_env("cpu")
    recipe = rc.load_recipe(recipe_path, [f"teacher.checkpoint={checkpoint}"])
    data = load_data(recipe.dataset)
    model = build_model(recipe.teacher, data.info, "teacher").model
    metrics = evaluate_torch(model, data.val, data.info, batch_size=5, device="cpu")
    metrics["world"] = distributed.world_size()
    json.dump(metrics, open(f"{out}.{distributed.rank()}.json", "w"))
    distributed.leave()
""")


def test_gathered_ap_of_a_fixed_model_is_the_one_process_ap_on_every_rank(two_rank_run, tmp_path):
    """torchrun's own launcher, the trained FCOS teacher scored over 2 ranks (5 per batch: 3/2, 3/2, 1/1) and in
    this process: every rank gets the one-process metrics."""
    from robot_compress.compress import recipe as rc
    from robot_compress.compress.evaluate import evaluate_torch
    from robot_compress.compress.pipeline import build_model, load_data

    out, _ = two_rank_run
    checkpoint = out / "teacher.pt"
    script = tmp_path / "eval_ranks.py"
    script.write_text(EVAL_SCRIPT)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
                "--master_addr", "127.0.0.1", "--master_port", "29517"]
    res = confined.run([*torchrun, str(script), str(RECIPE), str(checkpoint), str(tmp_path / "m")], timeout=180,
                       env=_env())
    assert res.returncode == 0, (res.stdout[-3000:], res.stderr[-3000:])
    ranks = [json.loads((tmp_path / f"m.{r}.json").read_text()) for r in range(2)]
    assert ranks[0]["world"] == ranks[1]["world"] == 2

    recipe = rc.load_recipe(RECIPE, [f"teacher.checkpoint={checkpoint}"])
    data = load_data(recipe.dataset)
    model = build_model(recipe.teacher, data.info, "teacher").model
    one = evaluate_torch(model, data.val, data.info, batch_size=12, device="cpu")
    assert one["detections"] > 0 and one["images"] == 12
    for metrics in ranks:
        assert {k: metrics[k] for k in AP_KEYS} == {k: one[k] for k in AP_KEYS}


FAIL_ON_RANK_1 = textwrap.dedent("""
    # Rank 1 meets bad data in its second training epoch: its own error (exit 2), while rank 0 is mid-run.
    import os
    if os.environ.get("RANK") == "1":
        import robot_compress.compress.train as train
        from robot_compress.compress.data import DatasetError

        real, calls = train.train_one_epoch, []

        def failing(*args, **kwargs):
            calls.append(1)
            if len(calls) == 2:
                raise DatasetError("frame 7 of rank 1's part is a truncated PNG")
            return real(*args, **kwargs)

        train.train_one_epoch = failing
""")


def test_the_launcher_names_the_rank_that_failed_first_with_its_error(tmp_path):
    """Rank 1 fails on its own; rank 0 only sees the broken collective and the agent's SIGTERM. The one line
    names rank 1, its exit status and its message (it used to say 'rank 0 was killed by SIGTERM')."""
    _confinement()
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(FAIL_ON_RANK_1)
    out = tmp_path / "failed"
    res = confined.run([*CLI, "run", str(RECIPE), "--out", str(out), "--nproc", "2",
                        "--set", "stages=[{stage: train, model: teacher, epochs: 3, batch_size: 8}]"],
                       timeout=240, env=_env(PYTHONPATH=str(site)))
    assert res.returncode == 1
    lines = [ln for ln in res.stderr.splitlines() if ln.strip() and "hostname of the client socket" not in ln]
    assert len(lines) == 1, res.stderr[-3000:]
    assert "rank 1 exited with code 2 (DatasetError: frame 7 of rank 1's part is a truncated PNG)" in lines[0]
    assert "resume" in lines[0] and "Traceback" not in res.stderr
    status = json.loads((out / "run.json").read_text())
    assert status["status"] == "failed" and status["error"].startswith("rank 1 exited with code 2")
    assert not (out / "metrics.json").exists()


class _Failure:
    """torch's ProcessFailure as the launcher reads it: exit code, message, whole-second timestamp, error file."""

    def __init__(self, exitcode: int, message: str = "", timestamp: int = 100, time: float | None = None):
        self.exitcode, self.message, self.timestamp = exitcode, message, timestamp
        extra = {"timestamp": timestamp} if time is None else {"timestamp": timestamp, "time": time}
        self.error_file_data = {"message": {"message": message, "extraInfo": extra}} if message else {}


def _first(failures: dict) -> str:
    from robot_compress.compress.launch import _cause_order, _describe

    rank, failure = min(failures.items(), key=lambda item: _cause_order(item[1]))
    return _describe(rank, failure)


def test_the_rank_with_its_own_error_is_named_before_ranks_that_were_stopped():
    own = _Failure(2, "DatasetError: truncated PNG", 100, 100.4)
    # rank 0 cleaning up after the broken collective when the agent's SIGTERM arrives (default handler again)
    assert _first({0: _Failure(-signal.SIGTERM, "DistBackendError: Connection closed by peer", 100, 100.5),
                   1: own}) == "rank 1 exited with code 2 (DatasetError: truncated PNG)"
    assert _first({0: _Failure(-signal.SIGTERM, timestamp=101), 1: own}).startswith("rank 1 exited with code 2")
    assert _first({0: _Failure(143, "Interrupted: SIGTERM", 100, 100.2), 1: own}).startswith("rank 1 exited")
    assert _first({0: _Failure(1, "DistBackendError: gloo", 100, 100.1), 1: own}).startswith("rank 1 exited")
    # a rank killed outright (OOM's SIGKILL) is a cause; its peers' errors in the same second follow from it
    assert _first({0: _Failure(1, "RuntimeError: peer gone", 100, 100.9),
                   1: _Failure(-signal.SIGKILL, timestamp=100)}) == "rank 1 was killed by SIGKILL"
    # two ranks failing on their own in one second: the earlier by their own sub-second times
    assert _first({0: _Failure(2, "DatasetError: b", 100, 100.7),
                   1: _Failure(2, "DatasetError: a", 100, 100.3)}) == "rank 1 exited with code 2 (DatasetError: a)"
    # nothing but stopped ranks (the user's SIGTERM): still one of them is named
    assert _first({0: _Failure(-signal.SIGTERM, timestamp=100)}) == "rank 0 was killed by SIGTERM"
