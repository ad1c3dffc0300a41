"""Class balancing for segmentation losses: median-frequency weights (Eigen & Fergus 2015, as SegNet trains
CamVid). Pure numpy over pixel counts, so it is tested without data or torch.

freq(c) = pixels of class c / pixels of the images where c appears; weight(c) = median(freq) / freq(c).
Rare, thin classes (pole, sign, pedestrian, bicyclist) get weights of 5-10 on CamVid, which raises mIoU and
class-average accuracy at some cost in global pixel accuracy; `power=0.5` (the square root) halves that
trade in log space.
"""
from __future__ import annotations

import numpy as np

SCHEMES = {"none": None, "median_frequency": 1.0, "sqrt_median_frequency": 0.5}


def median_frequency_weights(pixels, image_pixels, power: float = 1.0) -> np.ndarray:
    """Per-class loss weights from `class_pixel_counts`; a class absent from the training labels gets 0."""
    pixels = np.asarray(pixels, np.float64)
    image_pixels = np.asarray(image_pixels, np.float64)
    if pixels.shape != image_pixels.shape or pixels.ndim != 1:
        raise ValueError(f"pixels and image_pixels must be equal-length vectors, got {pixels.shape} and "
                         f"{image_pixels.shape}")
    present = (pixels > 0) & (image_pixels > 0)
    if not present.any():
        raise ValueError("no class has any labelled pixel: cannot balance an empty label set")
    freq = np.where(present, pixels / np.maximum(image_pixels, 1), np.nan)
    median = np.nanmedian(freq)
    return np.where(present, (median / np.where(present, freq, 1.0)) ** float(power), 0.0)


def scheme_weights(scheme: str, pixels, image_pixels) -> np.ndarray | None:
    """The weights a recipe's `class_weights` names (None for 'none')."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown class weighting {scheme!r}; choose one of {sorted(SCHEMES)}")
    power = SCHEMES[scheme]
    return None if power is None else median_frequency_weights(pixels, image_pixels, power)
