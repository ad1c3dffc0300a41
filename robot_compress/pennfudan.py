"""Penn-Fudan pedestrians (Wang et al., ACCV 2007; research use), torch-free: the one definition of its
validation split and of its boxes in frame pixels, for the toolkit and the robot-side tools alike.

Layout (the shared `pennfudan-trainval.zip`, or the extracted folder): `PennFudanPed/PNGImages/<name>.png` and
`PennFudanPed/Annotation/<name>.txt` (PASCAL Annotation Version 1.00 text, one "Bounding box for object" line
per pedestrian). 120 images: 53 FudanPed + 67 PennPed.

- Split: by image, `val` = every VAL_EVERY-th image by sorted file name (`names[::5]`: 24 images, starting
  with FudanPed00001), `train` = the other 96, `all` = every image.
- Boxes: PASCAL counts pixels from (1, 1) inclusive, so a box covering pixels Xmin..Xmax spans
  x = Xmin - 1 .. Xmax in the continuous 0-based pixel coordinates of docs/DETECTION.md (clipped to the
  image). Both PASpersonWalking and PASpersonStanding are class 0, "person".
"""
from __future__ import annotations

import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

LABELS = ["person"]
VAL_EVERY = 5
SPLITS = ("val", "train", "all")
IMAGES = "PennFudanPed/PNGImages/"
ANNOTATIONS = "PennFudanPed/Annotation/"
_BOX = re.compile(r'Bounding box for object \d+ "([^"]*)" \(Xmin, Ymin\) - \(Xmax, Ymax\) : '
                  r'\((\d+), (\d+)\) - \((\d+), (\d+)\)')


class PennFudanError(ValueError):
    """The source is not Penn-Fudan as expected; the message names the file."""


def split(names, which: str) -> list[str]:
    """The image names of one split, sorted: val = names[::VAL_EVERY], train = the rest, all = every name."""
    names = sorted(names)
    if which == "all":
        return names
    val = names[::VAL_EVERY]
    if which == "val":
        return val
    if which == "train":
        chosen = set(val)
        return [n for n in names if n not in chosen]
    raise PennFudanError(f"unknown Penn-Fudan split {which!r}; choose one of {', '.join(SPLITS)}")


def parse_annotation(text: str, image_hw) -> list[dict]:
    """One `Annotation/*.txt` -> ground-truth objects {"label", "class_id", "box": [x1, y1, x2, y2]} in the
    image's 0-based pixel coordinates (see the module docstring)."""
    h, w = int(image_hw[0]), int(image_hw[1])
    objects = []
    for _, x1, y1, x2, y2 in _BOX.findall(text):
        box = [max(int(x1) - 1, 0), max(int(y1) - 1, 0), min(int(x2), w), min(int(y2), h)]
        objects.append({"label": LABELS[0], "class_id": 0, "box": [float(v) for v in box]})
    if not objects:
        raise PennFudanError("annotation has no 'Bounding box for object' lines")
    return objects


def is_pennfudan(source) -> bool:
    """The Penn-Fudan zip, its PennFudanPed folder, or a folder holding PennFudanPed/."""
    source = Path(source)
    if source.is_dir():
        return _root(source) is not None
    if zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as zf:
            return any(n.startswith(IMAGES) for n in zf.namelist())
    return False


def _root(folder: Path) -> Path | None:
    for root in (folder, folder / "PennFudanPed"):
        if (root / "PNGImages").is_dir() and (root / "Annotation").is_dir():
            return root
    return None


def samples(source, which: str = "val", max_images: int | None = None) -> Iterator[tuple[str, np.ndarray, list]]:
    """(image name, RGB uint8 image, objects) of one split, in sorted name order, from the zip or the folder."""
    import cv2

    source = Path(source)
    zf = None
    if source.is_dir():
        root = _root(source)
        if root is None:
            raise PennFudanError(f"{source} holds no PennFudanPed PNGImages/ and Annotation/ folders")
        names = [p.name for p in (root / "PNGImages").glob("*.png")]

        def read(name):
            ann = root / "Annotation" / f"{Path(name).stem}.txt"
            if not ann.is_file():
                raise PennFudanError(f"{root / 'PNGImages' / name} has no annotation {ann}")
            return (root / "PNGImages" / name).read_bytes(), ann.read_text(errors="replace")
    else:
        if not zipfile.is_zipfile(source):
            raise PennFudanError(f"{source} is neither a Penn-Fudan folder nor a zip archive")
        zf = zipfile.ZipFile(source)
        names = [n[len(IMAGES):] for n in zf.namelist() if n.startswith(IMAGES) and n.endswith(".png")]

        def read(name):
            ann = f"{ANNOTATIONS}{Path(name).stem}.txt"
            try:
                return zf.read(IMAGES + name), zf.read(ann).decode(errors="replace")
            except KeyError:
                raise PennFudanError(f"{source}: {IMAGES}{name} has no annotation {ann}") from None
    try:
        if not names:
            raise PennFudanError(f"{source} has no {IMAGES}*.png")
        for name in split(names, which)[:max_images]:
            blob, text = read(name)
            bgr = cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_COLOR)
            if bgr is None:
                raise PennFudanError(f"{source}: cannot decode {name}")
            rgb = np.ascontiguousarray(bgr[:, :, ::-1])
            try:
                objects = parse_annotation(text, rgb.shape[:2])
            except PennFudanError as exc:
                raise PennFudanError(f"{source}: {name}: {exc}") from None
            yield name, rgb, objects
    finally:
        if zf is not None:
            zf.close()
