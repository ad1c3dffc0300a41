"""Bag I/O (rosbags, sqlite3 + mcap), bag-from-frames, and bad bags -> one clear error, exit code != 0."""
from __future__ import annotations

import json

import numpy as np
import pytest

from robot_compress.cli import main as cli_main
from robot_compress.tools import bags
from robot_compress.tools.bag_from_frames import synthetic_scene


def _frames(n=4, h=24, w=32):
    rng = np.random.default_rng(3)
    # Smooth content so JPEG stays close to the original.
    yy, xx = np.mgrid[0:h, 0:w]
    return [np.clip(np.stack([xx * 7 + i * 10, yy * 9, xx + yy], 2) + rng.integers(0, 3, (h, w, 3)), 0, 255)
            .astype(np.uint8) for i in range(n)]


@pytest.mark.parametrize("storage", bags.STORAGES)
@pytest.mark.parametrize("fmt", bags.FORMATS)
def test_write_read_round_trip(tmp_path, storage, fmt):
    frames = _frames()
    path = tmp_path / "bag"
    n = bags.write_frames(path, frames, rate_hz=20.0, frame_id="cam_left", fmt=fmt, storage=storage,
                          start_ns=5_000_000_000, info={"source": "test"})
    assert n == 4
    suffix = ".mcap" if storage == "mcap" else ".db3"
    assert any(p.suffix == suffix for p in path.iterdir())
    with bags.BagReader(path) as reader:
        topics = reader.topics
        assert topics["/camera/image_raw"].count == 4
        assert topics["/camera/image_raw"].msgtype == (bags.COMPRESSED if fmt in ("jpeg", "png") else bags.IMAGE)
        info = reader.info()
        got = list(reader.frames())
    assert info["source"] == "test" and info["rate_hz"] == 20.0
    assert [f.stamp_ns for f in got] == [5_000_000_000 + i * 50_000_000 for i in range(4)]
    assert [f.t_ns for f in got] == [f.stamp_ns for f in got]
    assert {f.frame_id for f in got} == {"cam_left"}
    for frame, original in zip(got, frames, strict=True):
        assert frame.rgb.shape == original.shape and frame.rgb.dtype == np.uint8
        if fmt == "jpeg":
            assert np.abs(frame.rgb.astype(int) - original).mean() < 6
        else:
            np.testing.assert_array_equal(frame.rgb, original)


def test_labels_and_rclpy_round_trip(tmp_path):
    scene = list(synthetic_scene(3, 40, 60))
    path = tmp_path / "lab"
    bags.write_frames(path, [f for f, _ in scene], label_masks=[lab for _, lab in scene], storage="mcap")
    with bags.BagReader(path) as reader:
        assert reader.info()["label_topic"] == bags.LABEL_MASK_TOPIC
        msgs = list(reader.messages([bags.LABEL_MASK_TOPIC]))
        cams = list(reader.messages(["/camera/image_raw"]))
    assert len(msgs) == 3
    # rosbags CDR is rclpy CDR: the label decodes to a real sensor_msgs/Image with the frame's header.
    from sensor_msgs.msg import Image

    label = bags.to_rclpy(msgs[1][3], msgs[1][1])
    frame = bags.to_rclpy(cams[1][3], cams[1][1])
    assert isinstance(label, Image) and label.encoding == "mono8"
    assert label.header == frame.header
    np.testing.assert_array_equal(bags.mono8_to_array(label), scene[1][1])


def test_class_labels(tmp_path):
    path = tmp_path / "cls"
    bags.write_frames(path, _frames(2), class_labels=["cat", "dog"])
    with bags.BagReader(path) as reader:
        recs = [json.loads(reader.decode(raw, mt).data) for _, mt, _, raw in reader.messages([bags.LABEL_CLASS_TOPIC])]
    assert [r["label"] for r in recs] == ["cat", "dog"]
    assert recs[1]["stamp"] == {"sec": 1, "nanosec": 33333333}


def test_bag_from_frames_folder_with_labels(tmp_path, capsys):
    import cv2

    imgs, labs = tmp_path / "img", tmp_path / "lab"
    imgs.mkdir(), labs.mkdir()
    scene = list(synthetic_scene(3, 30, 40))
    for i, (rgb, lab) in enumerate(scene):
        cv2.imwrite(str(imgs / f"f{i:03d}.png"), rgb[:, :, ::-1])
        cv2.imwrite(str(labs / f"f{i:03d}.png"), lab)
    out = tmp_path / "bag"
    rc = cli_main(["bag-from-frames", str(imgs), "-o", str(out), "--labels", str(labs), "--rate", "15",
                   "--frame-id", "front", "--format", "png", "--storage", "mcap"])
    assert rc == 0, capsys.readouterr().err
    frames = bags.read_frames(out)
    assert len(frames) == 3 and frames[0].frame_id == "front"
    np.testing.assert_array_equal(frames[2].rgb, scene[2][0])
    with bags.BagReader(out) as reader:
        info = reader.info()
        assert reader.topics[bags.LABEL_MASK_TOPIC].count == 3
    assert info["kind"] == "image-folder" and info["ignore_index"] == 11 and len(info["class_names"]) == 11


def test_bag_from_video(tmp_path):
    import cv2

    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 12.0, (64, 48))
    assert writer.isOpened()
    for rgb, _ in synthetic_scene(7, 48, 64):
        writer.write(np.ascontiguousarray(rgb[:, :, ::-1]))
    writer.release()
    out = tmp_path / "bag"
    assert cli_main(["bag-from-frames", str(video), "-o", str(out), "--format", "jpeg"]) == 0
    with bags.BagReader(out) as reader:
        assert reader.topics["/camera/image_raw"].count == 7
        assert reader.info()["rate_hz"] == pytest.approx(12.0)
        assert reader.duration_ns == pytest.approx(6 / 12.0 * 1e9, abs=1)


# ---------------------------------------------------------------------------------------------- bad input


def _error(capsys, argv) -> str:
    rc = cli_main(argv)
    err = capsys.readouterr().err
    assert rc != 0
    assert err.count("error:") == 1, err  # one message, no traceback
    return err


def test_missing_bag(tmp_path, capsys):
    assert "bag not found" in _error(capsys, ["replay", str(tmp_path / "nope")])
    with pytest.raises(bags.BagError, match="bag not found"):
        bags.read_frames(tmp_path / "nope")


def test_not_a_bag_and_corrupt_bag(tmp_path, capsys):
    (tmp_path / "plain").mkdir()
    assert "not a rosbag2 bag" in _error(capsys, ["replay", str(tmp_path / "plain")])
    broken = tmp_path / "broken"
    bags.write_frames(broken, _frames(2))
    (broken / "metadata.yaml").write_text("rosbag2_bagfile_information: [unclosed\n")
    assert "cannot open bag" in _error(capsys, ["replay", str(broken)])
    for storage in bags.STORAGES:
        junk = tmp_path / f"junk_{storage}"
        bags.write_frames(junk, _frames(2), storage=storage)
        data = next(p for p in junk.iterdir() if p.name != "metadata.yaml")
        data.write_bytes(b"\x00garbage" * 64)
        with pytest.raises(bags.BagError, match="cannot"):
            bags.read_frames(junk)
        assert "cannot" in _error(capsys, ["replay", str(junk)])


def test_unknown_and_non_image_topics(tmp_path, capsys):
    path = tmp_path / "bag"
    bags.write_frames(path, _frames(2))
    err = _error(capsys, ["replay", str(path), "--topic", "/nope"])
    assert "/nope not in bag" in err and "/camera/image_raw" in err
    err = _error(capsys, ["replay", str(path), "--topic", bags.INFO_TOPIC])
    assert "not an image" in err and "std_msgs/msg/String" in err


def test_bag_without_images_and_empty_bag(tmp_path, capsys):
    strings = tmp_path / "strings"
    with bags.BagWriter(strings) as bag:
        bag.write_string("/chatter", "hello", 1)
    assert "no image topics" in _error(capsys, ["replay", str(strings)])
    empty = tmp_path / "empty"
    with bags.BagWriter(empty, storage="mcap") as bag:
        bag._connection("/camera/image_raw", bags.IMAGE)
    assert "is empty" in _error(capsys, ["replay", str(empty)])


def test_bad_frame_source(tmp_path, capsys):
    assert "source not found" in _error(capsys, ["bag-from-frames", str(tmp_path / "x"), "-o", str(tmp_path / "b")])
    (tmp_path / "notvideo.avi").write_text("not a video")
    assert "cannot open video" in _error(capsys, ["bag-from-frames", str(tmp_path / "notvideo.avi"),
                                                   "-o", str(tmp_path / "b")])
    assert not (tmp_path / "b").exists()
