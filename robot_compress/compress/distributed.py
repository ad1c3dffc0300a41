"""Data-parallel training on PyTorch's own engine: torchrun starts the processes, torch.distributed joins them.

Under `torchrun --nproc_per_node N` (WORLD_SIZE > 1 in the environment) every rank runs the same recipe: the
model is wrapped in DistributedDataParallel (gradients all-reduced), each rank trains on its part of every
global batch and scores its part of the validation split, and the meters (counts, confusion matrices) are
all-reduced (detection AP: the per-image predictions are gathered), so metrics cover the whole split. Only rank
0 writes files.

The global batches are the single-process ones: the loader draws the same permutation from the same shuffle
generator on every rank (so the generator state in a checkpoint is the same at any world size, and a run
resumes at another world size), and each rank takes a contiguous part of each batch. Each rank's loss is
weighted by its share of the batch, so the all-reduced gradient is the gradient of the global-batch mean.
With BatchNorm, batch statistics are per rank (as in plain DDP on CPU; SyncBatchNorm needs a GPU).
"""
from __future__ import annotations

import contextlib
import hashlib
import os
from datetime import timedelta

import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, Sampler, SequentialSampler

TIMEOUT_ENV = "ROBOT_COMPRESS_DIST_TIMEOUT_S"
BACKEND_ENV = "ROBOT_COMPRESS_DIST_BACKEND"  # e.g. gloo for a CPU recipe on a GPU machine


class DistributedError(RuntimeError):
    """The ranks disagree (e.g. different pruning masks) or the process group cannot be used."""


# ---------------------------------------------------------------------------------------------- group


def _dist():
    import torch.distributed as dist

    return dist if dist.is_available() else None


def active() -> bool:
    """True inside a process group of more than one rank."""
    dist = _dist()
    return bool(dist and dist.is_initialized() and dist.get_world_size() > 1)


def rank() -> int:
    return _dist().get_rank() if active() else 0


def world_size() -> int:
    return _dist().get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def requested() -> bool:
    """torchrun (or `run --nproc`) started this process as one of several ranks."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device: str = "auto") -> bool:
    """Join the process group torchrun describes in the environment: nccl with CUDA, gloo on CPU. The
    timeout bounds how long a rank waits for a peer that died (torchrun also stops the survivors)."""
    dist = _dist()
    if not requested() or dist is None or dist.is_initialized():
        return active()
    backend = os.environ.get(BACKEND_ENV) or ("nccl" if device != "cpu" and torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    timeout = timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, "600")))
    dist.init_process_group(backend, timeout=timeout)
    return active()


def leave() -> None:
    """Every rank has finished its collectives: wait for the others, then close the group."""
    dist = _dist()
    if dist and dist.is_initialized():
        if dist.get_world_size() > 1:
            dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    if active():
        _dist().barrier()


def _comm_device() -> torch.device:
    # gloo reduces CPU tensors, nccl CUDA tensors
    return torch.device("cuda") if _dist().get_backend() == "nccl" else torch.device("cpu")


def sum_tensor(t: torch.Tensor) -> torch.Tensor:
    """Sum of `t` over all ranks (a copy; `t` itself is untouched); `t` unchanged outside a group."""
    if not active():
        return t
    buf = t.detach().to(_comm_device()).clone()
    _dist().all_reduce(buf)
    return buf.to(t.device)


def sum_numbers(*values):
    """(a, b, ...) summed over all ranks, as float64 (exact for counts below 2**53)."""
    if not active():
        return values
    out = sum_tensor(torch.tensor([float(v) for v in values], dtype=torch.float64))
    return tuple(out.tolist())


def reduce_meter(meter) -> None:
    """All-reduce a runtime.metrics meter in place: confusion matrix, or top-1/top-5/item counts."""
    if not active():
        return
    if hasattr(meter, "cm"):
        import numpy as np

        meter.cm = sum_tensor(torch.from_numpy(np.ascontiguousarray(meter.cm))).numpy()
    else:
        n, top1, top5 = sum_numbers(meter.n, meter.top1, meter.top5)
        meter.n, meter.top1, meter.top5 = int(n), int(top1), int(top5)


def gather_objects(obj) -> list:
    """[rank 0's obj, rank 1's, ...] on every rank (pickled: for results that do not sum, e.g. detections);
    [obj] outside a group."""
    if not active():
        return [obj]
    out: list = [None] * world_size()
    _dist().all_gather_object(out, obj)
    return out


def state_digest(model: torch.nn.Module) -> str:
    """Hash of every parameter and buffer (pruning masks included), names in order."""
    h = hashlib.blake2b(digest_size=16)
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def check_same_on_all_ranks(model: torch.nn.Module, what: str) -> None:
    """Raise DistributedError unless every rank holds the same weights and masks (after pruning, which each
    rank does on its own with the same seed: deterministic, and verified here instead of assumed)."""
    if not active():
        return
    digests = gather_objects(state_digest(model))
    if len(set(digests)) != 1:
        raise DistributedError(f"{what}: the ranks hold different weights or masks ({sorted(set(digests))}); "
                               "pruning must be deterministic for a given seed")


def decorrelate_rng(seed: int, epoch: int) -> None:
    """Ranks > 0 draw augmentation and dropout from streams of their own (rank 0 keeps the single-process
    stream, which checkpoints store); otherwise every rank would flip and crop its items alike."""
    if active() and rank() > 0:
        import random

        import numpy as np

        mixed = int.from_bytes(hashlib.blake2b(f"{seed}/{epoch}/{rank()}".encode(), digest_size=4).digest(), "big")
        random.seed(mixed)
        np.random.seed(mixed)
        torch.manual_seed(mixed)


# ---------------------------------------------------------------------------------------------- model


def wrap(model: torch.nn.Module, device) -> torch.nn.Module:
    """DistributedDataParallel around `model` in a group (it broadcasts rank 0's weights and buffers first);
    the model itself otherwise. Checkpoints keep saving `model`, so their keys never gain `module.`."""
    if not active():
        return model
    from torch.nn.parallel import DistributedDataParallel

    device = torch.device(device)
    ids = [torch.cuda.current_device()] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def sync_buffers(model: torch.nn.Module) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every rank. DDP broadcasts them at the start of each
    forward, so after the last step each rank holds the statistics of its own part of the last batch: scored
    so, the ranks' parts of the split would come from slightly different models, none of them the one rank 0
    saves."""
    if not active():
        return
    dev = _comm_device()
    for buf in getattr(model, "module", model).buffers():
        t = buf.detach().to(dev)  # the buffer itself when it already lives on the backend's device
        _dist().broadcast(t, src=0)
        if t.data_ptr() != buf.data_ptr():
            buf.detach().copy_(t)


def uneven_batches(model: torch.nn.Module):
    """DDP's join context: a rank whose part of the last global batch is empty (fewer items than ranks)
    has one step less; the others' all-reduces then count it as zero gradient."""
    join = getattr(model, "join", None)
    return join() if active() and join is not None else contextlib.nullcontext()


# ---------------------------------------------------------------------------------------------- data


def shard_bounds(n: int, rank_: int, world: int) -> tuple[int, int]:
    """[lo, hi) of rank's contiguous part of n items (sizes differ by at most one, as numpy.array_split)."""
    base, extra = divmod(n, world)
    lo = rank_ * base + min(rank_, extra)
    return lo, lo + base + (1 if rank_ < extra else 0)


class ShardedBatchSampler(Sampler):
    """This rank's part of each single-process batch. `weight` is the loss weight of the batch last yielded:
    local items * world / global items, so that DDP's gradient average equals the global-batch mean."""

    def __init__(self, batches: BatchSampler, rank_: int, world: int):
        self.batches = batches
        self.rank = rank_
        self.world = world
        self.weight = 1.0

    def __iter__(self):
        for batch in self.batches:
            lo, hi = shard_bounds(len(batch), self.rank, self.world)
            if hi > lo:
                self.weight = (hi - lo) * self.world / len(batch)
                yield batch[lo:hi]

    def __len__(self) -> int:
        n, b = len(self.batches.sampler), self.batches.batch_size
        full, last = divmod(n, b)
        return full + (1 if last and shard_bounds(last, self.rank, self.world)[1] >
                       shard_bounds(last, self.rank, self.world)[0] else 0)


class ShardedLoader:
    """A DataLoader over this rank's parts of the global batches, with the shuffle `generator` of the
    single-process loader (so checkpoints store the same loader state) and the current batch's `weight`."""

    def __init__(self, dataset, batch_size: int, shuffle: bool, generator: torch.Generator, rank_: int, world: int,
                 collate_fn=None):
        base = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
        self.batch_sampler = ShardedBatchSampler(BatchSampler(base, batch_size, drop_last=False), rank_, world)
        self.generator = generator
        # collate_fn: the dataset's own (detection keeps box targets per image), as the 1-process loader's
        self.loader = DataLoader(dataset, batch_sampler=self.batch_sampler, generator=generator, num_workers=0,
                                 collate_fn=collate_fn)

    def __iter__(self):
        return iter(self.loader)

    def __len__(self) -> int:
        return len(self.batch_sampler)

    @property
    def weight(self) -> float:
        return self.batch_sampler.weight
