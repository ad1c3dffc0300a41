"""Knowledge distillation losses (Hinton et al.) and an optional teacher-logit cache."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def _check(student_logits, teacher_logits):
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student and teacher logits differ in shape: {tuple(student_logits.shape)} vs "
                         f"{tuple(teacher_logits.shape)} (teacher/student class counts must match)")


def kd_loss(student_logits, teacher_logits, targets, temperature: float = 4.0, alpha: float = 0.9):
    """alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) (batchmean) + (1 - alpha) * CE(s, targets)."""
    _check(student_logits, teacher_logits)
    t = temperature
    soft = F.kl_div(F.log_softmax(student_logits / t, dim=1), F.log_softmax(teacher_logits.detach() / t, dim=1),
                    reduction="batchmean", log_target=True)
    loss = alpha * t * t * soft
    if alpha < 1.0:
        loss = loss + (1.0 - alpha) * F.cross_entropy(student_logits, targets)
    return loss


def pixel_kd_loss(student_logits, teacher_logits, targets, temperature: float = 1.0, alpha: float = 0.5,
                  ignore_index: int | None = None, class_weights: torch.Tensor | None = None):
    """Per-pixel KL over classes ([N, C, H, W]) averaged over non-void pixels, times alpha * T^2,
    plus (1 - alpha) * CE over non-void pixels (weighted by `class_weights` of each pixel's label, if given)."""
    _check(student_logits, teacher_logits)
    t = temperature
    valid = torch.ones_like(targets, dtype=torch.bool) if ignore_index is None else targets != ignore_index
    # Void pixels are replaced by zeros *before* any arithmetic: a nan/inf logit there must reach neither the
    # loss nor, through softmax's backward, the gradient (masking after the fact still yields nan * 0 = nan).
    keep = valid.unsqueeze(1)
    student = torch.where(keep, student_logits, torch.zeros((), dtype=student_logits.dtype,
                                                            device=student_logits.device))
    teacher = torch.where(keep, teacher_logits.detach(), torch.zeros((), dtype=teacher_logits.dtype,
                                                                     device=teacher_logits.device))
    kl = F.kl_div(F.log_softmax(student / t, dim=1), F.log_softmax(teacher / t, dim=1),
                  reduction="none", log_target=True).sum(dim=1)  # [N, H, W]
    n_valid = valid.sum()
    soft = torch.where(valid, kl, torch.zeros_like(kl)).sum() / n_valid.clamp(min=1)
    loss = alpha * t * t * soft
    if alpha < 1.0:
        safe_targets = torch.where(valid, targets, torch.zeros_like(targets))
        ce = F.cross_entropy(student, safe_targets, reduction="none")
        norm = n_valid.clamp(min=1).to(ce.dtype)
        if class_weights is not None:  # normalised by the summed weights, as nn.CrossEntropyLoss(weight=...) does
            w = torch.where(valid, class_weights[safe_targets], torch.zeros_like(ce))
            ce, norm = ce * w, w.sum().clamp(min=1e-12)
        ce = torch.where(valid, ce, torch.zeros_like(ce)).sum() / norm
        loss = loss + (1.0 - alpha) * ce
    return loss


class TeacherLogitCache:
    """Teacher logits keyed by dataset index, so a frozen teacher runs once per item.

    Only valid when the teacher sees the same input every epoch (no random augmentation).
    `key` identifies teacher + data (e.g. checkpoint hash + dataset fingerprint); loading a file
    written under another key raises instead of silently reusing stale logits.
    Stored as float16 by default. Files: `.pt` (torch.save) or `.npz` (numpy).
    """

    def __init__(self, key: str = "", dtype=torch.float16):
        self.key = key
        self.dtype = dtype
        self._store: dict[int, torch.Tensor] = {}

    def __len__(self):
        return len(self._store)

    def __contains__(self, index) -> bool:
        return int(index) in self._store

    def get(self, indices):
        """Stacked float32 logits for these indices, or None if any is missing."""
        idx = [int(i) for i in indices]
        if not all(i in self._store for i in idx):
            return None
        return torch.stack([self._store[i] for i in idx]).float()

    def put(self, indices, logits) -> None:
        for i, row in zip(indices, logits.detach().cpu().to(self.dtype), strict=True):
            self._store[int(i)] = row.clone()

    def save(self, path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        idx = sorted(self._store)
        logits = torch.stack([self._store[i] for i in idx]) if idx else torch.zeros(0)
        if path.suffix == ".npz":
            np.savez(path, key=np.array(self.key), indices=np.array(idx, dtype=np.int64), logits=logits.numpy())
        elif path.suffix == ".pt":
            torch.save({"key": self.key, "indices": torch.tensor(idx, dtype=torch.long), "logits": logits}, path)
        else:
            raise ValueError(f"teacher logit cache file must end in .pt or .npz, got {path.name}")
        return path

    @classmethod
    def load(cls, path, key: str = "", dtype=torch.float16) -> TeacherLogitCache:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"teacher logit cache {path} does not exist")
        if path.suffix == ".npz":
            with np.load(path) as data:
                stored_key, indices = str(data["key"]), data["indices"].tolist()
                logits = torch.from_numpy(data["logits"])
        elif path.suffix == ".pt":
            data = torch.load(path, map_location="cpu", weights_only=True)
            stored_key, indices, logits = data["key"], data["indices"].tolist(), data["logits"]
        else:
            raise ValueError(f"teacher logit cache file must end in .pt or .npz, got {path.name}")
        if stored_key != key:
            raise ValueError(f"teacher logit cache {path} was written for {stored_key!r}, not {key!r}; delete it "
                             f"or point to another file")
        cache = cls(key, dtype)
        cache.put(indices, logits)
        return cache


class CachedTeacher(torch.nn.Module):
    """A frozen teacher that remembers its logits per input (keyed by a hash of the exact input tensor).

    Without random augmentation every epoch feeds the same tensors, so the teacher runs once per item
    instead of once per epoch (on a CPU the teacher's forward costs as much as the student's training
    step). With augmentation the keys simply miss and the teacher runs as usual: never stale, only slower.
    """

    def __init__(self, teacher: torch.nn.Module, dtype=torch.float32):
        super().__init__()
        self.teacher = teacher
        self.dtype = dtype
        self._store: dict[bytes, torch.Tensor] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self):
        return len(self._store)

    @staticmethod
    def _key(x: torch.Tensor) -> bytes:
        import hashlib

        return hashlib.blake2b(x.detach().cpu().contiguous().numpy().tobytes(), digest_size=16).digest()

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        keys = [self._key(x) for x in images]
        missing = [i for i, k in enumerate(keys) if k not in self._store]
        if missing:
            self.teacher.eval()
            out = self.teacher(images[missing])
            for i, row in zip(missing, out.detach().cpu().to(self.dtype), strict=True):
                self._store[keys[i]] = row.clone()
        self.misses += len(missing)
        self.hits += len(keys) - len(missing)
        return torch.stack([self._store[k] for k in keys]).float().to(images.device)
