"""Recipes: a whole compression pipeline as validated YAML.

Every model is `extra="forbid"`, so a misspelt key is an error that names it
(`stages.2.prune.amont: Extra inputs are not permitted`). Stages run in order on one
"current" model (the student once a student exists); see `pipeline.run_recipe`.

    name: tiny_synthetic_kd_classblind
    seed: 0
    dataset: {kind: synthetic_cls, input_size: [32, 32], val_fraction: 0.25}
    teacher: {model: tiny_cnn, cfg: {width: 16}}
    student: {model: tiny_cnn, cfg: {width: 8}}
    stages:
      - {stage: train, model: teacher, epochs: 2}
      - {stage: distill, epochs: 2, temperature: 4.0, alpha: 0.9}
      - {stage: prune, criterion: class-blind, amount: 0.5}
      - {stage: finetune, epochs: 1}
      - {stage: export}
      - {stage: evaluate}

Relative paths in a recipe file (output_dir, dataset.root, teacher/student checkpoint) are relative to the
recipe file's directory, so a recipe means the same files from any working directory; `load_recipe` rewrites
them relative to the working directory. `--set KEY=VALUE` overrides (`apply_overrides`) address keys by dotted
path with 0-based list indices (`stages.2.amount=0.9`); their values are YAML and their paths are taken as
given on the command line (relative to the working directory).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

CRITERIA = ("random", "class-uniform", "class-blind")


class RecipeError(ValueError):
    """A recipe that cannot be read or validated; the message names the bad key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSpec(_Strict):
    model: str = Field(description="registry name (robot_compress.compress.models) or 'pkg.mod:Callable'")
    checkpoint: str | None = Field(None, description="weights to start from (our checkpoint or a plain state dict)")
    cfg: dict[str, Any] = Field(default_factory=dict, description="extra builder keyword arguments")
    init_from: str | None = Field(None, description="another model's checkpoint to copy matching tensors from "
                                  "(those under init_prefix, same name and shape), e.g. a trained backbone")
    init_prefix: str = Field("", description="with init_from: copy only tensors whose names start with this")
    flip_average: bool = Field(False, description="average the log-probabilities over the frame and its mirror "
                               "image (test-time flip: an edge teacher's extra accuracy for twice the compute)")

    @model_validator(mode="after")
    def _one_start(self):
        if self.init_from and self.checkpoint:
            raise ValueError("give checkpoint (all weights) or init_from (some of them), not both")
        return self


class AugmentSpec(_Strict):
    """Random augmentation of segmentation training items (the validation split is never augmented)."""
    flip: bool = Field(True, description="horizontal flip with probability 0.5")
    scale: tuple[float, float] = Field((1.0, 1.0), description="random rescale range around input_size")
    crop: tuple[int, int] | None = Field(None, description="random crop [height, width] after rescaling (padded "
                                         "with void); None = input_size")
    color_jitter: float = Field(0.0, ge=0.0, lt=1.0, description="brightness/contrast/saturation strength")

    @model_validator(mode="after")
    def _ranges(self):
        lo, hi = self.scale
        if not 0 < lo <= hi:
            raise ValueError(f"scale must be [low, high] with 0 < low <= high, got {list(self.scale)}")
        if self.crop is not None and min(self.crop) < 1:
            raise ValueError(f"crop must be two positive ints [height, width], got {list(self.crop)}")
        return self


# Datasets whose training items are neighbouring video frames: a carved validation split is a near copy of the
# training data, so they must validate on their own held-out split.
OWN_VAL_SPLIT_REQUIRED = {"camvid": "val"}


class DataSpec(_Strict):
    kind: str
    root: str | None = None
    input_size: tuple[int, int] | None = None
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0, description="carve this fraction of the training split for "
                                "validation (unless val_split names the dataset's own split)")
    val_split: str | None = Field(None, description="validate on the dataset's own split of this name (CamVid: "
                                  "val) instead of carving one from the training data")
    score_at: Literal["input", "native"] = Field("input", description="segmentation: score masks at the model "
                                                  "input size, or at the labels' native size as the robot's "
                                                  "node publishes them (the frame resized in, the mask resized "
                                                  "back)")
    augment: AugmentSpec | None = Field(None, description="segmentation training augmentation (scale, crop, "
                                        "flip, colour jitter)")
    seed: int = 0
    options: dict[str, Any] = Field(default_factory=dict, description="extra load_dataset keyword arguments")
    train_subset: int | None = Field(None, ge=1, description="train on a fixed random subset of this many training "
                                                               "items (validation split unchanged)")
    preload: bool = Field(False, description="decode both splits once into memory on the training device and "
                          "augment batches there (small images on a GPU: per-item decoding would starve it)")

    @field_validator("input_size")
    @classmethod
    def _positive(cls, v):
        if v is not None and (v[0] <= 0 or v[1] <= 0):
            raise ValueError(f"input_size must be two positive ints [height, width], got {list(v)}")
        return v

    @model_validator(mode="after")
    def _validation_protocol(self):
        if self.val_split is not None and "val_fraction" in self.model_fields_set:
            raise ValueError(f"give either val_split ({self.val_split!r}) or val_fraction, not both")
        required = OWN_VAL_SPLIT_REQUIRED.get(self.kind)
        if required is not None and (self.val_split != required or self.score_at != "native"):
            raise ValueError(f"{self.kind} must be validated on its own '{required}' split at native resolution "
                             f"(val_split: {required}, score_at: native): its training frames are neighbouring "
                             f"video frames, so a split carved from them is a near copy of the training data")
        return self


class _TrainingStage(_Strict):
    epochs: int = Field(1, ge=1)
    lr: float = Field(0.05, gt=0)
    batch_size: int = Field(32, ge=1)
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    scheduler: Literal["cosine", "poly", "none"] = Field("cosine", description="per-epoch learning rate: "
                                                         "cosine, poly (power 0.9, as DeepLab) or constant")
    class_weights: Literal["none", "median_frequency", "sqrt_median_frequency"] = Field(
        "none", description="segmentation: weight the cross-entropy by median-frequency balancing (SegNet) over "
        "the training labels, or by its square root (milder: keeps more global pixel accuracy)")
    val_every: int = Field(1, ge=1, description="score the validation split every n epochs (and after the last)")


class TrainStage(_TrainingStage):
    stage: Literal["train"]
    model: Literal["teacher", "student"] = "student"


class DistillStage(_TrainingStage):
    stage: Literal["distill"]
    temperature: float = Field(4.0, gt=0)
    alpha: float = Field(0.9, ge=0, le=1)
    cache_teacher: bool = Field(False, description="remember teacher logits per input (pays off without augmentation)")


class PruneStage(_Strict):
    stage: Literal["prune"]
    criterion: Literal["random", "class-uniform", "class-blind"]
    amount: float = Field(ge=0.0, lt=1.0, description="final fraction of prunable weights set to zero, in [0, 1)")
    steps: int = Field(1, ge=1, description="1 = one-shot; n > 1 = iterative schedule (prune, fine-tune, repeat)")
    epochs_between: int = Field(1, ge=0, description="fine-tuning epochs between iterative steps")
    ignored_layers: list[str] = Field(default_factory=list, description="conv/linear module names (or fnmatch "
                                      "patterns such as 'layer1.*') left whole and outside the pruned fraction")
    max_layer_sparsity: float | None = Field(None, gt=0.0, le=1.0, description="no layer loses more than this "
                                             "fraction of its weights (global criteria take the rest elsewhere)")


class FinetuneStage(_TrainingStage):
    stage: Literal["finetune"]
    lr: float = Field(0.01, gt=0)
    kd: bool = Field(False, description="keep distilling from the teacher while fine-tuning")
    temperature: float = Field(4.0, gt=0)
    alpha: float = Field(0.9, ge=0, le=1)
    cache_teacher: bool = Field(False, description="remember teacher logits per input (pays off without augmentation)")


class StructuredStage(_Strict):
    stage: Literal["structured"]
    ratio: float = Field(ge=0.0, lt=1.0, description="channel pruning ratio for torch-pruning")
    ignored_layers: list[str] = Field(default_factory=list)
    round_to: int | None = Field(None, ge=1, description="keep channel counts at multiples of this: onnxruntime's "
                                 "CPU conv kernels work in blocks of 8/16 channels, so odd widths run slower")


class ExportStage(_Strict):
    stage: Literal["export"]
    opset: int = Field(17, ge=17)
    atol: float = Field(1e-3, gt=0)
    model_id: str | None = None
    fp16_weights: bool = Field(False, description="store the weights as float16 (half the file; computed in float32 "
                               "after a Cast, so onnxruntime's CPU kernels still apply): for an edge teacher that "
                               "must fit the repository's size budget")
    input_size: tuple[int, int] | None = Field(None, description="segmentation: export at this [height, width] "
                                               "instead of the dataset's (fully convolutional models run at any "
                                               "size; the robot resizes each frame to it)")
    logits_size: tuple[int, int] | None = Field(None, description="segmentation (torchvision models): the exported "
                                                "logits' [height, width] (default: the input size); the robot "
                                                "takes the argmax there and enlarges the mask to the frame")

    @field_validator("input_size", "logits_size")
    @classmethod
    def _positive_size(cls, v):
        if v is not None and min(v) < 1:
            raise ValueError(f"must be [height, width] of positive ints, got {list(v)}")
        return v


class QuantizeStage(_Strict):
    stage: Literal["quantize"]
    calibration_samples: int = Field(32, ge=1, description="training items, drawn at random over the whole split")
    per_channel: bool = True
    float_first_last: bool = Field(True, description="keep the first and last conv/linear layer in float")


class EvaluateStage(_Strict):
    stage: Literal["evaluate"]
    onnx: bool = Field(True, description="also score the exported ONNX model(s) through the runtime Engine")
    batch_size: int = Field(64, ge=1)
    teacher: bool = Field(True, description="also score the teacher (off: metrics.json carries no teacher entry)")
    latency_runs: int = Field(50, ge=0, description="timed single-frame Engine runs (1 thread) per ONNX model; 0 = off")


Stage = Annotated[
    TrainStage | DistillStage | PruneStage | FinetuneStage | StructuredStage | ExportStage | QuantizeStage
    | EvaluateStage,
    Field(discriminator="stage"),
]


class Recipe(_Strict):
    name: str
    seed: int = 0
    output_dir: str | None = Field(None, description="default output dir (relative to the recipe file; `run --out` "
                                   "overrides it)")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["fp32", "bf16"] = Field("fp32", description="bf16 = training under bf16 autocast on a CUDA "
                                               "device (tensor cores; a CPU trains fp32); evaluation and export "
                                               "stay fp32")
    tags: dict[str, Any] = Field(default_factory=dict, description="free labels copied into metrics.json")
    dataset: DataSpec
    teacher: ModelSpec | None = None
    student: ModelSpec
    stages: list[Stage] = Field(min_length=1)

    def stage_names(self) -> list[str]:
        return [s.stage for s in self.stages]


def parse_recipe(data: Any, source: str = "recipe") -> Recipe:
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: a recipe must be a mapping of keys, got {type(data).__name__}")
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        raise RecipeError(f"{source}: {format_validation_error(exc)}") from None
    needs_teacher = any(s.stage == "distill" or (s.stage == "finetune" and s.kd) for s in recipe.stages) or any(
        s.stage == "train" and s.model == "teacher" for s in recipe.stages
    )
    if needs_teacher and recipe.teacher is None:
        raise RecipeError(f"{source}: stages {recipe.stage_names()} need a 'teacher' entry")
    return recipe


def load_recipe(path: str | Path, overrides: Sequence[str] = ()) -> Recipe:
    """Read, resolve (paths relative to the recipe file), override (`--set`) and validate a recipe file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path}: not valid YAML: {exc}") from None
    if isinstance(data, dict):
        data = resolve_paths(data, path.parent)
        data = apply_overrides(data, overrides, source=str(path))
    return parse_recipe(data, source=str(path))


# (section, key) of every path a recipe holds; section None = top level.
PATH_KEYS = ((None, "output_dir"), ("dataset", "root"), ("teacher", "checkpoint"), ("student", "checkpoint"),
             ("teacher", "init_from"), ("student", "init_from"))


def _relative_to_cwd(value: str, base: Path) -> str:
    path = Path(value).expanduser()
    if path.is_absolute():
        return str(path)
    joined = base / path
    try:
        return os.path.relpath(joined)  # lexical: config/recipes/../../runs/x -> runs/x from the repository root
    except ValueError:  # another drive (Windows)
        return str(joined.absolute())


def resolve_paths(data: dict, base: str | Path) -> dict:
    """A copy of a raw recipe mapping with its relative paths taken relative to `base` (the recipe file's
    directory) and rewritten relative to the working directory."""
    import copy

    data = copy.deepcopy(data)
    base = Path(base)
    for section, key in PATH_KEYS:
        holder = data if section is None else data.get(section)
        if isinstance(holder, dict) and isinstance(holder.get(key), str) and holder[key]:
            holder[key] = _relative_to_cwd(holder[key], base)
    return data


def apply_overrides(data: dict, overrides: Sequence[str], source: str = "recipe") -> dict:
    """A copy of a raw recipe mapping with `KEY=VALUE` overrides applied (dotted keys, 0-based list indices,
    YAML values: `stages.2.amount=0.9`, `dataset.train_subset=100`, `teacher.cfg={width: 16}`)."""
    import copy

    import yaml

    data = copy.deepcopy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise RecipeError(f"--set {item!r}: expected KEY=VALUE, e.g. stages.2.amount=0.9")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise RecipeError(f"--set {key}: value {raw!r} is not valid YAML ({exc})") from None
        parts = key.split(".")
        node = data
        for depth, part in enumerate(parts[:-1]):
            node = _child(node, part, ".".join(parts[:depth + 1]), source)
        _assign(node, parts[-1], value, key, source)
    return data


def _index(node: list, part: str, where: str, source: str) -> int:
    if not part.lstrip("-").isdigit() or not -len(node) <= int(part) < len(node):
        raise RecipeError(f"{source}: --set {where}: no item {part!r} in a list of {len(node)} (indices start at 0)")
    return int(part)


def _child(node, part: str, where: str, source: str):
    if isinstance(node, list):
        return node[_index(node, part, where, source)]
    if not isinstance(node, dict):
        raise RecipeError(f"{source}: --set {where}: {type(node).__name__} value has no key {part!r}")
    if node.get(part) is None:
        node[part] = {}
    return node[part]


def _assign(node, part: str, value, key: str, source: str) -> None:
    if isinstance(node, list):
        node[_index(node, part, key, source)] = value
    elif isinstance(node, dict):
        node[part] = value
    else:
        raise RecipeError(f"{source}: --set {key}: {type(node).__name__} value has no key {part!r}")


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem, each naming the key path (stage lists show the stage kind)."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown key '{loc}'")
        else:
            parts.append(f"'{loc}': {err['msg']}")
    return "; ".join(parts)


def dump_recipe(recipe: Recipe) -> dict:
    return recipe.model_dump(mode="json")
