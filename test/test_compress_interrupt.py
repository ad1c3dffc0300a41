"""Issue 13, findings 4 and 5: SIGINT/SIGTERM end a run with one line, run.json status `interrupted` and exit
130/143, and the rerun resumes bit-exactly (RNG and loader shuffle state travel in the checkpoint)."""
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

from robot_compress.cli import main  # noqa: E402

pytestmark = pytest.mark.toolkit
REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "config" / "examples" / "tiny_synthetic_kd_classblind.yaml"


def _augmented_recipe(tmp_path: Path) -> Path:
    """The tiny recipe with random crop/flip augmentation, so the global torch RNG matters as well."""
    data = yaml.safe_load(RECIPE.read_text())
    data.pop("output_dir")
    data["dataset"]["options"]["augment"] = True
    data["stages"] = [s for s in data["stages"] if s["stage"] not in ("export", "evaluate")]
    path = tmp_path / "aug.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _main(argv):
    """main(argv), or 'escaped' when a KeyboardInterrupt gets out of it (it must not)."""
    try:
        return main(argv)
    except KeyboardInterrupt:
        return "escaped"


def _interrupt_at_epoch_call(monkeypatch, n: int):
    """Ctrl-C at the start of the n-th training epoch of the process (counted over all stages)."""
    from robot_compress.compress import train

    calls = {"n": 0}
    real_epoch = train.train_one_epoch

    def epoch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(train, "train_one_epoch", epoch)
    return lambda: monkeypatch.setattr(train, "train_one_epoch", real_epoch)


def _weights(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def test_ctrl_c_ends_with_one_line_exit_130_and_status_interrupted(tmp_path, monkeypatch, capsys):
    """Finding 4 (in process): a ~60-line traceback and death by SIGINT before."""
    _interrupt_at_epoch_call(monkeypatch, 2)
    out = tmp_path / "run"
    assert _main(["run", str(_augmented_recipe(tmp_path)), "--out", str(out)]) == 130
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "interrupted by SIGINT" in err and "Traceback" not in err
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "interrupted" and not (out / "FAILED").exists() and not (out / "metrics.json").exists()
    assert "interrupted by SIGINT" in (out / "log.txt").read_text()


def test_interrupted_run_resumes_bit_exactly(tmp_path, monkeypatch, capsys):
    """Finding 5: the loader used to be reseeded on resume, so the resumed run trained on other batches."""
    recipe = _augmented_recipe(tmp_path)
    assert main(["run", str(recipe), "--out", str(tmp_path / "whole")]) == 0
    whole = _weights(tmp_path / "whole" / "student.pt")

    restore = _interrupt_at_epoch_call(monkeypatch, 5)  # 3 teacher epochs, distill epoch 1, stop in epoch 2
    out = tmp_path / "split"
    _main(["run", str(recipe), "--out", str(out)])
    restore()
    capsys.readouterr()
    assert main(["run", str(recipe), "--out", str(out)]) == 0
    assert "resumed from" in capsys.readouterr().out
    resumed = _weights(out / "student.pt")
    assert resumed.keys() == whole.keys()
    differing = [k for k in whole if not torch.equal(whole[k], resumed[k])]
    assert not differing, f"resumed run differs from the uninterrupted one in {differing[:5]}"


def _long_recipe(tmp_path: Path) -> Path:
    path = tmp_path / "long.yaml"
    path.write_text("name: long\ndataset: {kind: synthetic_cls, input_size: [16, 16], options: {n: 320}}\n"
                    "student: {model: tiny_cnn}\n"
                    "stages: [{stage: train, epochs: 100000, batch_size: 16}, {stage: evaluate, onnx: false}]\n")
    return path


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_ends_the_run_with_one_line_and_status_interrupted(tmp_path, sig, code):
    out = tmp_path / "run"
    ckpt = out / "checkpoints" / "00_train_student.pt"
    proc = subprocess.Popen([sys.executable, "-m", "robot_compress.cli", "run", str(_long_recipe(tmp_path)),
                             "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 180  # a guard against a hung child, not a timing assertion
        while not ckpt.is_file() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ckpt.is_file(), "the run never finished its first epoch"
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and f"interrupted by {signal.Signals(sig).name}" in lines[0], err
    assert json.loads((out / "run.json").read_text())["status"] == "interrupted"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)  # the last checkpoint is whole
    assert state["epoch"] >= 1 and not list(ckpt.parent.glob(".*tmp*"))
