"""rosbag2 bags (sqlite3 and mcap storage) through the `rosbags` package; rosbag2_py is not installable here.

Messages are stored as CDR, which both rosbags and `rclpy.serialization` read and write, so a frame read
here can be published by rclpy unchanged (`to_rclpy`) and a message received raw by rclpy can be written
back (`BagWriter.write_raw`). Besides the camera topics, a bag we build may carry:

| topic                        | type                   | what                                               |
|------------------------------|------------------------|----------------------------------------------------|
| /robot_compress/bag_info     | std_msgs/String (JSON) | provenance: source, licence note, label topic, class names |
| /labels/mask                 | sensor_msgs/Image mono8 | per-frame class-id label (same header as the frame) |
| /labels/class                | std_msgs/String (JSON) | per-frame class label {"stamp", "frame_id", "label"} |
| /labels/boxes                | std_msgs/String (JSON) | boxes {"stamp", "frame_id", "image_size", "objects"} |

A /labels/boxes record (docs/DETECTION.md): `objects` is the frame's ground truth, a list of
{"label", "class_id", "box": [x1, y1, x2, y2]} in the frame's pixels (optionally "iscrowd"/"ignore"); an empty
list is a frame with nothing to find. Its bag time and "stamp" are the frame's header stamp.
"""
from __future__ import annotations

import importlib
import json
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from robot_compress.runtime import imaging

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
STRING = "std_msgs/msg/String"
DIAGNOSTICS = "diagnostic_msgs/msg/DiagnosticArray"
CLOCK = "rosgraph_msgs/msg/Clock"
IMAGE_TYPES = (IMAGE, COMPRESSED)
STORAGES = ("sqlite3", "mcap")
FORMATS = ("rgb8", "bgr8", "jpeg", "png")  # raw encodings and compressed formats a frame can be written in

INFO_TOPIC = "/robot_compress/bag_info"
LABEL_MASK_TOPIC = "/labels/mask"
LABEL_CLASS_TOPIC = "/labels/class"
LABEL_BOXES_TOPIC = "/labels/boxes"
LABEL_TOPICS = (LABEL_MASK_TOPIC, LABEL_CLASS_TOPIC, LABEL_BOXES_TOPIC)


class BagError(RuntimeError):
    """A bag that cannot be used as asked; the message names the bag and the problem."""


def typestore():
    """Kilted message definitions (the ROS 2 release our rclpy wheels come from)."""
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_KILTED)


_TYPESTORE = None


def _ts():
    global _TYPESTORE
    if _TYPESTORE is None:
        _TYPESTORE = typestore()
    return _TYPESTORE


@dataclass
class Frame:
    """One camera frame read from a bag."""

    t_ns: int  # bag (receive) time
    stamp_ns: int  # header stamp
    frame_id: str
    rgb: np.ndarray


@dataclass(frozen=True)
class TopicInfo:
    name: str
    msgtype: str
    count: int


def stamp_to_ns(stamp) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_sec_nsec(ns: int) -> tuple[int, int]:
    return int(ns) // 1_000_000_000, int(ns) % 1_000_000_000


def image_to_rgb(msg, msgtype: str) -> np.ndarray:
    """A sensor_msgs Image/CompressedImage (rosbags or rclpy object) -> RGB uint8 (H, W, 3)."""
    if msgtype == IMAGE:
        return imaging.raw_to_rgb(msg.encoding, msg.height, msg.width, msg.step, bool(msg.is_bigendian),
                                  np.asarray(msg.data, dtype=np.uint8))
    if msgtype == COMPRESSED:
        return imaging.compressed_to_rgb(msg.format, np.asarray(msg.data, dtype=np.uint8))
    raise BagError(f"message type {msgtype} is not an image (expected one of {', '.join(IMAGE_TYPES)})")


def mono8_to_array(msg) -> np.ndarray:
    """A mono8 sensor_msgs/Image (e.g. a mask) -> (H, W) uint8 without colour conversion."""
    if msg.encoding != "mono8":
        raise BagError(f"expected a mono8 mask image, got encoding {msg.encoding!r}")
    buf = np.asarray(msg.data, dtype=np.uint8)
    if buf.size != msg.step * msg.height or msg.step < msg.width:
        raise BagError(f"mask image data has {buf.size} bytes, expected step*height = {msg.step * msg.height}")
    return buf.reshape(msg.height, msg.step)[:, : msg.width].copy()


def rclpy_type(msgtype: str):
    """'sensor_msgs/msg/Image' -> the rclpy message class sensor_msgs.msg.Image."""
    pkg, kind, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{pkg}.{kind}"), name)


def to_rclpy(raw: bytes, msgtype: str):
    """Bag CDR bytes -> rclpy message (rosbags and rclpy share the CDR wire format)."""
    from rclpy.serialization import deserialize_message

    return deserialize_message(bytes(raw), rclpy_type(msgtype))


# ---------------------------------------------------------------------------------------------- writing


class BagWriter:
    """Write a rosbag2 bag (metadata version 9). Use as a context manager; topics are added on first use."""

    def __init__(self, path, storage: str = "sqlite3", overwrite: bool = False):
        from rosbags.rosbag2 import StoragePlugin, Writer

        if storage not in STORAGES:
            raise BagError(f"unknown storage {storage!r}; choose one of {', '.join(STORAGES)}")
        self.path = Path(path)
        if self.path.exists():
            if not overwrite:
                raise BagError(f"output bag {self.path} already exists (remove it or pass overwrite)")
            shutil.rmtree(self.path) if self.path.is_dir() else self.path.unlink()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        plugin = StoragePlugin.SQLITE3 if storage == "sqlite3" else StoragePlugin.MCAP
        self._writer = Writer(self.path, version=9, storage_plugin=plugin)
        self._connections: dict[str, object] = {}
        self.counts: dict[str, int] = {}

    def __enter__(self):
        self._writer.open()
        return self

    def __exit__(self, *exc):
        self._writer.close()

    def _connection(self, topic: str, msgtype: str):
        conn = self._connections.get(topic)
        if conn is None:
            conn = self._writer.add_connection(topic, msgtype, typestore=_ts())
            self._connections[topic] = conn
        elif conn.msgtype != msgtype:
            raise BagError(f"topic {topic} already holds {conn.msgtype}, cannot also write {msgtype}")
        return conn

    def write_raw(self, topic: str, msgtype: str, raw: bytes, t_ns: int) -> None:
        self._writer.write(self._connection(topic, msgtype), int(t_ns), bytes(raw))
        self.counts[topic] = self.counts.get(topic, 0) + 1

    def write_msg(self, topic: str, msgtype: str, msg, t_ns: int) -> None:
        self.write_raw(topic, msgtype, _ts().serialize_cdr(msg, msgtype), t_ns)

    def _header(self, stamp_ns: int, frame_id: str):
        types = _ts().types
        sec, nsec = ns_to_sec_nsec(stamp_ns)
        return types["std_msgs/msg/Header"](stamp=types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nsec),
                                            frame_id=frame_id)

    def write_image(self, topic: str, rgb: np.ndarray, stamp_ns: int, frame_id: str, fmt: str = "rgb8",
                    t_ns: int | None = None, quality: int = 90) -> None:
        """One RGB frame as a raw Image (rgb8/bgr8) or a CompressedImage (jpeg/png)."""
        types = _ts().types
        t_ns = stamp_ns if t_ns is None else t_ns
        header = self._header(stamp_ns, frame_id)
        if fmt in ("jpeg", "png"):
            data = np.frombuffer(imaging.encode_compressed(rgb, fmt, quality), np.uint8)
            self.write_msg(topic, COMPRESSED, types[COMPRESSED](header=header, format=fmt, data=data), t_ns)
        elif fmt in ("rgb8", "bgr8"):
            data, step = imaging.rgb_to_raw(rgb, fmt)
            msg = types[IMAGE](header=header, height=rgb.shape[0], width=rgb.shape[1], encoding=fmt,
                               is_bigendian=0, step=step, data=np.frombuffer(data, np.uint8))
            self.write_msg(topic, IMAGE, msg, t_ns)
        else:
            raise BagError(f"unknown frame format {fmt!r}; choose one of {', '.join(FORMATS)}")

    def write_mask(self, topic: str, mask: np.ndarray, stamp_ns: int, frame_id: str, t_ns: int | None = None) -> None:
        """A (H, W) uint8 class-id mask as a mono8 Image."""
        types = _ts().types
        mask = np.ascontiguousarray(mask, dtype=np.uint8)
        msg = types[IMAGE](header=self._header(stamp_ns, frame_id), height=mask.shape[0], width=mask.shape[1],
                           encoding="mono8", is_bigendian=0, step=mask.shape[1], data=mask.ravel())
        self.write_msg(topic, IMAGE, msg, stamp_ns if t_ns is None else t_ns)

    def write_string(self, topic: str, text: str, t_ns: int) -> None:
        self.write_msg(topic, STRING, _ts().types[STRING](data=text), t_ns)


def write_frames(path, frames: Iterable[np.ndarray], topic: str = "/camera/image_raw", rate_hz: float = 30.0,
                 frame_id: str = "camera", fmt: str = "rgb8", storage: str = "sqlite3", start_ns: int = 1_000_000_000,
                 label_masks: Iterable[np.ndarray] | None = None, class_labels: Iterable[str] | None = None,
                 box_labels: Iterable[list[dict]] | None = None, info: dict | None = None, overwrite: bool = False,
                 quality: int = 90) -> int:
    """Write RGB frames at a fixed rate (header stamp = bag time), optional per-frame labels and provenance.

    `box_labels`: per frame, the list of ground-truth objects {"label", "class_id", "box"} in that frame's pixels.
    Returns the number of frames written.
    """
    if rate_hz <= 0:
        raise BagError(f"rate must be > 0 Hz, got {rate_hz}")
    period = int(round(1e9 / rate_hz))
    masks = iter(label_masks) if label_masks is not None else None
    classes = iter(class_labels) if class_labels is not None else None
    boxes = iter(box_labels) if box_labels is not None else None
    info = dict(info or {})
    info.setdefault("camera_topic", topic)
    info.setdefault("rate_hz", rate_hz)
    if masks is not None:
        info.setdefault("label_topic", LABEL_MASK_TOPIC)
        info.setdefault("label_kind", "segmentation")
    if classes is not None:
        info.setdefault("label_topic", LABEL_CLASS_TOPIC)
        info.setdefault("label_kind", "classification")
    if boxes is not None:
        info.setdefault("label_topic", LABEL_BOXES_TOPIC)
        info.setdefault("label_kind", "detection")
    n = 0
    with BagWriter(path, storage, overwrite=overwrite) as bag:
        bag.write_string(INFO_TOPIC, json.dumps(info, sort_keys=True), start_ns)
        for i, rgb in enumerate(frames):
            stamp = start_ns + i * period
            bag.write_image(topic, rgb, stamp, frame_id, fmt, quality=quality)
            if masks is not None:
                bag.write_mask(LABEL_MASK_TOPIC, next(masks), stamp, frame_id)
            if classes is not None:
                sec, nsec = ns_to_sec_nsec(stamp)
                label = {"stamp": {"sec": sec, "nanosec": nsec}, "frame_id": frame_id, "label": next(classes)}
                bag.write_string(LABEL_CLASS_TOPIC, json.dumps(label), stamp)
            if boxes is not None:
                bag.write_string(LABEL_BOXES_TOPIC, json.dumps(box_record(stamp, frame_id, rgb.shape[:2],
                                                                          next(boxes))), stamp)
            n += 1
    if n == 0:
        shutil.rmtree(path, ignore_errors=True)
        raise BagError(f"no frames to write into {path}")
    return n


def box_record(stamp_ns: int, frame_id: str, image_hw, objects: Iterable[dict]) -> dict:
    """The /labels/boxes JSON of one frame; checks every object (label, class id, a box inside the frame)."""
    h, w = int(image_hw[0]), int(image_hw[1])
    out = []
    for obj in objects:
        try:
            x1, y1, x2, y2 = (float(v) for v in obj["box"])
            item = {"label": str(obj["label"]), "class_id": int(obj["class_id"]),
                    "box": [round(x1, 2), round(y1, 2), round(x2, 2), round(y2, 2)]}
        except (KeyError, TypeError, ValueError):
            raise BagError(f"a box label needs label, class_id and box [x1, y1, x2, y2], got {obj!r}") from None
        if not (0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h):
            raise BagError(f"box {item['box']} of {item['label']!r} is empty or outside the {w}x{h} frame")
        item.update({k: obj[k] for k in ("iscrowd", "ignore") if k in obj})
        out.append(item)
    sec, nsec = ns_to_sec_nsec(stamp_ns)
    return {"stamp": {"sec": sec, "nanosec": nsec}, "frame_id": frame_id, "image_size": [h, w], "objects": out}


# ---------------------------------------------------------------------------------------------- reading


class BagReader:
    """Read a rosbag2 bag, validated on open: missing/corrupt bags raise BagError, never a traceback."""

    def __init__(self, path):
        self.path = Path(path)
        self._reader = None

    def __enter__(self):
        from rosbags.rosbag2 import Reader

        if not self.path.exists():
            raise BagError(f"bag not found: {self.path}")
        if not self.path.is_dir() or not (self.path / "metadata.yaml").is_file():
            raise BagError(f"{self.path} is not a rosbag2 bag (a directory with metadata.yaml)")
        try:
            self._reader = Reader(self.path)
            self._reader.open()
        except Exception as exc:  # rosbags raises ReaderError, yaml and sqlite errors
            raise BagError(f"cannot open bag {self.path}: {exc}") from None
        return self

    def __exit__(self, *exc):
        if self._reader is not None:
            self._reader.close()

    @property
    def topics(self) -> dict[str, TopicInfo]:
        out: dict[str, TopicInfo] = {}
        for conn in self._reader.connections:
            prev = out.get(conn.topic)
            out[conn.topic] = TopicInfo(conn.topic, conn.msgtype, conn.msgcount + (prev.count if prev else 0))
        return out

    @property
    def message_count(self) -> int:
        return int(self._reader.message_count)

    @property
    def start_ns(self) -> int:
        return int(self._reader.start_time)

    @property
    def duration_ns(self) -> int:
        return int(self._reader.duration) if self.message_count else 0

    def messages(self, topics: Iterable[str] | None = None) -> Iterator[tuple[str, str, int, bytes]]:
        """(topic, msgtype, bag time ns, raw CDR) in bag-time order."""
        wanted = None if topics is None else set(topics)
        conns = [c for c in self._reader.connections if wanted is None or c.topic in wanted]
        if not conns:
            return
        try:
            for conn, t_ns, raw in self._reader.messages(connections=conns):
                yield conn.topic, conn.msgtype, int(t_ns), raw
        except BagError:
            raise
        except Exception as exc:
            raise BagError(f"cannot read messages from bag {self.path}: {exc}") from None

    def decode(self, raw: bytes, msgtype: str):
        try:
            return _ts().deserialize_cdr(raw, msgtype)
        except Exception as exc:
            raise BagError(f"cannot decode a {msgtype} message in {self.path}: {exc}") from None

    def info(self) -> dict:
        """The provenance JSON written by write_frames, or {} for bags from elsewhere."""
        topic = self.topics.get(INFO_TOPIC)
        if topic is None or topic.msgtype != STRING:
            return {}
        for _, msgtype, _, raw in self.messages([INFO_TOPIC]):
            try:
                return json.loads(self.decode(raw, msgtype).data)
            except json.JSONDecodeError:
                return {}
        return {}

    def image_topics(self) -> dict[str, TopicInfo]:
        return {name: t for name, t in self.topics.items() if t.msgtype in IMAGE_TYPES and name != LABEL_MASK_TOPIC}

    def require_image_topics(self, topics: Iterable[str] | None = None) -> list[str]:
        """The camera topics to use: named ones checked (exist, image type, not empty) or all image topics."""
        if self.message_count == 0:
            raise BagError(f"bag {self.path} is empty (no messages)")
        all_topics = self.topics
        if topics:
            names = list(topics)
            for name in names:
                if name not in all_topics:
                    raise BagError(f"topic {name} not in bag {self.path}; it has: {', '.join(sorted(all_topics))}")
                if all_topics[name].msgtype not in IMAGE_TYPES:
                    raise BagError(f"topic {name} in {self.path} holds {all_topics[name].msgtype}, not an image "
                                   f"({' or '.join(IMAGE_TYPES)})")
        else:
            names = sorted(self.image_topics())
            if not names:
                listing = ", ".join(f"{t.name} [{t.msgtype}]" for t in all_topics.values())
                raise BagError(f"bag {self.path} has no image topics ({' or '.join(IMAGE_TYPES)}); it has: {listing}")
        empty = [n for n in names if all_topics[n].count == 0]
        if empty:
            raise BagError(f"image topic(s) {', '.join(empty)} in bag {self.path} hold no messages")
        return names

    def frames(self, topic: str | None = None) -> Iterator[Frame]:
        """Decoded RGB frames of one image topic (the only image topic when None)."""
        names = self.require_image_topics([topic] if topic else None)
        if len(names) > 1:
            raise BagError(f"bag {self.path} has several image topics ({', '.join(names)}); name one")
        for _, msgtype, t_ns, raw in self.messages(names):
            msg = self.decode(raw, msgtype)
            try:
                rgb = image_to_rgb(msg, msgtype)
            except imaging.ImageDecodeError as exc:
                raise BagError(f"bad frame on {names[0]} at t={t_ns} ns in {self.path}: {exc}") from None
            yield Frame(t_ns, stamp_to_ns(msg.header.stamp), msg.header.frame_id, rgb)


    def box_labels(self) -> dict[tuple[int, str], list[dict]]:
        """/labels/boxes as {(stamp ns, frame_id): objects}; {} when the bag has none."""
        topic = self.topics.get(LABEL_BOXES_TOPIC)
        if topic is None:
            return {}
        if topic.msgtype != STRING:
            raise BagError(f"{LABEL_BOXES_TOPIC} in {self.path} holds {topic.msgtype}, not {STRING}")
        out = {}
        for _, msgtype, t_ns, raw in self.messages([LABEL_BOXES_TOPIC]):
            try:
                rec = json.loads(self.decode(raw, msgtype).data)
                key = (rec["stamp"]["sec"] * 1_000_000_000 + rec["stamp"]["nanosec"], rec["frame_id"])
                out[key] = list(rec["objects"])
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise BagError(f"bad {LABEL_BOXES_TOPIC} record at t={t_ns} ns in {self.path}: {exc!r}") from None
        return out


def read_frames(path, topic: str | None = None) -> list[Frame]:
    with BagReader(path) as bag:
        return list(bag.frames(topic))
