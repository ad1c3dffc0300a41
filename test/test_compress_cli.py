"""`robot-compress` toolkit commands: --help, bad input -> exit 2 with one clear message and no results,
and resume from the per-epoch checkpoint."""
from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from robot_compress.cli import main  # noqa: E402

pytestmark = pytest.mark.toolkit
TOOLKIT = ["train", "distill", "prune", "finetune", "evaluate", "export", "quantize", "run", "sweep", "report"]
DATA = ["--dataset", "synthetic_cls", "--input-size", "16", "16", "--data-options", '{"n": 48}']


@pytest.mark.parametrize("command", TOOLKIT)
def test_help(command, capsys):
    assert main([command, "--help"]) == 0
    assert f"robot-compress {command}" in capsys.readouterr().out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 1-epoch teacher on 4 synthetic classes, shared by the bad-input cases."""
    out = tmp_path_factory.mktemp("cli") / "teacher"
    assert main(["train", "--model", "tiny_cnn", *DATA, "--epochs", "1", "--out", str(out)]) == 0
    return out


def _bad(capsys, argv, *needles):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1, err  # one message, no traceback, no usage dump
    assert "error" in lines[0] and "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_pruning_amount_outside_range(trained, tmp_path, capsys):
    for amount in ("1.0", "-0.1", "abc"):
        _bad(capsys, ["prune", "--checkpoint", str(trained / "student.pt"), "--criterion", "class-blind",
                      "--amount", amount, "--out", str(tmp_path / "p")], "amount")
    assert not (tmp_path / "p").exists()


def test_teacher_student_class_mismatch(trained, tmp_path, capsys):
    out = tmp_path / "d"
    _bad(capsys, ["distill", "--teacher-checkpoint", str(trained / "student.pt"), "--student", "tiny_cnn",
                  "--dataset", "synthetic_cls", "--input-size", "16", "16",
                  "--data-options", '{"n": 48, "num_classes": 3}', "--out", str(out)], "class-count mismatch")
    assert not (out / "metrics.json").exists()


def test_wrong_input_size(trained, tmp_path, capsys):
    _bad(capsys, ["train", "--model", "lenet5", *DATA, "--out", str(tmp_path / "l")], "input size", "16x16")
    _bad(capsys, ["evaluate", "--checkpoint", str(trained / "student.pt"), "--input-size", "24", "24",
                  "--out", str(tmp_path / "e")], "wrong input size")
    assert not (tmp_path / "l" / "metrics.json").exists() and not (tmp_path / "e" / "metrics.json").exists()


def test_corrupt_checkpoint(trained, tmp_path, capsys):
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes((trained / "student.pt").read_bytes()[:300])
    _bad(capsys, ["export", "--checkpoint", str(bad), "--model", "tiny_cnn", *DATA,
                  "--output", str(tmp_path / "x.onnx")], "corrupt.pt")
    assert not (tmp_path / "x.onnx").exists()
    _bad(capsys, ["finetune", "--checkpoint", str(bad), "--model", "tiny_cnn", *DATA, "--out", str(tmp_path / "f")],
         "corrupt")
    assert not (tmp_path / "f" / "metrics.json").exists()


def test_unknown_recipe_key(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: x\ndataset: {kind: synthetic_cls}\nstudent: {model: tiny_cnn}\n"
                      "stages:\n  - {stage: prune, criterion: random, amount: 0.5, amont: 0.5}\n")
    _bad(capsys, ["run", str(recipe), "--out", str(tmp_path / "o")], "unknown key", "amont")
    recipe.write_text("name: x\ndataset: {kind: synthetic_cls}\nstudent: {model: tiny_cnn}\nlearning_rate: 1\n"
                      "stages: [{stage: evaluate}]\n")
    _bad(capsys, ["run", str(recipe), "--out", str(tmp_path / "o")], "learning_rate")
    assert not (tmp_path / "o").exists()


def test_empty_dataset_and_missing_path(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    _bad(capsys, ["train", "--model", "tiny_cnn", "--dataset", "cifar10", "--data-root", str(empty),
                  "--out", str(tmp_path / "t1")])
    _bad(capsys, ["train", "--model", "tiny_cnn", "--dataset", "cifar10", "--data-root", str(tmp_path / "nope"),
                  "--out", str(tmp_path / "t2")], "not found")
    _bad(capsys, ["run", str(tmp_path / "missing.yaml")], "missing.yaml")
    assert not (tmp_path / "t1" / "metrics.json").exists() and not (tmp_path / "t2").exists()


def test_failure_mid_run_marks_dir_failed(trained, tmp_path, capsys):
    """A stage that fails after the dir exists leaves FAILED + run.json status, never metrics.json."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "name: fails\ndataset: {kind: synthetic_cls, input_size: [16, 16], options: {n: 48}}\n"
        "student: {model: tiny_cnn}\nstages:\n  - {stage: train, epochs: 1}\n  - {stage: quantize}\n")
    _bad(capsys, ["run", str(recipe), "--out", str(tmp_path / "o")], "export stage")
    assert (tmp_path / "o" / "FAILED").is_file() and not (tmp_path / "o" / "metrics.json").exists()
    assert json.loads((tmp_path / "o" / "run.json").read_text())["status"] == "failed"


def test_resume_continues_from_checkpoint(tmp_path, capsys):
    out = tmp_path / "resume"
    base = ["train", "--model", "tiny_cnn", *DATA, "--seed", "3", "--out", str(out)]
    assert main([*base, "--epochs", "1"]) == 0
    ckpt = out / "checkpoints" / "00_train_student.pt"
    first = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert first["epoch"] == 1 and first["config"]["epochs"] == 1 and first["config"]["stage"]["stage"] == "train"
    capsys.readouterr()

    assert main([*base, "--epochs", "2"]) == 0
    log = capsys.readouterr().out
    assert f"resumed from {ckpt} at epoch 1/2" in log
    assert "epoch 1/2" not in log.replace("at epoch 1/2", "")  # epoch 1 was not trained again
    second = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert second["epoch"] == 2 and len(second["history"]) == 2
    assert second["history"][0] == first["history"][0]  # epoch 1's record carried over, not recomputed
    assert "resumed from" in (out / "log.txt").read_text()
    stage = json.loads((out / "metrics.json").read_text())["stages"][0]
    assert stage["resumed_from_epoch"] == 1
    # The run's time includes epoch 1, trained by the first process (reports and model cards use it).
    epochs = [h["seconds"] for h in second["history"]]
    assert all(t > 0 for t in epochs) and stage["train_seconds"] == pytest.approx(sum(epochs), abs=2e-3)
    from robot_compress.compress.report import run_seconds

    assert run_seconds({"stages": [stage]}) >= sum(epochs) - 2e-3


def _snapshot(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_resume_refuses_a_different_config(tmp_path, capsys):
    """Issue 13, finding 3: the refused rerun leaves the finished run byte-identical (it used to delete
    metrics.json, rewrite recipe.yaml and run.json and write FAILED before refusing)."""
    out = tmp_path / "r"
    assert main(["train", "--model", "tiny_cnn", *DATA, "--epochs", "1", "--out", str(out)]) == 0
    before = _snapshot(out)
    capsys.readouterr()
    rerun = ["train", "--model", "tiny_cnn", *DATA, "--epochs", "1", "--lr", "0.2", "--out", str(out)]
    code = main(rerun)
    assert _snapshot(out) == before
    assert code == 2
    assert "different configuration" in capsys.readouterr().err
    _bad(capsys, rerun, "different configuration", "--restart")
