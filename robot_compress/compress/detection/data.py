"""Detection datasets from local paths (nothing downloaded): Penn-Fudan (PASCAL-style `Annotation/*.txt`, dir
or zip), user datasets as COCO-JSON (pycocotools) or VOC-XML (xml.etree), and a synthetic set for tests.

Items are (normalised float CHW tensor at input_size, target) with target a dict:
`boxes` float32 [K, 4] x1 y1 x2 y2 in model-input pixels, `labels` int64 [K] 0-based (no background),
`frame_boxes` the same boxes in the frame's own pixels, `crowd` bool [K] (COCO iscrowd / VOC difficult: not
learnt, not counted as misses), `frame_size` (h, w) and `image_id`. Only non-crowd boxes go into `boxes`.
With `raw_uint8=True` the image is the frame itself (HWC uint8 RGB at its own size), as a camera would hand it
to the runtime Engine; the target is the same.

Validation is carved by image: every k-th image (sorted by file name, k = round(1 / val_fraction), from the first),
so the split depends on nothing but the file list; for Penn-Fudan with val_fraction 0.2 it is
`robot_compress.pennfudan`'s val split (names[::5], 24 images), the one the robot-side tools score.

Training augmentation (`SegAugment` settings from the recipe's `augment:`)
is detection-aware: scale jitter with a random crop or pad, horizontal flip and colour jitter move the boxes with
the pixels; boxes left with under 40 % of their area inside the crop are dropped.
"""
from __future__ import annotations

import copy
import zipfile
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from robot_compress.compress.data import (
    IMAGE_SUFFIXES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    DatasetError,
    DatasetInfo,
    SegAugment,
    _decode_rgb,
    _fingerprint_dir,
    _fingerprint_entries,
    _fingerprint_zip,
    _jitter,
    _uniform,
)

DETECTION_KINDS = ("pennfudan", "coco_detection", "voc_detection", "synthetic_det")
MIN_KEPT_AREA = 0.4  # a box cut by an augmentation crop is kept when this fraction of it stays visible
MIN_BOX_SIDE = 1.0  # pixels, after resizing to the input size


class Targets(list):
    """A batch's target dicts; `.to(device)` moves their tensors (the training loop moves targets so)."""

    def to(self, device):
        return Targets({k: v.to(device) if torch.is_tensor(v) else v for k, v in t.items()} for t in self)


def detection_collate(batch):
    """(images [N, 3, h, w], Targets) for tensors; (list of frames, Targets) for raw uint8 frames."""
    images, targets = zip(*batch, strict=True)
    if torch.is_tensor(images[0]):
        return torch.stack(images), Targets(targets)
    return list(images), Targets(targets)


class DetectionDataset(Dataset):
    """Frames (bytes, paths or HWC uint8 arrays) with per-frame boxes in frame pixels (float [K, 4] xyxy),
    0-based class ids and crowd flags. See the module docstring for items and augmentation."""

    collate_fn = staticmethod(detection_collate)

    def __init__(self, info: DatasetInfo, images, boxes, labels, crowd=None, *, augment=False,
                 raw_uint8: bool = False, names=None):
        if not (len(images) == len(boxes) == len(labels)):
            raise DatasetError(f"{info.source}: {len(images)} images, {len(boxes)} box lists, {len(labels)} labels")
        if len(images) == 0:
            raise DatasetError(f"dataset {info.source} is empty")
        self.info = info
        self.images = images
        self.boxes = [np.asarray(b, np.float32).reshape(-1, 4) for b in boxes]
        self.labels = [np.asarray(v, np.int64).reshape(-1) for v in labels]
        self.crowd = [np.zeros(len(v), bool) for v in self.labels] if crowd is None else \
            [np.asarray(c, bool).reshape(-1) for c in crowd]
        for i, (b, v) in enumerate(zip(self.boxes, self.labels, strict=True)):
            if len(b) != len(v):
                raise DatasetError(f"{info.source}: item {i} has {len(b)} boxes but {len(v)} labels")
            if len(v) and (v.min() < 0 or v.max() >= len(info.labels)):
                raise DatasetError(f"{info.source}: item {i} has a class id outside 0..{len(info.labels) - 1}")
        self.augment = augment
        self.raw_uint8 = raw_uint8
        self.names = list(names) if names is not None else [str(i) for i in range(len(images))]
        self._mean = np.array(info.mean, np.float32) * 255.0
        self._std = np.array(info.std, np.float32) * 255.0

    def __len__(self):
        return len(self.images)

    def variant(self, *, augment=None, raw_uint8=None, native=None):
        """The same items with other augment/raw_uint8 settings (`native` is accepted and ignored: detection is
        always scored in the frame's own pixels)."""
        other = copy.copy(self)
        if augment is not None:
            other.augment = augment
        if raw_uint8 is not None:
            other.raw_uint8 = raw_uint8
        return other

    def frame(self, i) -> np.ndarray:
        item = self.images[i]
        return item if isinstance(item, np.ndarray) else _decode_rgb(item)

    def __getitem__(self, i):
        img = self.frame(i)
        fh, fw = img.shape[:2]
        boxes, labels, crowd = self.boxes[i].copy(), self.labels[i].copy(), self.crowd[i].copy()
        frame_target = {"frame_boxes": torch.from_numpy(boxes.copy()), "frame_labels": torch.from_numpy(labels.copy()),
                        "crowd": torch.from_numpy(crowd.copy()), "frame_size": (fh, fw), "image_id": int(i)}
        if self.raw_uint8:
            return np.ascontiguousarray(img), frame_target
        h, w = self.info.input_size
        if isinstance(self.augment, SegAugment) or self.augment is True:
            aug = self.augment if isinstance(self.augment, SegAugment) else SegAugment(flip=True)
            img, boxes, keep = augment_detection(img, boxes, aug, (h, w))
            labels, crowd = labels[keep], crowd[keep]
        else:
            boxes = scale_boxes(boxes, (fh, fw), (h, w))
            img = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR) if (fh, fw) != (h, w) else img
        ok = ~crowd & ((boxes[:, 2] - boxes[:, 0]) >= MIN_BOX_SIDE) & ((boxes[:, 3] - boxes[:, 1]) >= MIN_BOX_SIDE)
        x = (img.astype(np.float32) - self._mean) / self._std
        target = dict(frame_target, boxes=torch.from_numpy(boxes[ok].astype(np.float32)),
                      labels=torch.from_numpy(labels[ok].astype(np.int64)))
        return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))), target


def scale_boxes(boxes: np.ndarray, from_hw, to_hw) -> np.ndarray:
    """xyxy boxes from one image size to another (plain resize, as the runtime resizes frames)."""
    sy, sx = to_hw[0] / from_hw[0], to_hw[1] / from_hw[1]
    return (boxes * np.array([sx, sy, sx, sy], np.float32)).astype(np.float32)


def augment_detection(img: np.ndarray, boxes: np.ndarray, aug: SegAugment, out_hw):
    """Frame + boxes (frame pixels) -> an augmented (out_h, out_w) image, boxes in its pixels and the mask of
    boxes kept. Resize to out_hw times a scale drawn from aug.scale, random crop (or pad with black) back to
    out_hw, flip, colour jitter. Draws from torch's RNG (seeded and checkpointed like the other datasets)."""
    oh, ow = out_hw
    fh, fw = img.shape[:2]
    s = _uniform(*aug.scale)
    h, w = max(1, round(oh * s)), max(1, round(ow * s))
    img = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
    boxes = scale_boxes(boxes, (fh, fw), (h, w))
    if h < oh or w < ow:  # pad bottom/right... at a random offset
        py, px = int(torch.randint(0, max(oh - h, 0) + 1, ())), int(torch.randint(0, max(ow - w, 0) + 1, ()))
        canvas = np.zeros((max(h, oh), max(w, ow), 3), np.uint8)
        canvas[py:py + h, px:px + w] = img
        img, boxes = canvas, boxes + np.array([px, py, px, py], np.float32)
        h, w = img.shape[:2]
    y, x = int(torch.randint(0, h - oh + 1, ())), int(torch.randint(0, w - ow + 1, ()))
    img = img[y:y + oh, x:x + ow]
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    boxes = boxes - np.array([x, y, x, y], np.float32)
    boxes = np.stack([boxes[:, 0].clip(0, ow), boxes[:, 1].clip(0, oh), boxes[:, 2].clip(0, ow),
                      boxes[:, 3].clip(0, oh)], axis=1) if len(boxes) else boxes.reshape(0, 4)
    kept = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = kept >= MIN_KEPT_AREA * np.maximum(area, 1e-6)
    if aug.flip and torch.rand(()) < 0.5:
        img = img[:, ::-1]
        boxes = np.stack([ow - boxes[:, 2], boxes[:, 1], ow - boxes[:, 0], boxes[:, 3]], axis=1) if len(boxes) \
            else boxes
    if aug.color_jitter > 0:
        img = _jitter(img, aug.color_jitter)
    return np.ascontiguousarray(img), boxes[keep].astype(np.float32), keep


# ---------------------------------------------------------------------------------------------- loading


def load_detection_dataset(kind: str, root, *, input_size=None, **opts) -> DetectionDataset:
    loaders = {"pennfudan": _pennfudan, "coco_detection": _coco_detection, "voc_detection": _voc_detection,
               "synthetic_det": _synthetic_det}
    if kind not in loaders:
        raise DatasetError(f"unknown detection dataset kind {kind!r}; choose one of {sorted(loaders)}")
    if kind != "synthetic_det":
        if root is None:
            raise DatasetError(f"dataset {kind!r} needs a local path (root); nothing is downloaded")
        root = Path(root).expanduser()
        if not root.exists():
            raise DatasetError(f"dataset path {root} does not exist")
    if input_size is not None:
        input_size = (int(input_size[0]), int(input_size[1]))
    return loaders[kind](root, input_size=input_size, **opts)


def val_every(val_fraction: float) -> int:
    """k of the by-image split: every k-th item validates (k = round(1 / val_fraction), at least 2)."""
    return max(2, round(1.0 / val_fraction))


def carve_every(n: int, val_fraction: float) -> tuple[list[int], list[int]]:
    """(train, val) indices: every k-th item (k = val_every(val_fraction); items 0, k, 2k, ...) validates, as
    `robot_compress.pennfudan.split` defines Penn-Fudan's val (names[::5] with val_fraction 0.2)."""
    k = val_every(val_fraction)
    val = list(range(0, n, k))
    if not val or len(val) >= n:
        raise DatasetError(f"val_fraction {val_fraction} of {n} images leaves an empty train or validation split")
    taken = set(val)
    return [i for i in range(n) if i not in taken], val


def load_detection_splits(spec):
    """(train, val, info) for a recipe's DataSpec of a detection kind: validation carved by image (every
    k-th), the training part augmented as `spec.augment` says, optionally a fixed training subset."""
    if spec.val_split is not None:
        raise DatasetError(f"detection datasets carve validation by image (val_fraction); val_split "
                           f"{spec.val_split!r} is not supported for {spec.kind}")
    options = dict(spec.options)
    flag = bool(options.pop("augment", False))
    ds = load_detection_dataset(spec.kind, spec.root, input_size=spec.input_size, **options)
    train_idx, val_idx = carve_every(len(ds), spec.val_fraction)
    aug = flag
    if spec.augment is not None:
        a = spec.augment
        aug = SegAugment(scale=tuple(a.scale), crop=None, flip=a.flip, color_jitter=a.color_jitter)
    if spec.train_subset is not None and spec.train_subset < len(train_idx):
        picked = np.random.default_rng([spec.seed, spec.train_subset]).choice(len(train_idx), spec.train_subset,
                                                                              replace=False)
        train_idx = [train_idx[int(i)] for i in sorted(picked)]
    train = Subset(ds.variant(augment=aug) if aug else ds, train_idx)
    return train, Subset(ds, val_idx), ds.info


def _info(labels, input_size, fingerprint, source, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> DatasetInfo:
    return DatasetInfo("detection", list(labels), tuple(input_size), tuple(mean), tuple(std), None, fingerprint,
                       source)


# Penn-Fudan ------------------------------------------------------------------------------------------------

def _png_hw(blob: bytes) -> tuple[int, int]:
    """(height, width) from a PNG's IHDR chunk, without decoding the image."""
    if blob[:8] != b"\x89PNG\r\n\x1a\n":
        raise DatasetError("not a PNG image")
    return int.from_bytes(blob[20:24], "big"), int.from_bytes(blob[16:20], "big")


def _pennfudan(root: Path, *, input_size):
    """Penn-Fudan through `robot_compress.pennfudan` (the one definition of its boxes and its split that the
    robot-side tools use too): items sorted by image name, so carving every 5th from index 0 is its `val`."""
    from robot_compress import pennfudan as pf

    images, boxes, stems = [], [], []
    if root.is_file():
        if not zipfile.is_zipfile(root):
            raise DatasetError(f"{root} is neither a Penn-Fudan directory nor a zip archive")
        with zipfile.ZipFile(root) as zf:
            names = sorted(n for n in zf.namelist() if n.startswith(pf.IMAGES) and n.endswith(".png"))
            for name in names:
                stem = Path(name).stem
                try:
                    text = zf.read(f"{pf.ANNOTATIONS}{stem}.txt").decode("latin-1")
                except KeyError:
                    raise DatasetError(f"{root}: {name} has no annotation {pf.ANNOTATIONS}{stem}.txt") from None
                blob = zf.read(name)
                images.append(blob)
                boxes.append(_pf_boxes(text, _png_hw(blob), f"{root}:{name}"))
                stems.append(stem)
            fp = _fingerprint_zip(zf)
    else:
        base = pf._root(root)
        if base is None:
            raise DatasetError(f"{root} holds no PennFudanPed PNGImages/ and Annotation/ folders")
        for img in sorted((base / "PNGImages").glob("*.png")):
            ann = base / "Annotation" / f"{img.stem}.txt"
            if not ann.is_file():
                raise DatasetError(f"Penn-Fudan annotation {ann} for {img} is missing")
            images.append(str(img))
            boxes.append(_pf_boxes(ann.read_text(encoding="latin-1"), _png_hw(img.read_bytes()[:32]), str(ann)))
            stems.append(img.stem)
        fp = _fingerprint_dir(base)
    if not images:
        raise DatasetError(f"no Penn-Fudan images (PennFudanPed/PNGImages/*.png) under {root}")
    info = _info(pf.LABELS, input_size or (320, 320), fp, str(root))
    return DetectionDataset(info, images, boxes, [np.zeros(len(b), np.int64) for b in boxes], names=stems)


def _pf_boxes(text: str, hw, where: str) -> np.ndarray:
    from robot_compress import pennfudan as pf

    try:
        objects = pf.parse_annotation(text, hw)
    except pf.PennFudanError as exc:
        raise DatasetError(f"{where}: {exc}") from None
    return np.asarray([o["box"] for o in objects], np.float32).reshape(-1, 4)


# COCO-JSON ---------------------------------------------------------------------------------------------------

def _coco_detection(root: Path, *, input_size, images: str | None = None, labels: list | None = None):
    """`root`: a COCO instances JSON file, or a dir holding exactly one *.json (or annotations.json). Images are
    looked up relative to `images` (option), else the JSON's dir and its images/ subdir. Classes: the JSON's
    categories sorted by id (class id = rank), or `labels` (category names, in this order; others dropped)."""
    try:
        from pycocotools.coco import COCO
    except ImportError:
        raise DatasetError("COCO-JSON datasets need pycocotools: pip install pycocotools") from None
    ann_file = _one_json(root)
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        try:
            coco = COCO(str(ann_file))
        except Exception as exc:  # noqa: BLE001 - json/key errors of a malformed file
            raise DatasetError(f"{ann_file} is not a COCO instances file: {exc}") from None
    cats = sorted(coco.cats.values(), key=lambda c: c["id"])
    names = [c["name"] for c in cats] if labels is None else list(labels)
    unknown = set(names) - {c["name"] for c in cats}
    if unknown:
        raise DatasetError(f"{ann_file}: labels {sorted(unknown)} are not categories of this file")
    cat_to_class = {c["id"]: names.index(c["name"]) for c in cats if c["name"] in names}
    bases = [Path(images)] if images else [ann_file.parent, ann_file.parent / "images"]
    frames, boxes, classes, crowd, ids = [], [], [], [], []
    for img_id in sorted(coco.imgs):
        rec = coco.imgs[img_id]
        path = next((b / rec["file_name"] for b in bases if (b / rec["file_name"]).is_file()), None)
        if path is None:
            raise DatasetError(f"{ann_file}: image {rec['file_name']} not found under {[str(b) for b in bases]}")
        anns = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=img_id, iscrowd=None))
                if a["category_id"] in cat_to_class]
        b = np.asarray([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                        for a in anns], np.float32).reshape(-1, 4)
        frames.append(str(path))
        boxes.append(b)
        classes.append([cat_to_class[a["category_id"]] for a in anns])
        crowd.append([bool(a.get("iscrowd", 0)) for a in anns])
        ids.append(rec["file_name"])
    fp = _fingerprint_entries([(ann_file.name, ann_file.stat().st_size)]
                              + [(Path(f).name, Path(f).stat().st_size) for f in frames])
    info = _info(names, input_size or (320, 320), fp, str(ann_file))
    return DetectionDataset(info, frames, boxes, classes, crowd, names=ids)


def _one_json(root: Path) -> Path:
    if root.is_file():
        return root
    for name in ("annotations.json", "instances.json"):
        if (root / name).is_file():
            return root / name
    found = sorted(root.glob("*.json")) + sorted((root / "annotations").glob("*.json"))
    if len(found) != 1:
        raise DatasetError(f"{root}: expected one COCO JSON file (or annotations.json), found {len(found)}")
    return found[0]


# VOC-XML -----------------------------------------------------------------------------------------------------

def parse_voc_xml(text: str, source: str = "xml") -> dict:
    """{'filename', 'size': (h, w) or None, 'objects': [(name, [x1, y1, x2, y2], difficult)]} with VOC's 1-based
    inclusive pixel boxes turned into 0-based continuous ones ([xmin - 1, ymin - 1, xmax, ymax])."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise DatasetError(f"{source}: not valid XML ({exc})") from None
    size = root.find("size")
    hw = None
    if size is not None and size.findtext("height") and size.findtext("width"):
        hw = (int(float(size.findtext("height"))), int(float(size.findtext("width"))))
    objects = []
    for obj in root.findall("object"):
        box = obj.find("bndbox")
        if box is None:
            raise DatasetError(f"{source}: object without bndbox")
        try:
            x1, y1, x2, y2 = (float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        except (TypeError, ValueError):
            raise DatasetError(f"{source}: bndbox needs numeric xmin, ymin, xmax, ymax") from None
        objects.append(((obj.findtext("name") or "").strip(), [x1 - 1, y1 - 1, x2, y2],
                        (obj.findtext("difficult") or "0").strip() == "1"))
    return {"filename": (root.findtext("filename") or "").strip(), "size": hw, "objects": objects}


def _voc_detection(root: Path, *, input_size, labels: list | None = None, split: str | None = None):
    """`root`: a VOC-style dir (Annotations/*.xml, JPEGImages/; also under VOC2012/ or VOCdevkit/VOC2012/).
    `split`: an ImageSets/Main/<split>.txt list (default: every XML). Classes: `labels` (in this order; other
    names dropped) or the sorted names found. `difficult` objects are crowd (neither learnt nor missed)."""
    base = next((c for c in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012")
                 if (c / "Annotations").is_dir()), None)
    if base is None:
        raise DatasetError(f"no Annotations/ dir (VOC-XML) under {root}")
    if split:
        lst = base / "ImageSets" / "Main" / f"{split}.txt"
        if not lst.is_file():
            raise DatasetError(f"VOC split list {lst} is missing")
        xmls = [base / "Annotations" / f"{s.split()[0]}.xml" for s in lst.read_text().splitlines() if s.strip()]
    else:
        xmls = sorted((base / "Annotations").glob("*.xml"))
    parsed = []
    for x in xmls:
        if not x.is_file():
            raise DatasetError(f"VOC annotation {x} is missing")
        parsed.append((x, parse_voc_xml(x.read_text(encoding="utf-8"), str(x))))
    names = list(labels) if labels is not None else sorted({o[0] for _, p in parsed for o in p["objects"]})
    if not names:
        raise DatasetError(f"{root}: no objects in any annotation and no labels given")
    frames, boxes, classes, crowd, ids = [], [], [], [], []
    for x, p in parsed:
        img = base / "JPEGImages" / (p["filename"] or f"{x.stem}.jpg")
        if not img.is_file():
            cands = [base / "JPEGImages" / f"{x.stem}{s}" for s in IMAGE_SUFFIXES]
            img = next((c for c in cands if c.is_file()), None)
            if img is None:
                raise DatasetError(f"image for {x} not found in {base / 'JPEGImages'}")
        objs = [o for o in p["objects"] if o[0] in names]
        frames.append(str(img))
        boxes.append(np.asarray([o[1] for o in objs], np.float32).reshape(-1, 4))
        classes.append([names.index(o[0]) for o in objs])
        crowd.append([o[2] for o in objs])
        ids.append(x.stem)
    if not frames:
        raise DatasetError(f"VOC dataset {root} is empty")
    fp = _fingerprint_entries([(x.name, x.stat().st_size) for x, _ in parsed]
                              + [(Path(f).name, Path(f).stat().st_size) for f in frames])
    info = _info(names, input_size or (320, 320), fp, str(base))
    return DetectionDataset(info, frames, boxes, classes, crowd, names=ids)


# synthetic (tests) -------------------------------------------------------------------------------------------

_COLOURS = np.array([[230, 40, 40], [40, 210, 40], [40, 70, 230], [230, 210, 40]], np.uint8)


def _synthetic_det(root, *, input_size, n: int = 48, num_classes: int = 2, seed: int = 0, frame_size=None,
                   max_objects: int = 3):
    """Dark noise frames with 1..max_objects solid rectangles (class = colour), at `frame_size` (default the
    input size): boxes to find in seconds of training."""
    if not 1 <= num_classes <= len(_COLOURS):
        raise DatasetError(f"synthetic_det supports 1..{len(_COLOURS)} classes, got {num_classes}")
    h, w = tuple(frame_size or input_size or (64, 64))
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 60, (n, h, w, 3)).astype(np.uint8)
    boxes, classes = [], []
    for k in range(n):
        b, c = [], []
        for _ in range(int(rng.integers(1, max_objects + 1))):
            bh, bw = int(rng.integers(h // 5, h // 2 + 1)), int(rng.integers(w // 5, w // 2 + 1))
            y, x = int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1))
            cls = int(rng.integers(0, num_classes))
            frames[k, y:y + bh, x:x + bw] = _COLOURS[cls]
            b.append([x, y, x + bw, y + bh])
            c.append(cls)
        boxes.append(b)
        classes.append(c)
    fp = _fingerprint_entries([("synthetic_det", f"n={n},c={num_classes},seed={seed},{h}x{w},{max_objects}")])
    info = _info([f"class{c}" for c in range(num_classes)], input_size or (h, w), fp, "synthetic_det",
                 mean=(0.5,) * 3, std=(0.25,) * 3)
    return DetectionDataset(info, frames, boxes, classes)
