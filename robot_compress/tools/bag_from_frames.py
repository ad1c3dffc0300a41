"""`robot-compress bag-from-frames SOURCE -o BAG`: a rosbag2 camera bag from a video file or an image folder.

Frames are stored raw (rgb8/bgr8 Image) or compressed (jpeg/png CompressedImage) at a fixed rate with a
given frame_id. Labelled sources keep their labels in the bag so `robot-compress score` can find them:
`--labels DIR` (CamVid-style: one class-id PNG per frame, same file name) or `--class-folders`
(ImageFolder layout SOURCE/<class>/<image>). The bag's /robot_compress/bag_info topic records provenance.
"""
from __future__ import annotations

import argparse
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

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


def _parser(prog):
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("source", help="a video file (anything OpenCV decodes) or a folder of images (sorted by name)")
    p.add_argument("-o", "--output", required=True, help="bag directory to create")
    p.add_argument("--rate", type=float, help="frame rate in Hz (default: the video's own rate, else 30)")
    p.add_argument("--frame-id", default="camera", help="header frame_id of every frame")
    p.add_argument("--topic", default="/camera/image_raw", help="camera topic")
    p.add_argument("--format", choices=bags.FORMATS, default="rgb8",
                   help="rgb8/bgr8: raw sensor_msgs/Image; jpeg/png: sensor_msgs/CompressedImage")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality")
    p.add_argument("--storage", choices=bags.STORAGES, default="sqlite3")
    p.add_argument("--max-frames", type=int, help="stop after this many frames")
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
    masks = classes = None
    rate = args.rate
    if source.is_dir() and args.class_folders:
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
            masks = (_read_label(label_dir / f.name) for f in files)
            names = CAMVID_LABELS if args.label_names == "camvid" else args.label_names.split(",")
            info.update(label_source=str(label_dir.resolve()), class_names=names, ignore_index=args.ignore_index)
    else:
        if args.labels or args.class_folders:
            raise SourceError("--labels and --class-folders need an image folder, not a video")
        frames, fps = video_frames(source, args.max_frames)
        rate = rate or (fps if fps > 0 else None)
        info.update(kind="video", video_fps=fps)
    rate = rate or 30.0
    n = bags.write_frames(args.output, frames, topic=args.topic, rate_hz=rate, frame_id=args.frame_id,
                          fmt=args.format, storage=args.storage, label_masks=masks, class_labels=classes,
                          info=info, overwrite=args.overwrite, quality=args.quality)
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
