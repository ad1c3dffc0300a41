"""Test-time flip augmentation for a model that runs where compute is cheap (the edge teacher)."""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn


class FlipAveraged(nn.Module):
    """The mean of a model's log-probabilities over the frame and its mirror image.

    Twice the compute for a steadier answer: on CamVid val the labels-trained LR-ASPP goes from 88.88 % / 59.21 %
    to 89.77 % / 60.86 % (pixel accuracy / mIoU) this way. The output is a log-probability, so its argmax is the
    prediction and softmax(out / T) a proper distillation target. Segmentation maps are mirrored back before
    averaging; classification logits need not be.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        plain = F.log_softmax(self.model(x), dim=1)
        mirrored = F.log_softmax(self.model(x.flip(-1)), dim=1)
        if mirrored.dim() == 4:
            mirrored = mirrored.flip(-1)
        return (plain + mirrored) / 2
