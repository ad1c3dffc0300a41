"""Fingerprints of everything that determines a run and each of its stages (pure functions of the recipe).

Inputs shared by every stage: the dataset spec without its root path (the data's own fingerprint stands for
the files, so a moved dataset is the same data), the dataset fingerprint, the recipe's seed and precision, and
for the teacher and the student their model, builder options and a hash of the weights they start from.

- Stage i: those inputs plus stages 0..i as resolved, stage i's own `epochs` left out (more epochs continue the
  same training; an earlier stage's epochs do change what stage i starts from).
- Run: those inputs plus the whole recipe (name, tags and every stage) except the output dir, the device (train
  on a GPU, finish on the robot's CPU) and the training stages' epochs.
"""
from __future__ import annotations

import hashlib
import json

TRAINING_STAGES = ("train", "distill", "finetune")
# Recipe keys that do not change what a run computes or reports.
_NOT_FINGERPRINTED = ("output_dir", "device")


def digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


def weights_hash(model) -> str:
    """sha256 of a model's state dict (names, dtypes, shapes, bytes): the weights it starts from, independent of
    the file that held them (a checkpoint saved again with other metadata hashes the same)."""
    import torch

    h = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        t = value.detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _inputs(recipe: dict, dataset_fingerprint: str, weights: dict) -> dict:
    models = {}
    for role in ("teacher", "student"):
        spec = recipe.get(role)
        models[role] = None if spec is None else {"model": spec["model"], "cfg": spec.get("cfg") or {},
                                                  "weights": weights.get(role)}
        if spec and spec.get("flip_average"):  # only when set: older runs keep their fingerprints
            models[role]["flip_average"] = True
    dataset = {k: v for k, v in recipe["dataset"].items() if k != "root"}
    return {"dataset": dataset, "dataset_fingerprint": dataset_fingerprint, "seed": recipe.get("seed"),
            "precision": recipe.get("precision"), **models}


def _without_epochs(stage: dict) -> dict:
    return {k: v for k, v in stage.items() if k != "epochs"} if stage["stage"] in TRAINING_STAGES else stage


def stage_fingerprints(recipe: dict, dataset_fingerprint: str, weights: dict) -> list[str]:
    """One fingerprint per stage of a recipe dump (`recipe.dump_recipe`); `weights` = {role: weights_hash or
    None for a model built from its seed}."""
    inputs = _inputs(recipe, dataset_fingerprint, weights)
    stages = recipe["stages"]
    return [digest({"inputs": inputs, "stages": [*stages[:i], _without_epochs(stage)]})
            for i, stage in enumerate(stages)]


def run_fingerprint(recipe: dict, dataset_fingerprint: str, weights: dict) -> str:
    rest = {k: v for k, v in recipe.items()
            if k not in (*_NOT_FINGERPRINTED, "dataset", "teacher", "student", "stages")}
    return digest({"inputs": _inputs(recipe, dataset_fingerprint, weights), "recipe": rest,
                   "stages": [_without_epochs(s) for s in recipe["stages"]]})


def substep_fingerprint(stage_fingerprint: str, step: int) -> str:
    """The fine-tuning between the steps of an iterative prune stage."""
    return digest({"stage": stage_fingerprint, "step": int(step)})
