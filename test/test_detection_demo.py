"""`python -m robot_compress.tools.demo --task detection` in a quick mode: the detection chain runs on each
footage source and leaves a summary with results, boxes and (labelled footage) AP/AP50 per answering source."""
from __future__ import annotations

import json
import sys

import pytest
from test_demo import _run_demo

from robot_compress.tools import bags
from robot_compress.tools.demo import PENNFUDAN_ZIP, find_vtest

pytestmark = [pytest.mark.ros, pytest.mark.slow]

# With the edge: Penn-Fudan val frames (labelled), the link dropped for the middle third; the edge here shares a
# loaded 2-core CPU, so the camera plays slowly and the edge gets a generous deadline. Local-only: vtest.avi
# (JPEG, unlabelled) and the generated scene (labelled, always available).
CASES = [
    pytest.param("pennfudan", ["--rate-hz", "2", "--deadline-ms", "2000", "--hedge-ms", "1500"],
                 id="pennfudan-with-edge",
                 marks=pytest.mark.skipif(not PENNFUDAN_ZIP.is_file(), reason="../shared Penn-Fudan absent")),
    pytest.param("vtest", ["--no-edge"], id="vtest-jpeg-local",
                 marks=pytest.mark.skipif(find_vtest(False) is None, reason="Debian opencv-doc not installed")),
    pytest.param("synthetic", ["--no-edge"], id="synthetic-local"),
]


@pytest.mark.parametrize("source, extra", CASES)
def test_detection_demo_quick_run(tmp_path, source, extra):
    out = tmp_path / "demo_output"
    cmd = [sys.executable, "-m", "robot_compress.tools.demo", "--task", "detection", "--frames", "30",
           "--out", str(out), "--no-apt", "--source", source, *extra]
    proc = _run_demo(cmd, timeout_s=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "robot_compress demo summary" in proc.stdout and "task: detection" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "detection" and summary["frames_published"] == 30
    assert summary["unaccounted"] == 0, summary
    assert summary["results"] >= 15, summary
    # the demo says which detectors it runs: the shipped Penn-Fudan pair, or announced synthetic stand-ins
    assert summary["models"].startswith("shipped models") or "SYNTHETIC" in summary["models"], summary["models"]
    # boxes counted per answering source, one entry per source that answered
    boxes = summary["boxes_per_source"]
    assert {s: v["frames"] for s, v in boxes.items()} == summary["per_source"]
    assert all(f"boxes from {s}" in proc.stdout for s in boxes)
    with bags.BagReader(out / "output_bag") as reader:
        assert reader.topics["/perception/result"].count >= summary["results"]
        assert "/perception/mask" not in reader.topics or reader.topics["/perception/mask"].count == 0
        labelled = bags.LABEL_BOXES_TOPIC in reader.topics
    if summary["footage"].get("class_names"):
        assert labelled
        acc = summary["accuracy"]
        assert acc["frames_scored"] == summary["results"] and 0.0 <= acc["ap50"] <= 1.0 and 0.0 <= acc["ap"] <= 1.0
        assert {s: v["frames"] for s, v in acc["by_source"].items()} == summary["per_source"]
        assert "frames from local" in proc.stdout and "AP50" in proc.stdout
    else:
        assert not labelled and "n/a (footage has no labels)" in proc.stdout
    if summary["edge"]:
        # the link goes down for frames 10..19: both sources answer, the switch-overs are counted
        assert set(summary["per_source"]) == {"edge", "local"}, summary
        assert summary["source_switches"] >= 1
    else:
        assert "EDGE DISABLED" in proc.stdout and set(summary["per_source"]) == {"local"}


def test_detection_demo_refuses_a_source_without_boxes(tmp_path):
    cmd = [sys.executable, "-m", "robot_compress.tools.demo", "--task", "detection", "--source", "camvid",
           "--frames", "6", "--out", str(tmp_path / "o"), "--no-apt", "--no-edge"]
    proc = _run_demo(cmd, timeout_s=120)
    assert proc.returncode == 1 and "--source camvid has no detection labels" in proc.stdout
