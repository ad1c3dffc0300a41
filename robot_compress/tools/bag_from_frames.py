"""`robot-compress bag-from-frames SOURCE -o BAG`: a rosbag2 camera bag from a video file or an image folder.

Frames are stored raw (rgb8/bgr8 Image) or compressed (jpeg/png CompressedImage) at a fixed rate with a
given frame_id, at the source's size or `--size WxH`. Labelled sources keep their labels in the bag so
`robot-compress score` can find them: `--labels DIR` (CamVid-style: one class-id PNG per frame, same file name),
`--class-folders` (ImageFolder layout SOURCE/<class>/<image>), or Penn-Fudan (the zip or its extracted
PennFudanPed folder: pedestrian boxes, /labels/boxes, scaled with the frame). The bag's /robot_compress/bag_info
topic records provenance.
"""
from __future__ import annotations

import argparse
import re
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from robot_compress import pennfudan
from robot_compress.dataset_constants import CAMVID_IGNORE, CAMVID_LABELS  # noqa: F401  (the demo imports them here)
from robot_compress.tools import bags

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff")


class SourceError(bags.BagError):
    """The frame source cannot be read; the message names it."""


def _read_image(path: Path) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise SourceError(f"cannot read image {path}")
    return np.ascontiguousarray(img[:, :, ::-1])


def _read_label(path: Path) -> np.ndarray:
    import cv2

    lab = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if lab is None:
        raise SourceError(f"cannot read label image {path}")
    if lab.ndim != 2 or lab.dtype != np.uint8:
        raise SourceError(f"label {path} must be a single-channel 8-bit class-id image, got {lab.dtype} {lab.shape}")
    return lab


def parse_size(text: str | None) -> tuple[int, int] | None:
    """'640x480' (width x height) -> (height, width); None stays None."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1:
        raise SourceError(f"size must be WIDTHxHEIGHT in pixels, e.g. 640x480, got {text!r}")
    return int(m.group(2)), int(m.group(1))


def resize_frame(rgb: np.ndarray, size_hw, objects: list[dict] | None = None, label: np.ndarray | None = None):
    """(rgb, objects, label) at `size_hw` (a plain resize, no letterbox; None keeps the source size): boxes are
    scaled by new/old width and height, a class-id label image is resized nearest-neighbour."""
    import cv2

    if size_hw is None or tuple(rgb.shape[:2]) == tuple(size_hw):
        return rgb, objects, label
    (h, w), (nh, nw) = rgb.shape[:2], size_hw
    sx, sy = nw / w, nh / h
    out = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA if sx * sy < 1 else cv2.INTER_LINEAR)
    if objects is not None:
        objects = [dict(o, box=[o["box"][0] * sx, o["box"][1] * sy, o["box"][2] * sx, o["box"][3] * sy])
                   for o in objects]
    return out, objects, None if label is None else _resize_label(label, size_hw)


def _resize_label(label: np.ndarray, size_hw) -> np.ndarray:
    import cv2

    if size_hw is None or tuple(label.shape[:2]) == tuple(size_hw):
        return label
    return cv2.resize(label, (size_hw[1], size_hw[0]), interpolation=cv2.INTER_NEAREST)


def pennfudan_frames(source, split: str = "val", size_hw=None, max_frames: int | None = None):
    """(name, rgb, objects) of the Penn-Fudan images of `split` (robot_compress.pennfudan: the toolkit's split
    and box convention), sorted by name, at `size_hw` or their own size."""
    try:
        for name, rgb, objects in pennfudan.samples(source, split, max_frames):
            rgb, objects, _ = resize_frame(rgb, size_hw, objects)
            yield name, rgb, objects
    except pennfudan.PennFudanError as exc:
        raise SourceError(str(exc)) from None


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def video_frames(path: Path, max_frames: int | None = None) -> tuple[Iterator[np.ndarray], float]:
    """RGB frames of a video and its frame rate (0 when the container does not say)."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise SourceError(f"cannot open video {path} (not a video OpenCV can decode)")
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)

    def frames():
        n = 0
        try:
            while max_frames is None or n < max_frames:
                ok, bgr = cap.read()
                if not ok:
                    break
                n += 1
                yield np.ascontiguousarray(bgr[:, :, ::-1])
        finally:
            cap.release()

    return frames(), fps


def camvid_from_zip(zip_path, split: str = "val", max_frames: int | None = None, every: int = 1):
    """(rgb, label) pairs from the SegNet CamVid zip (CamVid/<split>/*.png + CamVid/<split>annot/), in
    file-name order, which is temporal order within each sequence."""
    import cv2

    with zipfile.ZipFile(zip_path) as zf:
        names = sorted(n for n in zf.namelist() if n.startswith(f"CamVid/{split}/") and n.endswith(".png"))
        if not names:
            raise SourceError(f"{zip_path} has no CamVid/{split}/*.png frames")
        names = names[::every][:max_frames]
        for name in names:
            label_name = name.replace(f"CamVid/{split}/", f"CamVid/{split}annot/")
            bgr = cv2.imdecode(np.frombuffer(zf.read(name), np.uint8), cv2.IMREAD_COLOR)
            lab = cv2.imdecode(np.frombuffer(zf.read(label_name), np.uint8), cv2.IMREAD_UNCHANGED)
            if bgr is None or lab is None or lab.ndim != 2:
                raise SourceError(f"{zip_path}: cannot decode {name} or its label")
            yield np.ascontiguousarray(bgr[:, :, ::-1]), lab


def synthetic_scene(n: int, height: int = 240, width: int = 320, seed: int = 0):
    """(rgb, label) pairs of a generated road scene in CamVid class ids: sky, building, road, pavement and
    a car driving across. Deterministic; labels are exact by construction."""
    rng = np.random.default_rng(seed)
    sky, building, road, pavement, car = 0, 1, 3, 4, 8
    colours = {sky: (110, 160, 230), building: (120, 100, 90), road: (90, 90, 95), pavement: (170, 160, 140),
               car: (200, 30, 30)}
    base = np.full((height, width), sky, np.uint8)
    horizon = height * 2 // 5
    for x0 in range(0, width, width // 5):  # a row of buildings of random height
        top = int(rng.integers(height // 8, horizon))
        base[top:horizon, x0:x0 + width // 5 - 4] = building
    base[horizon:horizon + height // 10] = pavement
    base[horizon + height // 10:] = road
    for i in range(n):
        label = base.copy()
        cw, ch = width // 5, height // 6
        x = int((i * 4) % (width + cw)) - cw
        y = horizon + height // 4
        label[y:y + ch, max(x, 0):max(x + cw, 0)] = car
        rgb = np.zeros((height, width, 3), np.uint8)
        for cid, colour in colours.items():
            rgb[label == cid] = colour
        noise = rng.integers(-12, 13, rgb.shape)
        yield np.clip(rgb.astype(np.int16) + noise, 0, 255).astype(np.uint8), label


def synthetic_pedestrians(n: int, height: int = 240, width: int = 320, people: int = 3, seed: int = 0):
    """(rgb, objects) pairs of a generated street with bright upright figures walking across, each labelled
    "person" (class 0) with its exact box. Deterministic. (Bright: the synthetic detector's class 0 fires on
    bright cells, so the demo's fallback models find something.)"""
    rng = np.random.default_rng(seed)
    ground = height * 3 // 5
    base = np.empty((height, width, 3), np.int16)
    base[:ground] = (150, 150, 160)
    base[ground:] = (95, 95, 100)
    walkers = []
    for k in range(people):
        ph = int(height * rng.uniform(0.25, 0.45))
        pw = max(ph // 3, 2)
        walkers.append((ph, pw, float(rng.uniform(0, width)), float(rng.choice([-1, 1]) * rng.uniform(2, 5)),
                        tuple(int(v) for v in rng.integers(235, 256, 3)), k))
    for i in range(n):
        rgb = base.copy()
        objects = []
        for ph, pw, x0, speed, colour, k in walkers:
            x = int((x0 + speed * i) % (width + pw)) - pw
            y2 = min(ground + (k * height) // 12 + ph // 2, height)
            y1 = y2 - ph
            x1, x2 = max(x, 0), min(x + pw, width)
            if x2 - x1 < 2:
                continue
            rgb[y1:y2, x1:x2] = colour
            objects.append({"label": "person", "class_id": 0, "box": [float(x1), float(y1), float(x2), float(y2)]})
        noise = rng.integers(-10, 11, rgb.shape)
        yield np.clip(rgb + noise, 0, 255).astype(np.uint8), objects


def _parser(prog):
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("source", help="a video file (anything OpenCV decodes), a folder of images (sorted by name), or "
                   "Penn-Fudan (pennfudan-trainval.zip or its PennFudanPed folder: frames with pedestrian boxes)")
    p.add_argument("-o", "--output", required=True, help="bag directory to create")
    p.add_argument("--rate", type=float, help="frame rate in Hz (default: the video's own rate, else 30)")
    p.add_argument("--frame-id", default="camera", help="header frame_id of every frame")
    p.add_argument("--topic", default="/camera/image_raw", help="camera topic")
    p.add_argument("--format", choices=bags.FORMATS, default="rgb8",
                   help="rgb8/bgr8: raw sensor_msgs/Image; jpeg/png: sensor_msgs/CompressedImage")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality")
    p.add_argument("--storage", choices=bags.STORAGES, default="sqlite3")
    p.add_argument("--max-frames", type=int, help="stop after this many frames")
    p.add_argument("--size", help="WIDTHxHEIGHT, e.g. 640x480: resize every frame (plain resize; box and mask "
                   "labels are scaled with it); default: the source's own size")
    p.add_argument("--split", choices=pennfudan.SPLITS, default="val",
                   help=f"Penn-Fudan images: val = every {pennfudan.VAL_EVERY}th by sorted name (the toolkit's "
                   "validation split), train = the rest, all")
    p.add_argument("--labels", help="folder of class-id label PNGs named like the frames (CamVid *annot/ style)")
    p.add_argument("--label-names", default="camvid",
                   help="class names for --labels: 'camvid' or a comma-separated list (index = class id)")
    p.add_argument("--ignore-index", type=int, default=CAMVID_IGNORE, help="label id scored as void")
    p.add_argument("--class-folders", action="store_true",
                   help="SOURCE is an ImageFolder tree SOURCE/<class>/<image>: store each frame's class label")
    p.add_argument("--overwrite", action="store_true")
    return p


def build(args) -> tuple[int, dict]:
    source = Path(args.source)
    if not source.exists():
        raise SourceError(f"source not found: {source}")
    info = {"source": str(source.resolve()), "tool": "robot-compress bag-from-frames"}
    masks = classes = boxes = None
    rate = args.rate
    size = parse_size(getattr(args, "size", None))
    if pennfudan.is_pennfudan(source):
        if args.labels or args.class_folders:
            raise SourceError("Penn-Fudan carries its own box labels; drop --labels / --class-folders")
        items = list(pennfudan_frames(source, args.split, size, args.max_frames))
        if not items:
            raise SourceError(f"no Penn-Fudan images in split {args.split!r} of {source}")
        frames = [rgb for _, rgb, _ in items]
        boxes = [objects for _, _, objects in items]
        info.update(kind="pennfudan", split=args.split, class_names=pennfudan.LABELS, first=items[0][0],
                    last=items[-1][0], images=[name for name, _, _ in items],
                    note="Penn-Fudan pedestrians (Wang et al., ACCV 2007), research use; PASCAL boxes")
    elif source.is_dir() and args.class_folders:
        classes_dirs = sorted(d for d in source.iterdir() if d.is_dir())
        pairs = [(f, d.name) for d in classes_dirs for f in image_files(d)][: args.max_frames]
        if not pairs:
            raise SourceError(f"no images under {source}/<class>/")
        frames = (_read_image(f) for f, _ in pairs)
        classes = [c for _, c in pairs]
        info.update(kind="image-folder-classes", class_names=[d.name for d in classes_dirs])
    elif source.is_dir():
        files = image_files(source)[: args.max_frames]
        if not files:
            raise SourceError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder {source}")
        frames = (_read_image(f) for f in files)
        info.update(kind="image-folder", first=files[0].name, last=files[-1].name)
        if args.labels:
            label_dir = Path(args.labels)
            missing = [f.name for f in files if not (label_dir / f.name).is_file()]
            if missing:
                raise SourceError(f"{len(missing)} frame(s) have no label in {label_dir}, e.g. {missing[0]}")
            masks = (_resize_label(_read_label(label_dir / f.name), size) for f in files)
            names = CAMVID_LABELS if args.label_names == "camvid" else args.label_names.split(",")
            info.update(label_source=str(label_dir.resolve()), class_names=names, ignore_index=args.ignore_index)
    else:
        if args.labels or args.class_folders:
            raise SourceError("--labels and --class-folders need an image folder, not a video")
        frames, fps = video_frames(source, args.max_frames)
        rate = rate or (fps if fps > 0 else None)
        info.update(kind="video", video_fps=fps)
    rate = rate or 30.0
    if size is not None and boxes is None:
        frames = (resize_frame(rgb, size)[0] for rgb in frames)
    if size is not None:
        info.update(size=[size[1], size[0]])
    n = bags.write_frames(args.output, frames, topic=args.topic, rate_hz=rate, frame_id=args.frame_id,
                          fmt=args.format, storage=args.storage, label_masks=masks, class_labels=classes,
                          box_labels=boxes, info=info, overwrite=args.overwrite, quality=args.quality)
    return n, info


def run(command: str, argv: list[str]) -> int:
    args = _parser(f"robot-compress {command}").parse_args(argv)
    try:
        n, info = build(args)
    except bags.BagError as exc:
        print(f"robot-compress {command}: error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {n} frames ({args.format}, {args.storage}) to {args.output} from {info['kind']} {args.source}")
    return 0
