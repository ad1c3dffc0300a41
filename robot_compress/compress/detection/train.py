"""The detection loss the training loop calls: `loss_fn(dense, targets, teacher_out)` with `dense` a
`Detector`'s train-mode forward; torchvision's own losses of the detector's family, summed."""
from __future__ import annotations

from collections.abc import Callable


def detection_loss() -> Callable:
    def loss(dense, targets, teacher_out=None):
        if dense.model is None:
            raise ValueError("detection training needs a robot_compress Detector (its forward gives a Dense)")
        parts = dense.model.losses(dense, list(targets))
        return sum(parts.values())

    return loss
