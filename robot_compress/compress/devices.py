"""Where and how the toolkit runs: seeding, the device, and the data loader (one per rank under torchrun).

Shared by training (train.py) and evaluation (evaluate.py), which otherwise import each other.
"""
from __future__ import annotations

import random

import numpy as np
import torch
from torch.utils.data import DataLoader


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def pick_device(preference: str = "auto") -> torch.device:
    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' requested but CUDA is not available")
        return torch.device("cuda")
    return torch.device("cpu")


def device_label(device) -> str:
    """'cpu', or 'cuda:<GPU name>': recorded per epoch, so a run trained partly on a lent GPU says so."""
    device = torch.device(device)
    return f"cuda:{torch.cuda.get_device_name(device)}" if device.type == "cuda" else device.type


def make_loader(dataset, batch_size: int, shuffle: bool, seed: int = 0):
    """A DataLoader; under torchrun, this rank's parts of the same global batches (distributed.ShardedLoader)."""
    from robot_compress.compress import distributed

    # num_workers=0: deterministic, and the workstation's cores are better spent in the model.
    gen = torch.Generator().manual_seed(seed)
    if distributed.active():
        return distributed.ShardedLoader(dataset, batch_size, shuffle, gen, distributed.rank(),
                                         distributed.world_size(), collate_fn=_collate_fn(dataset))
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=gen, num_workers=0,
                      drop_last=False, collate_fn=_collate_fn(dataset))


def _collate_fn(dataset):
    """A dataset's own `collate_fn` (detection: images stacked, box targets kept per image), else the default."""
    while hasattr(dataset, "indices") and hasattr(dataset, "dataset"):  # Subset
        dataset = dataset.dataset
    return getattr(dataset, "collate_fn", None)
