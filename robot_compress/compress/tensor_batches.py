"""Mini-batches cut from a split held in memory on the training device (recipe `dataset.preload: true`).

A GPU trains a CIFAR ResNet faster than one CPU thread can decode, augment and collate 32x32 JPEGs item by
item, so the per-item Dataset path leaves the accelerator idle. Here every image is decoded once into a
uint8 tensor on the device; each batch is then gathered, augmented (the same pad-and-crop + horizontal flip
as `ImageDataset`, or flip only for segmentation) and normalised there.

Random draws come from a CPU generator, so a seed gives the same batches on every device.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def preload(dataset) -> tuple[np.ndarray, np.ndarray]:
    """Every item of a raw_uint8 dataset (or Subset of one) -> (N,H,W,3 uint8 images, targets array)."""
    images, targets = [], []
    for i in range(len(dataset)):
        img, target = dataset[i]
        images.append(np.asarray(img, dtype=np.uint8))
        targets.append(np.asarray(target, dtype=np.int64))
    if not images:
        raise ValueError("cannot preload an empty dataset")
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise ValueError(f"preloaded images differ in shape ({sorted(shapes)[:3]}...): set dataset.input_size")
    return np.stack(images), np.stack(targets)


class TensorBatches:
    """Iterable of (normalised float NCHW images, targets) batches, all on `device`.

    Each pass draws a new order and new augmentation from the generator seeded once at construction,
    like a DataLoader with a seeded generator. `pad_crop` pixels of zero padding (black, before
    normalisation) bound the random crop offsets for classification.
    """

    def __init__(self, images: np.ndarray, targets: np.ndarray, mean, std, batch_size: int, *, shuffle: bool,
                 augment: bool, task: str = "classification", pad_crop: int = 4, seed: int = 0,
                 device: torch.device | str = "cpu", rank: int = 0, world: int = 1):
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"images must be N x H x W x 3 uint8, got {images.dtype} {images.shape}")
        if len(images) != len(targets):
            raise ValueError(f"{len(images)} images but {len(targets)} targets")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = torch.device(device)
        self.images = torch.from_numpy(np.ascontiguousarray(images)).to(self.device).permute(0, 3, 1, 2).contiguous()
        self.targets = torch.from_numpy(np.ascontiguousarray(targets)).to(self.device)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1) * 255.0
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1) * 255.0
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.augment = augment
        self.task = task
        self.pad_crop = int(pad_crop)
        self.generator = torch.Generator().manual_seed(int(seed))
        # Under torchrun: this rank's contiguous part of every global batch (see distributed.py), `weight` its
        # share of the batch last yielded.
        self.rank, self.world, self.weight = int(rank), int(world), 1.0

    def __len__(self) -> int:
        if self.world == 1:
            return math.ceil(len(self.images) / self.batch_size)
        from robot_compress.compress.distributed import shard_bounds

        sizes = [min(self.batch_size, len(self.images) - s) for s in range(0, len(self.images), self.batch_size)]
        return sum(1 for b in sizes if len(range(*shard_bounds(b, self.rank, self.world))))

    def __iter__(self):
        from robot_compress.compress.distributed import shard_bounds

        n = len(self.images)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        for start in range(0, n, self.batch_size):
            idx = order[start:start + self.batch_size].to(self.device)
            x, y = self.images[idx], self.targets[idx]
            if self.augment:  # drawn for the whole global batch, so the generator advances alike on every rank
                x, y = self._augment(x, y)
            lo, hi = shard_bounds(len(idx), self.rank, self.world)
            if hi <= lo:
                continue
            self.weight = (hi - lo) * self.world / len(idx)
            yield (x[lo:hi].float() - self.mean) / self.std, y[lo:hi]

    def _augment(self, x: torch.Tensor, y: torch.Tensor):
        n, _, h, w = x.shape
        flip = (torch.rand(n, generator=self.generator) < 0.5).to(self.device)
        if self.task == "classification" and self.pad_crop > 0:
            p = self.pad_crop
            dy, dx = (torch.randint(0, 2 * p + 1, (2, n), generator=self.generator)).to(self.device)
            padded = F.pad(x, (p, p, p, p))  # zeros = black, as cv2.copyMakeBorder in ImageDataset
            rows = (dy[:, None] + torch.arange(h, device=self.device))[:, :, None]  # n,h,1
            cols = (dx[:, None] + torch.arange(w, device=self.device))[:, None, :]  # n,1,w
            x = padded.permute(0, 2, 3, 1)[torch.arange(n, device=self.device)[:, None, None], rows, cols]
            x = x.permute(0, 3, 1, 2)
        x = torch.where(flip.view(n, 1, 1, 1), x.flip(3), x)
        if y.ndim == 3:  # segmentation labels flip with their images
            y = torch.where(flip.view(n, 1, 1), y.flip(2), y)
        return x.contiguous(), y
