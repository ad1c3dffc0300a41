"""Datasets from local paths only (nothing is downloaded): CIFAR-10 (python batches, ImageFolder tree,
or a zip read without extracting), Fashion-MNIST idx files, CamVid (SegNet layout, dir or zip),
Pascal VOC 2012, COCO (needs pycocotools), and small deterministic synthetic sets for tests.

Every dataset yields (normalized float CHW tensor, target): target is an int for classification and
an HxW LongTensor for segmentation. With `raw_uint8=True` the image is an HWC uint8 RGB numpy array
at input_size instead (to feed the runtime Engine exactly as a camera frame would be).
"""
from __future__ import annotations

import copy
import gzip
import hashlib
import os
import pickle
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from robot_compress.dataset_constants import (  # noqa: F401  (re-exported: toolkit users import them from here)
    CAMVID_IGNORE,
    CAMVID_LABELS,
    CIFAR10_LABELS,
    IMAGENET_MEAN,
    IMAGENET_STD,
)

FASHION_MNIST_LABELS = ["t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                        "ankle boot"]
VOC_LABELS = ["background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
              "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
              "tvmonitor"]
# COCO category ids of the 20 VOC classes (as torchvision's segmentation reference uses them).
COCO_TO_VOC = [0, 5, 2, 16, 9, 44, 6, 3, 17, 62, 21, 67, 18, 19, 4, 1, 64, 20, 63, 7, 72]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm")


class DatasetError(ValueError):
    """A dataset path is missing, malformed or empty."""


@dataclass(frozen=True)
class DatasetInfo:
    task: str
    labels: list[str]
    input_size: tuple[int, int]  # (height, width)
    mean: tuple[float, float, float]  # on the 0..1 pixel scale, RGB
    std: tuple[float, float, float]
    ignore_index: int | None
    fingerprint: str  # sha256 over file names + sizes (or zip CRCs), or the synthetic parameters
    source: str

    @property
    def num_classes(self) -> int:
        return len(self.labels)


# ---------------------------------------------------------------- image sources

def _imread(blob, flags: int):
    """bytes or a path -> the cv2 image (None when it cannot be decoded)."""
    if isinstance(blob, (bytes, bytearray)):
        return cv2.imdecode(np.frombuffer(blob, np.uint8), flags)
    return cv2.imread(str(blob), flags)


def _describe(blob) -> str:
    return "<bytes>" if isinstance(blob, (bytes, bytearray)) else str(blob)


def _decode_rgb(blob) -> np.ndarray:
    """bytes or a path -> HWC uint8 RGB."""
    img = _imread(blob, cv2.IMREAD_COLOR)
    if img is None:
        raise DatasetError(f"cannot decode image {_describe(blob)}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _decode_label(blob, palette: bool = False) -> np.ndarray:
    """bytes or a path -> HxW class ids. Palette PNGs (VOC) are read as indices, not colours."""
    if palette:
        import io

        from PIL import Image

        src = io.BytesIO(blob) if isinstance(blob, (bytes, bytearray)) else str(blob)
        return np.array(Image.open(src))
    lab = _imread(blob, cv2.IMREAD_UNCHANGED)
    if lab is None:
        raise DatasetError(f"cannot decode label image {_describe(blob)}")
    return lab if lab.ndim == 2 else lab[:, :, 0]


@dataclass(frozen=True)
class SegAugment:
    """Random augmentation of a segmentation item: rescale around input_size by a factor drawn from `scale`,
    random crop of `crop` (padded with void where the rescaled image is smaller), horizontal flip, and
    brightness/contrast/saturation jitter of strength `color_jitter`. Draws from torch's RNG, so a seeded
    (and checkpointed) generator replays the same augmentation."""
    scale: tuple[float, float] = (1.0, 1.0)
    crop: tuple[int, int] | None = None
    flip: bool = True
    color_jitter: float = 0.0


def _uniform(lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand(()))


def augment_segmentation(img: np.ndarray, label: np.ndarray, aug: SegAugment, base_hw, ignore: int):
    """(HWC uint8 image, HW label) at any size -> an augmented (crop_h, crop_w) pair. Pure apart from the RNG."""
    bh, bw = base_hw
    s = _uniform(*aug.scale)
    h, w = max(1, round(bh * s)), max(1, round(bw * s))
    img = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
    label = cv2.resize(label, (w, h), interpolation=cv2.INTER_NEAREST)
    ch, cw = aug.crop or base_hw
    if h < ch or w < cw:  # pad: image with black, label with void (never scored, never learnt)
        ph, pw = max(ch - h, 0), max(cw - w, 0)
        img = cv2.copyMakeBorder(img, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=0)
        label = cv2.copyMakeBorder(label, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=int(ignore))
        h, w = img.shape[:2]
    y = int(torch.randint(0, h - ch + 1, ()))
    x = int(torch.randint(0, w - cw + 1, ()))
    img, label = img[y:y + ch, x:x + cw], label[y:y + ch, x:x + cw]
    if aug.flip and torch.rand(()) < 0.5:
        img, label = img[:, ::-1], label[:, ::-1]
    if aug.color_jitter > 0:
        img = _jitter(img, aug.color_jitter)
    return np.ascontiguousarray(img), np.ascontiguousarray(label)


def _jitter(img: np.ndarray, strength: float) -> np.ndarray:
    j = strength
    x = img.astype(np.float32) * _uniform(1 - j, 1 + j)  # brightness
    x = (x - x.mean()) * _uniform(1 - j, 1 + j) + x.mean()  # contrast
    gray = x.mean(axis=2, keepdims=True)
    x = (x - gray) * _uniform(1 - j, 1 + j) + gray  # saturation
    return np.clip(x, 0, 255).astype(np.uint8)


class ImageDataset(Dataset):
    """Shared item pipeline: read -> (augment) -> resize to input_size -> normalize (or raw uint8).

    `images` is a list of bytes/paths or an NHWC uint8 array; `targets` ints, label blobs/paths, or
    an NHW array; `label_map` (optional, 256-entry LUT) remaps raw label values (e.g. void -> ignore).
    `augment` is a bool (classification: pad-crop + flip; segmentation: flip) or a SegAugment.
    With `native=True` segmentation labels keep their own resolution (the image is still resized to
    input_size), and raw uint8 frames are not resized at all: the robot's view, scored at frame size.
    """

    def __init__(self, info: DatasetInfo, images, targets, *, augment: bool | SegAugment = False,
                 raw_uint8: bool = False, palette_labels: bool = False, label_map: np.ndarray | None = None,
                 pad_crop: int = 4, native: bool = False):
        if len(images) != len(targets):
            raise DatasetError(f"{info.source}: {len(images)} images but {len(targets)} targets")
        if len(images) == 0:
            raise DatasetError(f"dataset {info.source} is empty")
        self.info = info
        self.images = images
        self.targets = targets
        self.augment = augment
        self.raw_uint8 = raw_uint8
        self.palette_labels = palette_labels
        self.label_map = label_map
        self.pad_crop = pad_crop
        self.native = native
        self._mean = np.array(info.mean, np.float32) * 255.0
        self._std = np.array(info.std, np.float32) * 255.0

    def __len__(self):
        return len(self.images)

    def variant(self, *, augment: bool | SegAugment | None = None, raw_uint8: bool | None = None,
                native: bool | None = None) -> ImageDataset:
        """The same items, in the same order, with other augment/raw_uint8/native settings: shares the loaded
        images and targets instead of reading the files again."""
        other = copy.copy(self)
        if augment is not None:
            other.augment = augment
        if raw_uint8 is not None:
            other.raw_uint8 = raw_uint8
        if native is not None:
            other.native = native
        return other

    def label(self, i) -> np.ndarray:
        """Item i's class-id map at its native resolution (void already mapped to ignore_index)."""
        label = self.targets[i]
        label = label if isinstance(label, np.ndarray) else _decode_label(label, self.palette_labels)
        return label if self.label_map is None else self.label_map[label]

    def _image(self, i) -> np.ndarray:
        item = self.images[i]
        return item if isinstance(item, np.ndarray) else _decode_rgb(item)

    def __getitem__(self, i):
        img = self._image(i)
        h, w = self.info.input_size
        if self.info.task == "classification":
            target = int(self.targets[i])
            if img.shape[:2] != (h, w):
                img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
            if self.augment and not self.raw_uint8:
                img = self._crop_flip(img)
            return self._finish(img), target
        label = self.label(i)
        if label.shape[:2] != img.shape[:2]:
            raise DatasetError(f"{self.info.source}: item {i} image {img.shape[:2]} and label {label.shape} differ")
        if isinstance(self.augment, SegAugment) and not self.raw_uint8:
            img, label = augment_segmentation(img, label, self.augment, (h, w), self.info.ignore_index)
        elif self.native:
            if not self.raw_uint8 and img.shape[:2] != (h, w):  # the label stays at frame size
                img = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
        elif img.shape[:2] != (h, w):
            img = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
            label = cv2.resize(label, (w, h), interpolation=cv2.INTER_NEAREST)
        if self.augment is True and not self.raw_uint8 and torch.rand(()) < 0.5:  # torch RNG: seeded per worker
            img, label = img[:, ::-1], label[:, ::-1]
        return self._finish(img), torch.from_numpy(np.ascontiguousarray(label).astype(np.int64))

    def _crop_flip(self, img):
        p = self.pad_crop
        h, w = img.shape[:2]
        padded = cv2.copyMakeBorder(img, p, p, p, p, cv2.BORDER_CONSTANT, value=0)
        y, x = (int(v) for v in torch.randint(0, 2 * p + 1, (2,)))
        img = padded[y:y + h, x:x + w]
        return img[:, ::-1] if torch.rand(()) < 0.5 else img

    def _finish(self, img):
        if self.raw_uint8:
            return np.ascontiguousarray(img)
        x = (img.astype(np.float32) - self._mean) / self._std
        return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


def class_pixel_counts(dataset: ImageDataset, indices=None) -> tuple[np.ndarray, np.ndarray]:
    """Per class: labelled pixels, and pixels of the images where the class appears (void not counted), over
    the native labels of `indices` (default: all items). The inputs of median-frequency balancing."""
    n = dataset.info.num_classes
    pixels = np.zeros(n, np.int64)
    image_pixels = np.zeros(n, np.int64)
    for i in range(len(dataset)) if indices is None else indices:
        counts = np.bincount(dataset.label(i).ravel(), minlength=256)[:n]
        pixels += counts
        image_pixels += np.where(counts > 0, counts.sum(), 0)
    return pixels, image_pixels


# ---------------------------------------------------------------- fingerprints

def _fingerprint_entries(entries) -> str:
    h = hashlib.sha256()
    for name, size in sorted(entries):
        h.update(f"{name}\0{size}\n".encode())
    return "sha256:" + h.hexdigest()


def _fingerprint_dir(root: Path) -> str:
    entries = []
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            entries.append((p.relative_to(root).as_posix(), p.stat().st_size))
    return _fingerprint_entries(entries)


def _fingerprint_zip(zf: zipfile.ZipFile) -> str:
    return _fingerprint_entries((i.filename, f"{i.CRC:08x}:{i.file_size}") for i in zf.infolist())


# ---------------------------------------------------------------- public API

def load_dataset(kind: str, root: str | None, *, input_size=None, train: bool = True, **opts):
    """-> (Dataset, DatasetInfo). Options: augment, raw_uint8, and per-kind ones (see the loaders)."""
    loaders = {"cifar10": _cifar10, "fashion_mnist": _fashion_mnist, "camvid": _camvid, "voc": _voc,
               "coco": _coco, "synthetic_cls": _synthetic_cls, "synthetic_seg": _synthetic_seg}
    if kind not in loaders:
        raise DatasetError(f"unknown dataset kind {kind!r}; choose one of {sorted(loaders)}")
    if not kind.startswith("synthetic"):
        if root is None:
            raise DatasetError(f"dataset {kind!r} needs a local path (root); nothing is downloaded")
        root = Path(root).expanduser()
        if not root.exists():
            raise DatasetError(f"dataset path {root} does not exist")
    if input_size is not None:
        input_size = (int(input_size[0]), int(input_size[1]))
        if min(input_size) < 1:
            raise DatasetError(f"input_size must be positive (height, width), got {input_size}")
    ds = loaders[kind](root, input_size=input_size, train=train, **opts)
    return ds, ds.info


def split_train_val(dataset, val_fraction: float, seed: int = 0) -> tuple[Subset, Subset]:
    """Deterministic disjoint split (same length + seed -> same indices, each subset's `.indices` sorted).
    Apply it to an augmented and an un-augmented copy of the same data to train on one and validate
    on the other."""
    n = len(dataset)
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    n_val = int(round(n * val_fraction))
    if n_val < 1 or n_val >= n:
        raise ValueError(f"val_fraction {val_fraction} of {n} items leaves an empty train or validation split")
    order = np.random.default_rng(seed).permutation(n)
    val = sorted(int(i) for i in order[:n_val])
    train = sorted(int(i) for i in order[n_val:])
    return Subset(dataset, train), Subset(dataset, val)


# ---------------------------------------------------------------- CIFAR-10

# What a CIFAR python batch may contain besides builtin containers, strings and numbers: numpy arrays.
_CIFAR_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    *(("builtins", name) for name in ("bytearray", "bytes", "complex", "set", "frozenset", "list", "dict",
                                      "tuple", "int", "float", "str", "bool")),
}


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and builtin data, nothing else: a batch file cannot make us call code."""

    def find_class(self, module, name):
        if (module, name) in _CIFAR_PICKLE_GLOBALS or (module.startswith("numpy.dtypes") and name.endswith("DType")):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only numpy arrays and builtin data)")


def load_cifar_batch(path: Path) -> dict:
    """One CIFAR-10 python batch (a pickled dict written by Python 2), through the restricted unpickler."""
    try:
        with open(path, "rb") as f:
            data = _ArraysOnlyUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise DatasetError(f"CIFAR-10 batch {path} is not a plain python batch: {exc}") from None
    if not isinstance(data, dict) or "data" not in data or "labels" not in data:
        raise DatasetError(f"CIFAR-10 batch {path} has no 'data' and 'labels' entries")
    return data


def _cifar10(root: Path, *, input_size, train, augment=False, raw_uint8=False):
    size = input_size or (32, 32)
    batches = _find_cifar_batches(root)
    if batches is not None:
        files = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
        images, targets = [], []
        for name in files:
            path = batches / name
            if not path.is_file():
                raise DatasetError(f"CIFAR-10 batch {path} is missing")
            d = load_cifar_batch(path)
            images.append(np.asarray(d["data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            targets.extend(d["labels"])
        images = np.ascontiguousarray(np.concatenate(images))
        fp = _fingerprint_entries((f, (batches / f).stat().st_size) for f in files)
        source = str(batches)
        labels = CIFAR10_LABELS
    else:
        labels, images, targets, fp, source = _image_folder(root, train)
    info = DatasetInfo("classification", labels, size, IMAGENET_MEAN, IMAGENET_STD, None, fp, source)
    return ImageDataset(info, images, targets, augment=augment, raw_uint8=raw_uint8)


def _find_cifar_batches(root: Path):
    for cand in (root, root / "cifar-10-batches-py"):
        if cand.is_dir() and (cand / "batches.meta").is_file():
            return cand
    return None


def _split_dirs(names: set[str], train: bool, source) -> str | None:
    """Pick the train/ or test/ top folder of an ImageFolder tree; None when there is no split folder."""
    want = ("train",) if train else ("test", "val")
    for w in want:
        if w in names:
            return w
    if names & {"train", "test", "val"}:
        raise DatasetError(f"{source} has no {'/'.join(want)} split; carve a validation split from the training "
                           f"data with split_train_val instead")
    return None


def _class_order(names) -> list[str]:
    names = sorted(set(names))
    return CIFAR10_LABELS if set(names) == set(CIFAR10_LABELS) else names


def _image_folder(root: Path, train: bool):
    """ImageFolder tree (dir or zip): [split/]class/image. -> labels, images, targets, fingerprint, source."""
    if root.is_file():
        if not zipfile.is_zipfile(root):
            raise DatasetError(f"{root} is neither a directory nor a zip archive")
        with zipfile.ZipFile(root) as zf:
            infos = [i for i in zf.infolist() if not i.is_dir() and i.filename.lower().endswith(IMAGE_SUFFIXES)]
            parts = [i.filename.split("/") for i in infos]
            split = _split_dirs({p[0] for p in parts if len(p) >= 3}, train, root)
            chosen = [(i, p) for i, p in zip(infos, parts, strict=True)
                      if len(p) >= 2 and (split is None or p[0] == split)]
            labels = _class_order(p[-2] for _, p in chosen)
            index = {c: k for k, c in enumerate(labels)}
            chosen.sort(key=lambda ip: (index[ip[1][-2]], ip[0].filename))
            # Preload the compressed bytes (~45 MB for CIFAR-10): fast random access, decoded per item.
            images = [zf.read(i) for i, _ in chosen]
            targets = [index[p[-2]] for _, p in chosen]
            fp = _fingerprint_zip(zf)
    elif root.is_dir():
        subdirs = {p.name for p in root.iterdir() if p.is_dir()}
        split = _split_dirs(subdirs, train, root)
        base = root / split if split else root
        classes = sorted(p.name for p in base.iterdir() if p.is_dir())
        labels = _class_order(classes)
        images, targets = [], []
        for k, c in enumerate(labels):
            files = sorted(p for p in (base / c).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            images += [str(p) for p in files]
            targets += [k] * len(files)
        fp = _fingerprint_dir(base)
    else:
        raise DatasetError(f"{root} is not a directory or zip archive")
    if not images:
        raise DatasetError(f"dataset {root} is empty: no images in a <class>/<image> layout")
    return labels, images, targets, fp, str(root)


# ---------------------------------------------------------------- Fashion-MNIST

def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
        zero, dtype, ndim = struct.unpack(">HBB", data[:4])
        if zero != 0 or dtype != 0x08:
            raise DatasetError(f"{path} is not an unsigned-byte idx file")
        shape = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
        return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)
    except (OSError, struct.error, ValueError) as exc:
        raise DatasetError(f"cannot read idx file {path}: {exc}") from None


def _fashion_mnist(root: Path, *, input_size, train, augment=False, raw_uint8=False):
    prefix = "train" if train else "t10k"
    found = {}
    for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
        for base in (root, root / "FashionMNIST" / "raw", root / "raw"):
            for suffix in ("", ".gz"):
                p = base / f"{prefix}-{kind}{suffix}"
                if p.is_file():
                    found.setdefault(kind, p)
        if kind not in found:
            raise DatasetError(f"Fashion-MNIST file {prefix}-{kind}[.gz] not found under {root}")
    gray = _read_idx(found["images-idx3-ubyte"])
    targets = _read_idx(found["labels-idx1-ubyte"]).astype(np.int64)
    # LeNet-style: pad 28x28 to 32x32 and repeat to 3 channels so the CIFAR models apply unchanged.
    gray = np.pad(gray, ((0, 0), (2, 2), (2, 2)))
    images = np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=3))
    fp = _fingerprint_entries((p.name, p.stat().st_size) for p in found.values())
    info = DatasetInfo("classification", FASHION_MNIST_LABELS, input_size or (32, 32), (0.286,) * 3, (0.353,) * 3,
                       None, fp, str(root))
    return ImageDataset(info, images, targets, augment=augment, raw_uint8=raw_uint8, pad_crop=2)


# ---------------------------------------------------------------- CamVid (SegNet layout)

def _camvid(root: Path, *, input_size, train, split=None, augment=False, raw_uint8=False, native=False):
    split = split or ("train" if train else "val")
    if root.is_file():
        if not zipfile.is_zipfile(root):
            raise DatasetError(f"{root} is neither a CamVid directory nor a zip archive")
        with zipfile.ZipFile(root) as zf:
            names = {i.filename: i for i in zf.infolist() if not i.is_dir()}
            pairs = []
            for name in sorted(names):
                parts = name.split("/")
                if len(parts) >= 2 and parts[-2] == split and name.lower().endswith(".png"):
                    ann = "/".join(parts[:-2] + [split + "annot", parts[-1]])
                    if ann not in names:
                        raise DatasetError(f"{root}: label {ann} for image {name} is missing")
                    pairs.append((name, ann))
            images = [zf.read(a) for a, _ in pairs]
            labels = [zf.read(b) for _, b in pairs]
            fp = _fingerprint_zip(zf)
    else:
        base = root / "CamVid" if (root / "CamVid").is_dir() else root
        img_dir, ann_dir = base / split, base / (split + "annot")
        if not img_dir.is_dir() or not ann_dir.is_dir():
            raise DatasetError(f"CamVid split {split!r} needs {img_dir} and {ann_dir} (SegNet layout)")
        files = sorted(p for p in img_dir.iterdir() if p.suffix.lower() == ".png")
        for p in files:
            if not (ann_dir / p.name).is_file():
                raise DatasetError(f"CamVid label {ann_dir / p.name} for image {p} is missing")
        images = [str(p) for p in files]
        labels = [str(ann_dir / p.name) for p in files]
        fp = _fingerprint_entries([(f"{split}/{p.name}", p.stat().st_size) for p in files]
                                  + [(f"{split}annot/{p.name}", (ann_dir / p.name).stat().st_size) for p in files])
    if not images:
        raise DatasetError(f"CamVid split {split!r} under {root} is empty")
    # 0..10 are classes; 11 (void) and anything unexpected are scored as void.
    lut = np.full(256, CAMVID_IGNORE, np.uint8)
    lut[:CAMVID_IGNORE] = np.arange(CAMVID_IGNORE)
    info = DatasetInfo("segmentation", CAMVID_LABELS, input_size or (360, 480), IMAGENET_MEAN, IMAGENET_STD,
                       CAMVID_IGNORE,
                       fp, f"{root}:{split}")
    return ImageDataset(info, images, labels, augment=augment, raw_uint8=raw_uint8, label_map=lut, native=native)


# ---------------------------------------------------------------- Pascal VOC 2012

def _voc(root: Path, *, input_size, train, split=None, augment=False, raw_uint8=False):
    split = split or ("train" if train else "val")
    base = next((c for c in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012")
                 if (c / "SegmentationClass").is_dir()), None)
    if base is None:
        raise DatasetError(f"no VOC2012 tree (with SegmentationClass/) under {root}")
    list_file = base / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not list_file.is_file():
        raise DatasetError(f"VOC split list {list_file} is missing")
    ids = [ln.strip() for ln in list_file.read_text().splitlines() if ln.strip()]
    images = [str(base / "JPEGImages" / f"{i}.jpg") for i in ids]
    labels = [str(base / "SegmentationClass" / f"{i}.png") for i in ids]
    fp = _fingerprint_entries([(f"{split}.txt", list_file.stat().st_size)]
                              + [(Path(p).name, Path(p).stat().st_size) for p in labels if Path(p).exists()])
    info = DatasetInfo("segmentation", VOC_LABELS, input_size or (320, 320), IMAGENET_MEAN, IMAGENET_STD, 255,
                       fp, f"{base}:{split}")
    return ImageDataset(info, images, labels, augment=augment, raw_uint8=raw_uint8, palette_labels=True)


# ---------------------------------------------------------------- COCO (VOC's 20 classes)

class _CocoMasks:
    """Lazily rasterized COCO masks for the 20 VOC categories; a list-like of HxW uint8 arrays."""

    def __init__(self, coco, image_ids):
        self.coco, self.image_ids = coco, image_ids
        self.cat_map = {cat: k for k, cat in enumerate(COCO_TO_VOC) if cat}

    def __len__(self):
        return len(self.image_ids)

    def __getitem__(self, i):
        info = self.coco.imgs[self.image_ids[i]]
        mask = np.zeros((info["height"], info["width"]), np.uint8)
        for ann in self.coco.loadAnns(self.coco.getAnnIds(imgIds=self.image_ids[i], iscrowd=None)):
            if ann["category_id"] in self.cat_map:
                m = self.coco.annToMask(ann).astype(bool)
                mask[m] = 255 if ann.get("iscrowd") else self.cat_map[ann["category_id"]]
        return mask


def _coco(root: Path, *, input_size, train, year="2017", augment=False, raw_uint8=False):
    try:
        from pycocotools.coco import COCO
    except ImportError:
        raise DatasetError("COCO segmentation needs pycocotools: pip install pycocotools") from None
    split = f"{'train' if train else 'val'}{year}"
    ann_file = root / "annotations" / f"instances_{split}.json"
    if not ann_file.is_file():
        raise DatasetError(f"COCO annotations {ann_file} are missing")
    coco = COCO(str(ann_file))
    wanted = set(COCO_TO_VOC[1:])
    ids = sorted({a["image_id"] for a in coco.anns.values() if a["category_id"] in wanted})
    images = [str(root / split / coco.imgs[i]["file_name"]) for i in ids]
    fp = _fingerprint_entries([(ann_file.name, ann_file.stat().st_size)])
    info = DatasetInfo("segmentation", VOC_LABELS, input_size or (320, 320), IMAGENET_MEAN, IMAGENET_STD, 255,
                       fp, f"{root}:{split}")
    return ImageDataset(info, images, _CocoMasks(coco, ids), augment=augment, raw_uint8=raw_uint8)


# ---------------------------------------------------------------- synthetic (tests)

_PALETTE = np.array([[220, 40, 40], [40, 200, 40], [40, 60, 220], [230, 210, 40], [200, 40, 200], [40, 200, 210],
                     [240, 140, 30], [120, 120, 120]], np.uint8)


def _synthetic_cls(root, *, input_size, train, n=64, num_classes=4, seed=0, augment=False, raw_uint8=False):
    """Noisy images with a coloured square: the label is the square's colour. Learnable in seconds."""
    if not 2 <= num_classes <= len(_PALETTE):
        raise DatasetError(f"synthetic_cls supports 2..{len(_PALETTE)} classes, got {num_classes}")
    h, w = input_size or (32, 32)
    rng = np.random.default_rng(seed + (0 if train else 10_000))
    targets = rng.integers(0, num_classes, n)
    images = rng.integers(0, 60, (n, h, w, 3)).astype(np.uint8)
    for k in range(n):
        s = max(2, min(h, w) // 2)
        y, x = rng.integers(0, h - s + 1), rng.integers(0, w - s + 1)
        images[k, y:y + s, x:x + s] = _PALETTE[targets[k]]
    fp = _fingerprint_entries([("synthetic_cls", f"n={n},c={num_classes},seed={seed},train={train},{h}x{w}")])
    info = DatasetInfo("classification", [f"class{c}" for c in range(num_classes)], (h, w), (0.5,) * 3, (0.25,) * 3,
                       None, fp, "synthetic_cls")
    return ImageDataset(info, images, targets.tolist(), augment=augment, raw_uint8=raw_uint8)


def _synthetic_seg(root, *, input_size, train, n=32, num_classes=3, seed=0, augment=False, raw_uint8=False,
                   native_size=None, native=False):
    """Background (class 0, dark) with coloured rectangles (class = colour) and a void border
    (label num_classes = ignore_index, bright noise the model cannot learn)."""
    if not 2 <= num_classes <= len(_PALETTE) + 1:
        raise DatasetError(f"synthetic_seg supports 2..{len(_PALETTE) + 1} classes, got {num_classes}")
    # native_size: the frames' own size (a camera's), so tests can score at another size than the model's input
    h, w = native_size or input_size or (32, 32)
    rng = np.random.default_rng(seed + (0 if train else 10_000))
    images = rng.integers(0, 50, (n, h, w, 3)).astype(np.uint8)
    labels = np.zeros((n, h, w), np.uint8)
    for k in range(n):
        for _ in range(2):
            c = int(rng.integers(1, num_classes))
            rh, rw = int(rng.integers(h // 4, h // 2 + 1)), int(rng.integers(w // 4, w // 2 + 1))
            y, x = int(rng.integers(1, h - rh)), int(rng.integers(1, w - rw))
            images[k, y:y + rh, x:x + rw] = _PALETTE[c - 1]
            labels[k, y:y + rh, x:x + rw] = c
        # one-pixel void frame
        for sl in (np.s_[:1, :], np.s_[-1:, :], np.s_[:, :1], np.s_[:, -1:]):
            labels[k][sl] = num_classes
            images[k][sl] = rng.integers(0, 256, images[k][sl].shape)
    fp = _fingerprint_entries([("synthetic_seg", f"n={n},c={num_classes},seed={seed},train={train},{h}x{w}")])
    names = ["background"] + [f"class{c}" for c in range(1, num_classes)]
    info = DatasetInfo("segmentation", names, tuple(input_size or (h, w)), (0.5,) * 3, (0.25,) * 3, num_classes, fp,
                       "synthetic_seg")
    return ImageDataset(info, images, labels, augment=augment, raw_uint8=raw_uint8, native=native)
