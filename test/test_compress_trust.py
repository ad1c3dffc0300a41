"""Issue 13, finding 1: nothing the toolkit loads can run code. Checkpoints are read with weights_only=True
(never a silent unsafe retry), a pickle that needs more is refused with one error line naming the file and
--trust-checkpoint, and CIFAR python batches go through an unpickler that builds numpy arrays and builtin
data only. Checkpoints written before the fix (numpy RNG state inside) still load safely and resume."""
from __future__ import annotations

import json
import os
import pickle
import random

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from robot_compress.cli import main  # noqa: E402

pytestmark = pytest.mark.toolkit
DATA = ["--dataset", "synthetic_cls", "--input-size", "16", "16", "--data-options", '{"n": 48}']


class _Payload:
    """Unpickling this runs a shell command that creates `marker`."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _payload_checkpoint(path, marker):
    from robot_compress.compress.models import get_model

    torch.save({"model": get_model("tiny_cnn", 4).state_dict(), "extra": _Payload(marker)}, path)
    return path


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_payload_checkpoint_is_refused_and_never_runs(tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = _payload_checkpoint(tmp_path / "evil.th", marker)
    for argv in (["evaluate", "--checkpoint", str(evil), "--model", "tiny_cnn", *DATA, "--out", str(tmp_path / "e")],
                 ["export", "--checkpoint", str(evil), "--model", "tiny_cnn", *DATA,
                  "--output", str(tmp_path / "x.onnx")],
                 ["distill", "--teacher-checkpoint", str(evil), "--teacher", "tiny_cnn", "--student", "tiny_cnn",
                  *DATA, "--out", str(tmp_path / "d")]):
        assert main(argv) == 2
        line = _one_error_line(capsys)
        assert "error:" in line and "evil.th" in line and "--trust-checkpoint" in line and "system" in line
        assert not marker.exists()
    assert not (tmp_path / "e").exists() and not (tmp_path / "d").exists() and not (tmp_path / "x.onnx").exists()


def test_payload_in_a_recipe_checkpoint_is_refused(tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = _payload_checkpoint(tmp_path / "evil.pt", marker)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: r\ndataset: {{kind: synthetic_cls, input_size: [16, 16], options: {{n: 48}}}}\n"
                      f"student: {{model: tiny_cnn, checkpoint: {evil}}}\nstages: [{{stage: evaluate, onnx: false}}]\n")
    assert main(["run", str(recipe), "--out", str(tmp_path / "o")]) == 2
    assert "--trust-checkpoint" in _one_error_line(capsys)
    assert not marker.exists() and not (tmp_path / "o").exists()


def test_models_api_never_falls_back_to_unsafe_loading(tmp_path):
    from robot_compress.compress.models import UnsafeCheckpointError, get_model, load_checkpoint
    from robot_compress.compress.train import read_checkpoint

    marker = tmp_path / "pwned"
    evil = _payload_checkpoint(tmp_path / "evil.pt", marker)
    with pytest.raises(UnsafeCheckpointError, match="evil.pt"):
        load_checkpoint(get_model("tiny_cnn", 4), evil)
    with pytest.raises(UnsafeCheckpointError, match="--trust-checkpoint"):
        read_checkpoint(evil)
    assert not marker.exists()


def test_trust_flag_loads_a_checkpoint_the_user_trusts(tmp_path, capsys):
    """Training scripts often pickle their argparse.Namespace beside the weights: that needs full unpickling,
    so it is refused by default and loaded with --trust-checkpoint."""
    import argparse

    from robot_compress.compress.models import get_model

    whole = tmp_path / "with_args.pt"
    torch.save({"state_dict": get_model("tiny_cnn", 4).state_dict(), "args": argparse.Namespace(lr=0.1)}, whole)
    argv = ["evaluate", "--checkpoint", str(whole), "--model", "tiny_cnn", *DATA]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 2
    assert "--trust-checkpoint" in _one_error_line(capsys)
    assert main([*argv, "--out", str(tmp_path / "b"), "--trust-checkpoint"]) == 0
    assert (tmp_path / "b" / "metrics.json").is_file()


def test_cifar_batch_with_a_payload_is_refused(tmp_path):
    from robot_compress.compress.data import DatasetError, load_dataset

    marker = tmp_path / "pwned"
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    with open(root / "batches.meta", "wb") as f:
        pickle.dump({"label_names": ["a"] * 10}, f)
    for i in range(1, 6):
        with open(root / f"data_batch_{i}", "wb") as f:
            pickle.dump({"data": _Payload(marker), "labels": [0]}, f, protocol=2)
    with pytest.raises(DatasetError, match="data_batch_1"):
        load_dataset("cifar10", tmp_path)
    assert not marker.exists()


def test_cifar_batch_in_python2_protocol_still_loads(tmp_path):
    """The real batches are Python 2 pickles (protocol 2, latin1 strings); numpy arrays and lists pass."""
    from robot_compress.compress.data import load_cifar_batch

    path = tmp_path / "data_batch_1"
    data = np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072)
    with open(path, "wb") as f:
        pickle.dump({"batch_label": "training batch 1 of 5", "labels": [3, 7], "data": data,
                     "filenames": ["a.png", "b.png"]}, f, protocol=2)
    batch = load_cifar_batch(path)
    assert batch["labels"] == [3, 7] and np.array_equal(batch["data"], data)


# ---------------------------------------------------------------------------------- checkpoints of older code


def _legacy_save(path, model, config, info, epoch, history, optimizer):
    """A checkpoint exactly as save_checkpoint wrote it before issue 13 (numpy RNG state as an ndarray tuple,
    no fingerprint, no loader state)."""
    from robot_compress.compress.train import CHECKPOINT_FORMAT, info_to_dict

    state = {"format": CHECKPOINT_FORMAT, "model": model.state_dict(), "model_name": "tiny_cnn", "model_cfg": {},
             "num_classes": len(info.labels), "dataset_info": info_to_dict(info), "config": config,
             "role": "student", "epoch": int(epoch), "history": list(history), "optimizer": optimizer.state_dict(),
             "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}}
    torch.save(state, path)


def test_checkpoint_of_the_previous_format_loads_with_weights_only(tmp_path):
    from robot_compress.compress.data import load_dataset
    from robot_compress.compress.models import _checkpoint_safe_globals, get_model
    from robot_compress.compress.train import read_checkpoint, set_rng_state

    _, info = load_dataset("synthetic_cls", None, input_size=(16, 16))
    model = get_model("tiny_cnn", 4)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.zeros(2, 3, 16, 16)).sum().backward()
    opt.step()
    np.random.seed(5)
    _legacy_save(tmp_path / "old.pt", model, {"a": 1}, info, 1, [{"epoch": 1, "val": {"top1": 0.5}}], opt)
    expected = np.random.random()
    with torch.serialization.safe_globals(_checkpoint_safe_globals()):
        state = torch.load(tmp_path / "old.pt", map_location="cpu", weights_only=True)
    assert read_checkpoint(tmp_path / "old.pt")["epoch"] == 1
    set_rng_state(state["rng"])  # the ndarray form is still restored
    assert np.random.random() == expected


def test_a_run_of_the_previous_format_resumes_with_one_warning(tmp_path, capsys, monkeypatch):
    """A training checkpoint written before fingerprints (the CamVid runs in progress) is reused when its stored
    stage settings match, as before, with a single warning line; every torch.load of the run is weights_only."""
    from robot_compress.compress.train import read_checkpoint

    out = tmp_path / "run"
    argv = ["train", "--model", "tiny_cnn", *DATA, "--seed", "3", "--out", str(out)]
    assert main([*argv, "--epochs", "1"]) == 0
    ckpt = out / "checkpoints" / "00_train_student.pt"
    state = read_checkpoint(ckpt)
    from robot_compress.compress.data import load_dataset
    from robot_compress.compress.models import get_model
    from robot_compress.compress.train import restore_masks

    _, info = load_dataset("synthetic_cls", None, input_size=(16, 16), n=48)
    model = get_model("tiny_cnn", 4)
    restore_masks(model, state["model"])
    model.load_state_dict(state["model"])
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    opt.load_state_dict(state["optimizer"])
    _legacy_save(ckpt, model, state["config"], info, 1, state["history"], opt)
    run = json.loads((out / "run.json").read_text())
    del run["fingerprint"]  # a run.json of the previous code
    (out / "run.json").write_text(json.dumps(run))
    capsys.readouterr()

    seen = []
    real_load = torch.load

    def recording_load(*args, **kwargs):
        seen.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    assert main([*argv, "--epochs", "2"]) == 0
    log = capsys.readouterr().out
    assert sum("predates stage fingerprints" in line for line in log.splitlines()) == 1
    assert f"resumed from {ckpt} at epoch 1/2" in log
    assert seen and all(flag is True for flag in seen)
    assert read_checkpoint(ckpt)["fingerprint"]  # the resumed run writes the new form
