"""`robot-compress score` on tiny hand-built bags with hand-computed accuracy and mIoU."""
from __future__ import annotations

import json

import numpy as np
import pytest

from robot_compress.cli import main as cli_main
from robot_compress.tools import bags
from robot_compress.tools.score import ScoreError, score

MASK = "/perception/mask"
RESULT = "/perception/result"
S1, S2, S3 = 1_000_000_000, 1_100_000_000, 1_200_000_000


def _seg_bag(path):
    """Two answered labelled frames, one unanswered labelled frame, one unlabelled output."""
    info = {"class_names": ["a", "b", "c"], "ignore_index": 9}
    with bags.BagWriter(path) as bag:
        bag.write_string(bags.INFO_TOPIC, json.dumps(info), S1)
        bag.write_mask(bags.LABEL_MASK_TOPIC, np.array([[0, 0, 1], [1, 2, 9]]), S1, "cam")
        bag.write_mask(bags.LABEL_MASK_TOPIC, np.array([[2, 2, 2], [0, 0, 0]]), S2, "cam")
        bag.write_mask(bags.LABEL_MASK_TOPIC, np.array([[1, 1, 1], [1, 1, 1]]), S3, "cam")
        bag.write_mask(MASK, np.array([[0, 1, 1], [1, 2, 0]]), S1, "cam")
        bag.write_mask(MASK, np.array([[2, 2, 0], [0, 0, 0]]), S2, "cam")
        bag.write_mask(MASK, np.array([[0, 0, 0], [0, 0, 0]]), S2, "other_cam")  # not labelled: not scored


def test_segmentation_hand_checked(tmp_path):
    path = tmp_path / "out"
    _seg_bag(path)
    s = score(path)
    assert (s.task, s.frames_labelled, s.frames_scored, s.unanswered) == ("segmentation", 3, 2, 1)
    # Frame 1: 4 of 5 scored pixels right (the void 9 is not scored); IoU a=1/2, b=2/3, c=1.
    assert s.per_frame[0]["pixel_acc"] == pytest.approx(4 / 5)
    assert s.per_frame[0]["miou"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    # Frame 2: 5 of 6; class b absent from both -> not averaged; IoU a=3/4, c=2/3.
    assert s.per_frame[1]["pixel_acc"] == pytest.approx(5 / 6)
    assert s.per_frame[1]["miou"] == pytest.approx((3 / 4 + 2 / 3) / 2)
    # Overall confusion matrix: a->a 4, a->b 1, b->b 2, c->c 3, c->a 1: accuracy 9/11,
    # IoU a = 4/6, b = 2/3, c = 3/4.
    assert s.overall["pixel_acc"] == pytest.approx(9 / 11)
    assert s.overall["miou"] == pytest.approx((4 / 6 + 2 / 3 + 3 / 4) / 3)


def test_segmentation_is_also_scored_per_answering_source(tmp_path):
    path = tmp_path / "out"
    _seg_bag(path)
    # The same two answered frames, frame 1 answered by the edge, frame 2 by the local model.
    info = {"class_names": ["a", "b", "c"], "ignore_index": 9}
    path2 = tmp_path / "out2"
    with bags.BagWriter(path2) as bag:
        bag.write_string(bags.INFO_TOPIC, json.dumps(info), S1)
        bag.write_mask(bags.LABEL_MASK_TOPIC, np.array([[0, 0, 1], [1, 2, 9]]), S1, "cam")
        bag.write_mask(bags.LABEL_MASK_TOPIC, np.array([[2, 2, 2], [0, 0, 0]]), S2, "cam")
        bag.write_mask(MASK, np.array([[0, 1, 1], [1, 2, 0]]), S1, "cam")
        bag.write_mask(MASK, np.array([[2, 2, 0], [0, 0, 0]]), S2, "cam")
        for stamp, source in ((S1, "edge"), (S2, "local")):
            rec = {"stamp": {"sec": stamp // 1_000_000_000, "nanosec": stamp % 1_000_000_000}, "frame_id": "cam",
                   "source": source}
            bag.write_string(RESULT, json.dumps(rec), stamp)
    s = score(path2)
    assert s.by_source["edge"] == {"frames": 1, "pixel_acc": pytest.approx(4 / 5),
                                   "miou": pytest.approx((1 / 2 + 2 / 3 + 1) / 3)}
    assert s.by_source["local"] == {"frames": 1, "pixel_acc": pytest.approx(5 / 6),
                                    "miou": pytest.approx((3 / 4 + 2 / 3) / 2)}
    assert [r["source"] for r in s.per_frame] == ["edge", "local"]
    assert score(path).by_source == {"unknown": {"frames": 2, "pixel_acc": pytest.approx(9 / 11),
                                                 "miou": pytest.approx((4 / 6 + 2 / 3 + 3 / 4) / 3)}}


def test_score_cli_prints_and_writes_json(tmp_path, capsys):
    path = tmp_path / "out"
    _seg_bag(path)
    rc = cli_main(["score", str(path), "--per-frame", "--json", str(tmp_path / "s.json")])
    out = capsys.readouterr().out
    assert rc == 0
    assert "pixel accuracy 0.8182, mIoU 0.6944" in out and "unanswered: 1" in out
    assert json.loads((tmp_path / "s.json").read_text())["frames_scored"] == 2


def test_labels_from_a_separate_bag(tmp_path):
    labels, outputs = tmp_path / "labels", tmp_path / "outputs"
    bags.write_frames(labels, [np.zeros((2, 2, 3), np.uint8)] * 2, label_masks=[np.eye(2, dtype=np.uint8)] * 2,
                      info={"class_names": ["x", "y"]}, frame_id="f")
    with bags.BagWriter(outputs) as bag:
        bag.write_mask(MASK, np.ones((2, 2), np.uint8), 1_000_000_000, "f")
    s = score(outputs, labels_bag=labels)
    assert s.overall["pixel_acc"] == pytest.approx(0.5) and s.unanswered == 1


def test_classification_top1(tmp_path):
    path = tmp_path / "cls"
    with bags.BagWriter(path) as bag:
        for stamp, label in ((S1, "cat"), (S2, "dog"), (S3, "cat")):
            sec, nsec = bags.ns_to_sec_nsec(stamp)
            bag.write_string(bags.LABEL_CLASS_TOPIC, json.dumps(
                {"stamp": {"sec": sec, "nanosec": nsec}, "frame_id": "cam", "label": label}), stamp)
        for stamp, top in ((S1, "cat"), (S2, "cat")):
            sec, nsec = bags.ns_to_sec_nsec(stamp)
            bag.write_string(RESULT, json.dumps({"stamp": {"sec": sec, "nanosec": nsec}, "frame_id": "cam",
                                                 "top_k": [{"label": top, "score": 0.9}]}), stamp)
    s = score(path)
    assert (s.task, s.frames_scored, s.unanswered) == ("classification", 2, 1)
    assert s.overall["top1"] == pytest.approx(0.5)


def test_bad_inputs(tmp_path, capsys):
    no_labels = tmp_path / "nolabels"
    bags.write_frames(no_labels, [np.zeros((2, 2, 3), np.uint8)])
    assert cli_main(["score", str(no_labels)]) != 0
    assert "no labels" in capsys.readouterr().err
    assert cli_main(["score", str(tmp_path / "missing")]) != 0
    assert "bag not found" in capsys.readouterr().err
    with pytest.raises(ScoreError, match="mask topic /elsewhere not in"):
        path = tmp_path / "out"
        _seg_bag(path)
        score(path, mask_topic="/elsewhere")
