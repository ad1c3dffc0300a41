"""Model outputs -> results: top-k labels for classification, class-id masks for segmentation.

Pure numpy; shared by the local Engine and the edge client so both sources give identical results
for identical logits.
"""
from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def top_k(logits: np.ndarray, labels, k: int = 5) -> list[tuple[str, float]]:
    """Top-k (label, probability) from one logit vector, highest first; ties keep the lower class id."""
    vec = np.asarray(logits, dtype=np.float64).reshape(-1)
    if vec.size != len(labels):
        raise ValueError(f"got {vec.size} logits for {len(labels)} labels")
    probs = softmax(vec)
    k = max(1, min(int(k), vec.size))
    order = np.argsort(-probs, kind="stable")[:k]
    return [(labels[i], float(probs[i])) for i in order]


def argmax_mask(logits: np.ndarray) -> np.ndarray:
    """[C, H, W] (or [1, C, H, W]) logits -> [H, W] uint8 class ids; ties keep the lower class id.

    A running maximum over the class planes instead of `logits.argmax(axis=0)`: numpy's argmax reduces along
    the strided class axis one pixel at a time, about 2x slower on the shipped CamVid student's 11 x 360x480
    logits (2.8 ms vs 1.35 ms, idle 2-core machine), and this runs on every frame the robot sees.
    """
    arr = np.asarray(logits)
    if arr.ndim == 4:
        if arr.shape[0] != 1:
            raise ValueError(f"expected batch 1 segmentation logits, got shape {arr.shape}")
        arr = arr[0]
    if arr.ndim != 3:
        raise ValueError(f"segmentation logits must be [C, H, W], got shape {arr.shape}")
    if arr.shape[0] > 256:
        raise ValueError(f"{arr.shape[0]} classes do not fit a uint8 mask")
    best = arr[0].copy()
    mask = np.zeros(best.shape, np.uint8)
    higher = np.empty(best.shape, bool)
    for c in range(1, arr.shape[0]):
        np.greater(arr[c], best, out=higher)
        np.maximum(best, arr[c], out=best)
        np.putmask(mask, higher, c)
    return mask


def resize_mask(mask: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a class-id mask to (height, width); class ids never blend."""
    h, w = out_hw
    if mask.shape == (h, w):
        return mask
    import cv2

    return cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)


def is_integer_enlargement(small_hw, large_hw) -> bool:
    """Whether `resize_mask` from small_hw to large_hw repeats each pixel a whole number of times per axis."""
    (h, w), (big_h, big_w) = small_hw[:2], large_hw[:2]
    return h > 0 and w > 0 and big_h % h == 0 and big_w % w == 0


def class_fractions(mask: np.ndarray, labels) -> dict[str, float]:
    """Fraction of pixels per class label (sums to 1 over labels present in the mask)."""
    n = len(labels)
    if mask.dtype == np.uint8 and mask.ndim == 2 and n <= 256:
        import cv2

        # calcHist counts uint8 pixels without np.bincount's int64 copy of the mask (~0.1 vs 0.45 ms at 360x480)
        counts = cv2.calcHist([np.ascontiguousarray(mask)], [0], None, [n], [0, n]).ravel()
    else:
        counts = np.bincount(mask.ravel(), minlength=n)[:n]
    total = max(int(mask.size), 1)
    return {label: float(c) / total for label, c in zip(labels, counts, strict=True)}


def palette(num_classes: int) -> np.ndarray:
    """A fixed, distinct RGB colour per class id (PASCAL VOC bit-interleaving scheme)."""
    pal = np.zeros((max(num_classes, 1), 3), np.uint8)
    for cid in range(num_classes):
        c, r, g, b = cid, 0, 0, 0
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        pal[cid] = (r, g, b)
    return pal


def overlay(rgb: np.ndarray, mask: np.ndarray, num_classes: int, alpha: float = 0.5) -> np.ndarray:
    """Blend the colourised mask over the RGB image (both at the same resolution)."""
    colours = palette(num_classes)[np.minimum(mask, num_classes - 1)]
    blended = rgb.astype(np.float32) * (1.0 - alpha) + colours.astype(np.float32) * alpha
    return blended.round().astype(np.uint8)
