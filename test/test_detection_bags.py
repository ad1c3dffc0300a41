"""Detection bags: box labels on /labels/boxes (round trip, Penn-Fudan and video sources, resizing scales the
boxes) and `robot-compress score` of a detection bag against hand-computed COCO AP/AP50, overall and per
answering source."""
from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from conftest import shared_path

from robot_compress import pennfudan
from robot_compress.cli import main as cli_main
from robot_compress.tools import bags
from robot_compress.tools.bag_from_frames import SourceError, pennfudan_frames, resize_frame

RESULT = "/perception/result"
S1, S2, S3 = 1_000_000_000, 1_100_000_000, 1_200_000_000

ANNOTATION = """# Compatible with PASCAL Annotation Version 1.00
Image filename : "PennFudanPed/PNGImages/FudanPed00001.png"
Image size (X x Y x C) : 60 x 40 x 3
Objects with ground truth : 2 { "PASpersonWalking" "PASpersonStanding" }
# Top left pixel co-ordinates : (1, 1)
Bounding box for object 1 "PASpersonWalking" (Xmin, Ymin) - (Xmax, Ymax) : (1, 1) - (10, 20)
Bounding box for object 2 "PASpersonStanding" (Xmin, Ymin) - (Xmax, Ymax) : (31, 5) - (60, 40)
"""


def _person(box, **extra):
    return {"label": "person", "class_id": 0, "box": [float(v) for v in box], **extra}


# ---------------------------------------------------------------------------------------------- bags


@pytest.mark.parametrize("storage", bags.STORAGES)
def test_box_labels_round_trip_stamped_like_their_frames(tmp_path, storage):
    frames = [np.full((40, 60, 3), 30 * i, np.uint8) for i in range(3)]
    labels = [[_person((1, 2, 10, 20))], [], [_person((0, 0, 60, 40), iscrowd=1), _person((5.5, 6.25, 7, 8))]]
    path = tmp_path / "bag"
    bags.write_frames(path, frames, rate_hz=10.0, frame_id="cam", storage=storage, box_labels=labels,
                      start_ns=S1, info={"class_names": ["person"]})
    with bags.BagReader(path) as reader:
        info = reader.info()
        got = reader.box_labels()
        stamps = [f.stamp_ns for f in reader.frames()]
        times = [t for _, _, t, _ in reader.messages([bags.LABEL_BOXES_TOPIC])]
        records = [json.loads(reader.decode(raw, mt).data) for _, mt, _, raw in
                   reader.messages([bags.LABEL_BOXES_TOPIC])]
    assert info["label_topic"] == bags.LABEL_BOXES_TOPIC and info["label_kind"] == "detection"
    assert stamps == times == [S1, S1 + 100_000_000, S1 + 200_000_000]  # bag time and stamp = the frame's
    assert got == {(s, "cam"): objs for s, objs in zip(stamps, labels, strict=True)}
    assert [r["image_size"] for r in records] == [[40, 60]] * 3


def test_box_labels_are_checked(tmp_path):
    frames = [np.zeros((40, 60, 3), np.uint8)]
    for bad in ([_person((0, 0, 61, 10))], [_person((5, 5, 5, 9))], [{"label": "person", "box": [0, 0, 1, 1]}]):
        with pytest.raises(bags.BagError, match="box"):
            bags.write_frames(tmp_path / "bad", frames, box_labels=[bad], overwrite=True)


def test_replay_keeps_the_box_labels_beside_the_outputs():
    from robot_compress.tools.replay import SIDE_TOPICS

    assert bags.LABEL_BOXES_TOPIC in SIDE_TOPICS


# ---------------------------------------------------------------------------------------------- Penn-Fudan


def test_pennfudan_annotation_to_frame_pixels():
    # PASCAL counts pixels from (1, 1) inclusive: pixels 1..10 span x = 0..10 in 0-based frame coordinates.
    assert pennfudan.parse_annotation(ANNOTATION, (40, 60)) == [_person((0, 0, 10, 20)), _person((30, 4, 60, 40))]
    with pytest.raises(pennfudan.PennFudanError, match="Bounding box"):
        pennfudan.parse_annotation("# no boxes\n", (40, 60))


def test_pennfudan_split_every_fifth_image_by_name():
    names = [f"PennPed{i:05d}.png" for i in range(12, 0, -1)]
    val = pennfudan.split(names, "val")
    assert pennfudan.VAL_EVERY == 5
    assert val == ["PennPed00001.png", "PennPed00006.png", "PennPed00011.png"]
    assert sorted(pennfudan.split(names, "train") + val) == sorted(names) == pennfudan.split(names, "all")


def _pennfudan_zip(path, n=7, hw=(40, 60)):
    import cv2

    with zipfile.ZipFile(path, "w") as zf:
        for i in range(1, n + 1):
            img = np.full((*hw, 3), 10 * i, np.uint8)
            zf.writestr(f"PennFudanPed/PNGImages/FudanPed{i:05d}.png", cv2.imencode(".png", img)[1].tobytes())
            zf.writestr(f"PennFudanPed/Annotation/FudanPed{i:05d}.txt", ANNOTATION)
    return path


def test_pennfudan_zip_resized_scales_the_boxes(tmp_path):
    src = _pennfudan_zip(tmp_path / "pf.zip")
    items = list(pennfudan_frames(src, "val", size_hw=(80, 30)))
    assert [name for name, _, _ in items] == ["FudanPed00001.png", "FudanPed00006.png"]
    _, rgb, objects = items[0]
    assert rgb.shape == (80, 30, 3)
    # width 60 -> 30 (x 0.5), height 40 -> 80 (x 2)
    assert objects == [_person((0, 0, 5, 40)), _person((15, 8, 30, 80))]
    same, objs, _ = resize_frame(rgb, None, objects)
    assert same is rgb and objs == objects
    broken = tmp_path / "broken.zip"
    with zipfile.ZipFile(broken, "w") as zf:
        zf.writestr("PennFudanPed/PNGImages/FudanPed00001.png", b"not a png")
    with pytest.raises(SourceError, match="no annotation"):
        list(pennfudan_frames(broken))


def test_bag_from_frames_pennfudan_cli(tmp_path, capsys):
    src = _pennfudan_zip(tmp_path / "pf.zip")
    out = tmp_path / "bag"
    assert cli_main(["bag-from-frames", str(src), "-o", str(out), "--split", "train", "--size", "120x80",
                     "--format", "jpeg"]) == 0
    assert "from pennfudan" in capsys.readouterr().out
    with bags.BagReader(out) as reader:
        info = reader.info()
        frames = list(reader.frames())
        labels = reader.box_labels()
    assert info["kind"] == "pennfudan" and info["split"] == "train" and info["class_names"] == ["person"]
    assert info["images"] == [f"FudanPed{i:05d}.png" for i in (2, 3, 4, 5, 7)]
    assert [f.rgb.shape for f in frames] == [(80, 120, 3)] * 5
    assert labels[(frames[0].stamp_ns, "camera")] == [_person((0, 0, 20, 40)), _person((60, 8, 120, 80))]
    # labels belong to Penn-Fudan: a second label source is refused with one error line
    rc = cli_main(["bag-from-frames", str(src), "-o", str(tmp_path / "b2"), "--labels", str(tmp_path)])
    assert rc == 1 and "Penn-Fudan carries its own box labels" in capsys.readouterr().err


def test_bag_from_video_resized(tmp_path):
    import cv2

    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    for i in range(3):
        writer.write(np.full((48, 64, 3), 40 * i, np.uint8))
    writer.release()
    out = tmp_path / "bag"
    assert cli_main(["bag-from-frames", str(video), "-o", str(out), "--size", "32x24"]) == 0
    with bags.BagReader(out) as reader:
        assert [f.rgb.shape for f in reader.frames()] == [(24, 32, 3)] * 3
        assert reader.info()["size"] == [32, 24]
    assert cli_main(["bag-from-frames", str(video), "-o", str(tmp_path / "b2"), "--size", "32"]) == 1


def test_shared_pennfudan_val_bag(tmp_path):
    src = shared_path("data", "pennfudan-trainval.zip")
    out = tmp_path / "bag"
    assert cli_main(["bag-from-frames", str(src), "-o", str(out), "--format", "jpeg"]) == 0
    with bags.BagReader(out) as reader:
        info = reader.info()
        labels = reader.box_labels()
        frames = list(reader.frames())
    assert len(frames) == len(labels) == 24  # 120 images, every 5th
    assert info["first"] == "FudanPed00001.png"
    first = labels[(frames[0].stamp_ns, "camera")]
    assert first == [_person((159, 181, 302, 431)), _person((419, 170, 535, 486))]
    for frame in frames:
        h, w = frame.rgb.shape[:2]
        for obj in labels[(frame.stamp_ns, "camera")]:
            x1, y1, x2, y2 = obj["box"]
            assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h


# ---------------------------------------------------------------------------------------------- score


def _result(stamp, frame_id, source, detections):
    return {"schema": "robot_compress/result/1", "stamp": {"sec": stamp // 1_000_000_000,
                                                           "nanosec": stamp % 1_000_000_000},
            "frame_id": frame_id, "task": "detection", "source": source, "model_id": "m", "latency_ms": 1.0,
            "detections": [{"label": "person", "class_id": 0, "score": s, "box": b} for s, b in detections],
            "image_size": [40, 60]}


def _det_bag(path, results=None):
    """Three labelled frames (S3 unanswered) and an answer for an unlabelled frame, as replay records them.

    S1 (edge): objects A, B; detections A exactly (0.9) and a box on nothing (0.8).
    S2 (local): object C; detection C exactly (0.7).
    """
    a, b, c = [0, 0, 10, 20], [30, 4, 60, 40], [5, 5, 25, 25]
    with bags.BagWriter(path) as bag:
        bag.write_string(bags.INFO_TOPIC, json.dumps({"class_names": ["person"]}), S1)
        for stamp, objs in ((S1, [a, b]), (S2, [c]), (S3, [a])):
            rec = bags.box_record(stamp, "cam", (40, 60), [_person(o) for o in objs])
            bag.write_string(bags.LABEL_BOXES_TOPIC, json.dumps(rec), stamp)
        for rec in results or [_result(S1, "cam", "edge", [(0.9, a), (0.8, [0, 25, 10, 35])]),
                               _result(S2, "cam", "local", [(0.7, c)]),
                               _result(S2, "cam", "local", [(0.1, a)]),  # a duplicate answer: not scored
                               _result(S2, "other_cam", "local", [(0.9, a)])]:  # unlabelled: not scored
            stamp = rec["stamp"]["sec"] * 1_000_000_000 + rec["stamp"]["nanosec"]
            bag.write_string(RESULT, json.dumps(rec), stamp)


def test_score_detection_bag_hand_computed_ap(tmp_path):
    from robot_compress.tools.score import score

    path = tmp_path / "out"
    _det_bag(path)
    s = score(path)
    assert (s.task, s.frames_labelled, s.frames_scored, s.unanswered) == ("detection", 3, 2, 1)
    # Ranked: 0.9 hit, 0.8 miss, 0.7 hit of 3 objects -> recall 1/3, 1/3, 2/3; interpolated precision 1 up to
    # recall 1/3 (101-point thresholds 0.00..0.33: 34 points), 2/3 up to recall 2/3 (0.34..0.66: 33 points),
    # 0 beyond: AP50 = (34 + 33 * 2/3) / 101 = 56/101. The hits are exact boxes, so every IoU threshold agrees.
    assert s.overall["ap50"] == pytest.approx(56 / 101)
    assert s.overall["ap"] == pytest.approx(56 / 101) and s.overall["ap75"] == pytest.approx(56 / 101)
    assert (s.overall["ground_truth"], s.overall["detections"]) == (3, 3)
    # per answering source: edge 0.9 hit, 0.8 miss of 2 -> precision 1 up to recall 0.5: 51/101; local 1 of 1
    assert s.by_source == {"edge": {"frames": 1, "ap": pytest.approx(51 / 101), "ap50": pytest.approx(51 / 101),
                                    "ap75": pytest.approx(51 / 101)},
                           "local": {"frames": 1, "ap": pytest.approx(1.0), "ap50": pytest.approx(1.0),
                                     "ap75": pytest.approx(1.0)}}
    assert [(r["source"], r["objects"], r["detections"]) for r in s.per_frame] == [("edge", 2, 2), ("local", 1, 1)]


def test_score_detection_cli_and_half_overlap(tmp_path, capsys):
    # Only S1 answered, one detection [0, 0, 10, 12.5] on object A [0, 0, 10, 20] (IoU 0.625), object B missed:
    # recall 1/2 at precision 1 -> 51/101 at each IoU threshold the hit passes (0.50, 0.55, 0.60 of ten), so
    # AP50 = 51/101, AP = 3/10 * 51/101, AP75 = 0.
    path = tmp_path / "out"
    _det_bag(path, [_result(S1, "cam", "local", [(0.5, [0, 0, 10, 12.5])])])
    js = tmp_path / "score.json"
    assert cli_main(["score", str(path), "--per-frame", "--json", str(js)]) == 0
    out = capsys.readouterr().out
    assert "task: detection; labelled frames: 3; scored: 1; unanswered: 2" in out
    assert "overall: AP50 0.5050, AP 0.1515, AP75 0.0000" in out
    assert "from local: AP50 0.5050" in out and "1 detections, 2 objects" in out
    saved = json.loads(js.read_text())
    assert saved["overall"]["ap50"] == pytest.approx(51 / 101)
    assert saved["overall"]["ap"] == pytest.approx(0.3 * 51 / 101) and saved["overall"]["ap75"] == 0.0


def test_score_refuses_results_that_are_not_detections(tmp_path, capsys):
    path = tmp_path / "out"
    seg = {"stamp": {"sec": 1, "nanosec": 0}, "frame_id": "cam", "task": "segmentation", "source": "local"}
    _det_bag(path, [seg])
    rc = cli_main(["score", str(path)])
    assert rc == 1 and "without detections" in capsys.readouterr().err
