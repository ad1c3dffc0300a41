"""Issue 13, finding 7: progress shows in a log. Off a terminal, training prints a line every few batches with
rate and eta, each epoch its pace and the stage's eta, evaluation its own progress; log.txt holds every line
the console showed (stage lines included)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from robot_compress.cli import main  # noqa: E402

pytestmark = pytest.mark.toolkit
RECIPE = Path(__file__).resolve().parents[1] / "config" / "examples" / "tiny_synthetic_kd_classblind.yaml"


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    out = tmp_path_factory.mktemp("progress") / "run"
    capture = []
    import robot_compress.compress.cli as toolkit_cli

    real = toolkit_cli._log
    toolkit_cli._log = capture.append  # what the console shows (stdout is not a terminal here either)
    try:
        assert main(["run", str(RECIPE), "--out", str(out)]) == 0
    finally:
        toolkit_cli._log = real
    return capture, (out / "log.txt").read_text().splitlines()


def test_training_prints_batch_progress_with_rate_and_eta(logged):
    console, _ = logged
    batch = [line for line in console if re.match(r"student epoch 2/3: batch \d+/15 \(\d+ %\), [\d.]+ batch/s, "
                                                   r"eta \d+s, loss [\d.]+$", line)]
    assert len(batch) >= 5  # about ten lines per pass (15 batches: every 2nd)
    epoch = next(line for line in console if line.startswith("student epoch 2/3 train_loss="))
    assert re.search(r"\([\d.]+ s, [\d.]+ items/s, stage eta \d+s\)$", epoch)


def test_evaluation_prints_progress(logged):
    console, _ = logged
    assert any(re.match(r"evaluate: batch \d+/\d+ ", line) for line in console)  # torch
    assert any(re.match(r"evaluate tiny_cnn_kd_cb50\.onnx: frame \d+/80 ", line) for line in console)  # Engine


def test_log_file_holds_everything_the_console_showed(logged):
    console, log = logged
    messages = [line.split(" ", 1)[1] for line in log]  # "<utc time> <message>"
    assert messages == console
    assert "[tiny_synthetic_kd_classblind] stage 1/6: train" in messages
    assert any(m.startswith("metrics: top1=") for m in messages)


def test_progress_lines_only_off_a_terminal(monkeypatch):
    from robot_compress.compress import progress

    lines = []
    monkeypatch.setattr(progress, "is_terminal", lambda: False)
    assert list(progress.track(range(20), "x", log=lines.append, every=5)) == list(range(20))
    assert [line.split(":")[1].split("(")[0].strip() for line in lines] == ["batch 5/20", "batch 10/20",
                                                                             "batch 15/20"]
    monkeypatch.setattr(progress, "is_terminal", lambda: True)  # a terminal gets tqdm's bar instead
    lines.clear()
    assert list(progress.track(range(20), "x", log=lines.append, every=5)) == list(range(20))
    assert lines == []
