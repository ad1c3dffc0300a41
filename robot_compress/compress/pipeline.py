"""Run a recipe: stages in order on one current model, everything recorded in the output dir.

Stage checkpoints live in `<out>/checkpoints/NN_<stage>_<role>.pt`; rerunning the same recipe into the same
dir resumes each training stage from its checkpoint (finished stages train nothing). Whether the dir may be
used at all is decided before anything in it is touched (`reuse.check_output_dir`, stage fingerprints from
`fingerprint.py`). The final `metrics.json` is written only when every stage succeeded. SIGINT/SIGTERM mark
the run `interrupted` (run.json); a rerun resumes from the last finished epoch.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Subset

from robot_compress.compress import recipe as rc
from robot_compress.compress.runinfo import RunDir


class PipelineError(ValueError):
    """Bad input discovered while setting a run up (sizes, class counts, empty data, missing teacher)."""


# ---------------------------------------------------------------------------------------------- data


@dataclass
class Data:
    train: object
    val: object
    info: object
    spec: rc.DataSpec
    _raw_val: object = None
    preloaded: dict | None = None  # {"train": (images, targets), "val": (...), "augment": bool} with spec.preload

    def loaders(self, device):
        """`fit`'s loader factory over the preloaded splits (None without dataset.preload)."""
        if self.preloaded is None:
            return None
        from robot_compress.compress import distributed
        from robot_compress.compress.tensor_batches import TensorBatches

        pre, info = self.preloaded, self.info

        def make(batch_size: int, seed: int):
            common = {"mean": info.mean, "std": info.std, "batch_size": batch_size, "task": info.task,
                      "device": device, "rank": distributed.rank(), "world": distributed.world_size()}
            return (TensorBatches(*pre["train"], shuffle=True, augment=pre["augment"], seed=seed, **common),
                    TensorBatches(*pre["val"], shuffle=False, augment=False, **common))

        return make

    @property
    def at_frame_size(self) -> bool:
        """Segmentation scored at the labels' native size, as the robot's node publishes masks."""
        return self.info.task == "segmentation" and self.spec.score_at == "native"

    def raw_val(self):
        """The validation split as RGB uint8 frames (same items as `val`), for the runtime Engine: at the model
        input size, or at the camera's own size when the recipe scores at native resolution."""
        if self._raw_val is None:
            self._raw_val = _variant(self.val, raw_uint8=True)
        return self._raw_val

    def train_labels(self) -> tuple:
        """Per-class pixel counts of the (un-augmented) training labels, for class balancing."""
        from robot_compress.compress.data import class_pixel_counts

        base = self.train.dataset if isinstance(self.train, Subset) else self.train
        indices = self.train.indices if isinstance(self.train, Subset) else None
        return class_pixel_counts(base, indices)


def _variant(split, **settings):
    """The same items (a Subset's indices or a whole dataset) with other ImageDataset settings."""
    if isinstance(split, Subset):
        return Subset(split.dataset.variant(**settings), split.indices)
    return split.variant(**settings)


def _augmentation(spec: rc.DataSpec, options: dict):
    """A recipe's augmentation: `augment:` (segmentation scale/crop/flip/jitter) or the older options.augment."""
    from robot_compress.compress.data import SegAugment

    flag = bool(options.pop("augment", False))
    if spec.augment is None:
        return flag
    if flag:
        raise PipelineError("give either 'augment' or 'options.augment', not both")
    a = spec.augment
    return SegAugment(scale=tuple(a.scale), crop=tuple(a.crop) if a.crop else None, flip=a.flip,
                      color_jitter=a.color_jitter)


def _load_splits(spec: rc.DataSpec, options: dict):
    """(train, val, info): the dataset's own val split when `val_split` is set, else a carve of train."""
    from robot_compress.compress.data import load_dataset, split_train_val

    native = spec.score_at == "native"
    ds, info = load_dataset(spec.kind, spec.root, input_size=spec.input_size, train=True, **options)
    if len(ds) == 0:
        raise PipelineError(f"dataset {spec.kind!r} at {spec.root} is empty")
    if spec.val_split is None:
        train, val = split_train_val(ds, spec.val_fraction, spec.seed)
        return train, _variant(val, native=native), info
    split_opt = {"split": spec.val_split} if spec.kind in ("camvid", "voc") else {}
    val, val_info = load_dataset(spec.kind, spec.root, input_size=spec.input_size, train=False, **split_opt,
                                 **options)
    if list(val_info.labels) != list(info.labels):
        raise PipelineError(f"validation split {spec.val_split!r} has other labels than the training split")
    return ds, val.variant(native=native), info


def load_data(spec: rc.DataSpec) -> Data:
    """Train and validation splits: the dataset's own `val_split`, or a split carved from the training data.
    Only the train split is augmented."""
    from robot_compress.compress.data import split_train_val

    if spec.root is not None and not Path(spec.root).expanduser().exists():
        raise PipelineError(f"dataset root not found: {spec.root}")
    from robot_compress.compress.detection.data import DETECTION_KINDS

    if spec.kind in DETECTION_KINDS:  # boxes: compress/detection/data.py (validation carved by image)
        from robot_compress.compress.detection.data import load_detection_splits
        from robot_compress.compress.detection.stages import check_data

        check_data(spec)
        return Data(*load_detection_splits(spec), spec)
    options = dict(spec.options)
    augment = _augmentation(spec, options)
    train, val, info = _load_splits(spec, options)
    if augment:
        train = _variant(train, augment=augment)
    if spec.train_subset is not None and spec.train_subset < len(train):
        train = train_subset(train, spec.train_subset, spec.seed)
    if len(train) == 0 or len(val) == 0:
        raise PipelineError(f"dataset {spec.kind!r} leaves an empty split (train {len(train)}, val {len(val)})")
    data = Data(train, val, info, spec)
    if spec.preload:
        from robot_compress.compress.tensor_batches import preload

        if spec.val_split is not None or spec.augment is not None or spec.score_at != "input":
            raise PipelineError("dataset.preload supports carved validation splits scored at input size with "
                                "options.augment only; drop preload for val_split/score_at/augment recipes")
        ds = train.dataset if isinstance(train, Subset) else train
        raw_train = split_train_val(ds.variant(raw_uint8=True, augment=False), spec.val_fraction, spec.seed)[0]
        if spec.train_subset is not None and spec.train_subset < len(raw_train):
            raw_train = train_subset(raw_train, spec.train_subset, spec.seed)
        data.preloaded = {"train": preload(raw_train), "val": preload(data.raw_val()), "augment": augment}
    return data


def train_subset(train, n: int, seed: int):
    """A fixed random subset of n training items (same n + seed -> same items), indices sorted."""
    import numpy as np

    picked = np.random.default_rng([seed, n]).choice(len(train), size=n, replace=False)
    return Subset(train, sorted(int(i) for i in picked))


# ---------------------------------------------------------------------------------------------- models


@dataclass
class Built:
    model: nn.Module
    name: str
    cfg: dict
    checkpoint: dict = field(default_factory=dict)
    weights: str | None = None  # hash of the weights loaded from spec.checkpoint (None: built from the seed)
    init_note: str | None = None  # what init_from copied, when the builder reports it (detection)


def build_model(spec: rc.ModelSpec, info, role: str, trust: bool = False) -> Built:
    """Build (and load) a teacher/student for `info`, checking class count and input size up front.
    `trust` (the user's --trust-checkpoint) allows a checkpoint that needs more than weights_only loading."""
    from robot_compress.compress.fingerprint import weights_hash
    from robot_compress.compress.models import get_model, init_from_checkpoint, load_user_model, model_task
    from robot_compress.compress.train import load_weights, read_checkpoint

    if info.task == "detection":  # compress/detection/build.py (backbone init by key map, teacher input size)
        from robot_compress.compress.detection.build import build_detector, describe_init

        model, ckpt, report = build_detector(spec, info, role, trust)
        weights = weights_hash(model) if spec.checkpoint or spec.init_from else None
        return Built(model, spec.model, dict(spec.cfg), ckpt, weights, report and describe_init(role, report))
    num_classes = len(info.labels)
    h, w = info.input_size
    if spec.checkpoint:
        state = read_checkpoint(spec.checkpoint, trust=trust)
        if state.get("num_classes") not in (None, num_classes):
            raise PipelineError(
                f"{role} checkpoint {spec.checkpoint} has {state['num_classes']} classes but the dataset has "
                f"{num_classes}: class-count mismatch"
            )
        made = (state.get("dataset_info") or {}).get("input_size")
        if made and tuple(made) != (h, w):
            raise PipelineError(
                f"{role} checkpoint {spec.checkpoint} was trained at input size {made[0]}x{made[1]} but the "
                f"dataset gives {h}x{w}: wrong input size"
            )
    if ":" in spec.model:
        model = load_user_model(spec.model, **spec.cfg)
    else:
        if model_task(spec.model) != info.task:
            raise PipelineError(
                f"{role} model {spec.model!r} is a {model_task(spec.model)} model but the dataset is {info.task}"
            )
        model = get_model(spec.model, num_classes, **spec.cfg)
    ckpt = load_weights(model, spec.checkpoint, trust=trust) if spec.checkpoint else {}
    if spec.init_from:
        init_from_checkpoint(model, spec.init_from, spec.init_prefix, trust=trust)
    if spec.flip_average:
        from robot_compress.compress.tta import FlipAveraged

        model = FlipAveraged(model)
    weights = weights_hash(model) if spec.checkpoint or spec.init_from else None
    check_model_fits(model, info, role, spec.model)
    return Built(model, spec.model, dict(spec.cfg), ckpt, weights)


def check_model_fits(model: nn.Module, info, role: str, name: str) -> None:
    """One dummy forward at the dataset's input size: catches wrong sizes and class counts before training."""
    h, w = info.input_size
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(2, 3, h, w))
    except RuntimeError as exc:
        msg = str(exc).strip().splitlines()[0]
        raise PipelineError(
            f"{role} model {name!r} does not accept input size {h}x{w}: wrong input size ({msg})"
        ) from None
    if out.shape[1] != len(info.labels):
        raise PipelineError(
            f"{role} model {name!r} outputs {out.shape[1]} classes but the dataset has {len(info.labels)}: "
            "class-count mismatch"
        )
    if info.task == "segmentation" and tuple(out.shape[2:]) != (h, w):
        raise PipelineError(f"{role} model {name!r} returns {tuple(out.shape[2:])} logits for a {h}x{w} input")


def param_counts(model: nn.Module, input_hw=(32, 32)) -> dict:
    from robot_compress.compress.export import _param_summary, _plain_copy

    return _param_summary(_plain_copy(model), input_hw)[0]


# ---------------------------------------------------------------------------------------------- runner


@dataclass
class State:
    recipe: rc.Recipe
    out: Path
    run: RunDir
    data: Data
    device: torch.device
    student: Built
    teacher: Built | None
    log: Callable[[str], None]
    results: dict = field(default_factory=dict)
    exported: list = field(default_factory=list)
    kd_used: bool = False
    teacher_cache: nn.Module | None = None
    class_weights: dict = field(default_factory=dict)  # scheme -> per-class weights, counted once per run
    fingerprints: list = field(default_factory=list)  # one per stage (fingerprint.stage_fingerprints)
    run_fingerprint: str = ""


def prepare(recipe: rc.Recipe, out_dir: str | Path, log: Callable[[str], None] = print,
            trust_checkpoints: bool = False, data: Data | None = None) -> State:
    """Everything that can reject the input, done before the output dir is touched. `data`: splits already
    loaded for this recipe's dataset spec (a sweep loads them once for all its cells)."""
    from robot_compress.compress import fingerprint as fp
    from robot_compress.compress.train import device_label, pick_device, seed_everything

    seed_everything(recipe.seed)
    data = data if data is not None else load_data(recipe.dataset)
    if data.info.task == "detection":  # refuse unsupported stages before anything trains
        from robot_compress.compress.detection.stages import detection_stage

        for stage in recipe.stages:
            detection_stage(stage)
    teacher = build_model(recipe.teacher, data.info, "teacher", trust_checkpoints) if recipe.teacher else None
    student = build_model(recipe.student, data.info, "student", trust_checkpoints)
    for built in (teacher, student):
        if built is not None and built.init_note:
            log(built.init_note)
    dump = rc.dump_recipe(recipe)
    weights = {"teacher": teacher.weights if teacher else None, "student": student.weights}
    fingerprints = fp.stage_fingerprints(dump, data.info.fingerprint, weights)
    run_fp = fp.run_fingerprint(dump, data.info.fingerprint, weights)
    run = RunDir(out_dir, "run", dump, recipe.seed)
    run.add_seed("data_split", recipe.dataset.seed)
    run.info["dataset_fingerprint"] = data.info.fingerprint
    run.info["fingerprint"] = {"run": run_fp, "stages": fingerprints, "weights": weights}
    device = pick_device(recipe.device)
    run.info["host"]["device"] = device_label(device)
    return State(recipe, Path(out_dir), run, data, device, student, teacher, log, fingerprints=fingerprints,
                 run_fingerprint=run_fp)


# ---------------------------------------------------------------------------------------------- fit plan


@dataclass
class FitPlan:
    """One training run of `fit`: its checkpoint file, stage config (stored in the checkpoint) and fingerprint."""
    checkpoint: str
    config: dict
    fingerprint: str
    seed: int


def fit_plan(state: State, stage, index: int, role: str, fingerprint: str) -> FitPlan:
    built = _teacher(state) if role == "teacher" else state.student
    # The config dict is what checkpoints stored before fingerprints existed: keep it as it was, so their
    # settings can still be compared (train.check_resumable).
    config = {"recipe": state.recipe.name, "stage": stage.model_dump(mode="json", exclude={"epochs"}), "role": role,
              "model": built.name, "model_cfg": built.cfg, "seed": state.recipe.seed,
              "dataset_fingerprint": state.data.info.fingerprint, "epochs": stage.epochs}
    return FitPlan(f"{index:02d}_{stage.stage}_{role}.pt", config, fingerprint, state.recipe.seed + index)


def _between_steps(stage: rc.PruneStage) -> rc.FinetuneStage:
    return rc.FinetuneStage(stage="finetune", epochs=stage.epochs_between)


def fit_plans(state: State) -> list[FitPlan]:
    """Every training run the recipe makes, in order (an iterative prune stage fine-tunes between steps)."""
    from robot_compress.compress.fingerprint import substep_fingerprint

    plans = []
    for index, stage in enumerate(state.recipe.stages):
        fp = state.fingerprints[index]
        if stage.stage == "train":
            plans.append(fit_plan(state, stage, index, stage.model, fp))
        elif stage.stage in ("distill", "finetune"):
            plans.append(fit_plan(state, stage, index, "student", fp))
        elif stage.stage == "prune" and stage.steps > 1 and stage.epochs_between > 0:
            plans += [fit_plan(state, _between_steps(stage), index * 100 + step, "student",
                               substep_fingerprint(fp, step)) for step in range(stage.steps - 1)]
    return plans


# Stages that only read the trained model: `run --train-only` leaves them to a later run of the recipe.
AFTER_TRAINING = ("export", "quantize", "evaluate")


def run_recipe(recipe: rc.Recipe, out_dir: str | Path, log: Callable[[str], None] = print,
               train_only: bool = False, mode: str = "auto", trust_checkpoints: bool = False,
               data: Data | None = None) -> dict | None:
    """Run every stage; with train_only, stop before the export/quantize/evaluate stages (returns None).

    `mode` (reuse.MODES): `auto` starts fresh or resumes an earlier run of the same recipe and refuses a dir
    holding anything else; `resume` insists on an earlier run; `restart` discards it first. A refused run
    raises ResumeError before the dir is touched.

    A train-only run on a GPU machine followed by a full run of the same recipe into the same dir on the
    robot's kind of CPU trains once (the second run resumes every training stage) and exports, quantizes
    and times the models where they will run.
    """
    from robot_compress.compress import distributed
    from robot_compress.compress.reuse import check_output_dir, clear_previous_run

    state = prepare(recipe, out_dir, log, trust_checkpoints=trust_checkpoints, data=data)
    expected = {plan.checkpoint: (plan.fingerprint, plan.config) for plan in fit_plans(state)}
    outcome = check_output_dir(state.out, state.run_fingerprint, expected, mode)
    distributed.barrier()  # every rank has read the dir before rank 0 changes it
    main = distributed.is_main()
    # Past this point the dir is ours: everything that could refuse the run has been checked. Under torchrun
    # rank 0 alone writes it and logs; the other ranks train and score their parts silently.
    if main:
        state.log = _tee(log, state.out / "log.txt")
        if outcome == "restart":
            state.out.mkdir(parents=True, exist_ok=True)
            clear_previous_run(state.out, state.log)
        state.run.start()
    else:
        state.log, state.run = _silent, ReadOnlyRun.of(state.run)
    distributed.barrier()  # a restart's old checkpoints are gone before any rank looks for them
    if outcome == "resume":
        state.log(f"[{recipe.name}] resuming the earlier run in {state.out} (same recipe, data and weights)")
    if distributed.active():
        state.log(f"[{recipe.name}] data-parallel over {distributed.world_size()} ranks "
                  f"({torch.distributed.get_backend()}); rank 0 writes {state.out}")
    try:
        for index, stage in enumerate(recipe.stages):
            if stage.stage in AFTER_TRAINING and distributed.active():
                # Export, quantize and evaluate read the trained model: rank 0 does them alone, as one process.
                distributed.leave()
                if not main:
                    return None
            if train_only and stage.stage in AFTER_TRAINING:
                state.run.stop(f"stopped before stage {index + 1} ({stage.stage}): --train-only")
                state.log(f"[{recipe.name}] --train-only: stopped before stage {index + 1}/{len(recipe.stages)} "
                          f"({stage.stage}); rerun without it to finish")
                return None
            t0 = time.perf_counter()
            state.log(f"[{recipe.name}] stage {index + 1}/{len(recipe.stages)}: {stage.stage}")
            entry = stage_function(state, stage)(state, stage, index)
            seconds = time.perf_counter() - t0
            state.run.record_time(f"{index:02d}_{stage.stage}", seconds)
            state.results.setdefault("stages", []).append({"stage": stage.stage, "seconds": round(seconds, 3),
                                                            **(entry or {})})
        if distributed.active():
            distributed.leave()
            if not main:
                return None
        metrics = summarize(state)
    except KeyboardInterrupt as exc:  # SIGINT, or SIGTERM through runinfo.Interrupted
        from robot_compress.compress.runinfo import append_log, signal_name

        state.run.interrupt(signal_name(exc))
        if main:
            append_log(state.out, f"interrupted by {signal_name(exc)}: rerun the same command to resume")
        raise
    except BaseException as exc:
        from robot_compress.compress.runinfo import append_log

        state.run.fail(f"{type(exc).__name__}: {exc}")
        if main:
            append_log(state.out, f"error: {' '.join(str(exc).split()) or type(exc).__name__}")
        raise
    state.run.succeed(metrics)
    state.log(f"metrics: {headline(metrics)} -> {state.out / 'metrics.json'}")
    return metrics


def _silent(msg: str) -> None:
    """The log of ranks > 0: rank 0 reports for the run."""


class ReadOnlyRun(RunDir):
    """A rank > 0's view of the run dir: the same bookkeeping in memory, never written (rank 0 writes)."""

    @classmethod
    def of(cls, run: RunDir) -> ReadOnlyRun:
        view = cls.__new__(cls)
        view.__dict__.update(run.__dict__)
        return view

    def start(self) -> RunDir:
        return self

    def save(self):
        pass

    def fail(self, message: str):
        self.info.update(status="failed", error=message)


def headline(metrics: dict) -> str:
    m = metrics["student"]["metrics"]
    return f"{metrics['primary']}={100 * m[metrics['primary']]:.2f}%"


def _tee(log: Callable[[str], None], path: Path) -> Callable[[str], None]:
    """Log to the caller and append to the run's log.txt (which survives reruns: resume shows up there)."""
    from robot_compress.compress.runinfo import append_log

    def both(msg: str) -> None:
        log(msg)
        append_log(path.parent, msg)

    return both


def class_weights(state: State, stage):
    """The stage's segmentation class weights (None without class_weights), counted once per run and logged."""
    from robot_compress.compress.balancing import scheme_weights

    scheme = getattr(stage, "class_weights", "none")
    if scheme == "none":
        return None
    if state.data.info.task != "segmentation":
        raise PipelineError(f"class_weights {scheme!r} applies to segmentation, not {state.data.info.task}")
    if scheme not in state.class_weights:
        weights = scheme_weights(scheme, *state.data.train_labels())
        state.class_weights[scheme] = weights
        shown = ", ".join(f"{label} {w:.2f}" for label, w in zip(state.data.info.labels, weights, strict=True))
        state.log(f"class weights ({scheme}, from the training labels): {shown}")
    return state.class_weights[scheme]


def _fit(state: State, built: Built, stage, index: int, role: str, loss_fn=None, teacher=None,
         fingerprint: str | None = None) -> dict:
    from robot_compress.compress.train import fit, task_loss

    plan = fit_plan(state, stage, index, role, fingerprint or state.fingerprints[index])
    if loss_fn is None:
        loss_fn = task_loss(state.data.info, class_weights(state, stage))
    result = fit(built.model, state.data.train, state.data.val, state.data.info,
                 out_dir=state.out / "checkpoints", checkpoint_name=plan.checkpoint,
                 epochs=stage.epochs, config=plan.config, model_name=built.name, model_cfg=built.cfg, loss_fn=loss_fn,
                 optimizer=stage.optimizer, lr=stage.lr, momentum=stage.momentum, weight_decay=stage.weight_decay,
                 batch_size=stage.batch_size, scheduler=stage.scheduler, seed=plan.seed,
                 device=state.device, teacher=teacher, role=role, log=state.log,
                 loaders=state.data.loaders(state.device), precision=state.recipe.precision,
                 val_every=getattr(stage, "val_every", 1), fingerprint=plan.fingerprint)
    _save_role(state, built, role)
    steps = state.results.get("pruning_steps")
    if role == "student" and steps and "metrics" not in steps[-1]:
        # The accuracy a pruning step recovers to: the point of that step on the run's own pruning curve.
        steps[-1].update(metrics=result.metrics, params=param_counts(built.model, state.data.info.input_size))
    # Wall time of every epoch, also those trained by an earlier (interrupted) process of this run.
    train_seconds = sum(float(h.get("seconds", 0.0)) for h in result.history)
    by_device: dict[str, float] = {}
    for h in result.history:  # epochs from before devices were recorded count as "unrecorded"
        key = h.get("device", "unrecorded")
        by_device[key] = round(by_device.get(key, 0.0) + float(h.get("seconds", 0.0)), 3)
    return {"role": role, "metrics": result.metrics, "resumed_from_epoch": result.resumed_from_epoch,
            "epochs": stage.epochs, "train_seconds": round(train_seconds, 3), "train_seconds_by_device": by_device}


def _save_role(state: State, built: Built, role: str) -> Path:
    """`<out>/<role>.pt`: the current model of that role (a sweep starts its cells from these); rank 0 only."""
    from robot_compress.compress import distributed
    from robot_compress.compress.train import save_checkpoint

    if not distributed.is_main():
        return state.out / f"{role}.pt"
    return save_checkpoint(state.out / f"{role}.pt", built.model, config=state.run.info["config"],
                           model_name=built.name, model_cfg=built.cfg, info=state.data.info, role=role)


def _teacher(state: State) -> Built:
    if state.teacher is None:
        raise PipelineError("this stage needs a teacher: add a 'teacher' entry to the recipe")
    return state.teacher


def _teacher_model(state: State, stage) -> nn.Module:
    """The teacher as the training loop calls it; with cache_teacher, one logit cache shared by the run's stages."""
    from robot_compress.compress.kd import CachedTeacher

    teacher = _teacher(state).model
    if not getattr(stage, "cache_teacher", False):
        return teacher
    if state.teacher_cache is None:
        # Segmentation logits are large (C x H x W per image): half precision halves the cache's memory.
        dtype = torch.float16 if state.data.info.task == "segmentation" else torch.float32
        state.teacher_cache = CachedTeacher(teacher, dtype=dtype)
    return state.teacher_cache


def stage_train(state: State, stage: rc.TrainStage, index: int) -> dict:
    built = _teacher(state) if stage.model == "teacher" else state.student
    out = _fit(state, built, stage, index, stage.model)
    state.results[stage.model + "_trained"] = out["metrics"]
    return out


def stage_distill(state: State, stage: rc.DistillStage, index: int) -> dict:
    from robot_compress.compress.train import distill_loss

    state.kd_used = True
    loss = distill_loss(state.data.info, stage.temperature, stage.alpha, class_weights(state, stage))
    out = _fit(state, state.student, stage, index, "student", loss_fn=loss, teacher=_teacher_model(state, stage))
    state.results["student_distilled"] = out["metrics"]
    return out


def stage_finetune(state: State, stage: rc.FinetuneStage, index: int) -> dict:
    from robot_compress.compress.train import distill_loss

    teacher, loss = None, None
    if stage.kd:
        teacher = _teacher_model(state, stage)
        loss = distill_loss(state.data.info, stage.temperature, stage.alpha, class_weights(state, stage))
    out = _fit(state, state.student, stage, index, "student", loss_fn=loss, teacher=teacher)
    state.results["student_finetuned"] = out["metrics"]
    return out


def _score_before_pruning(state: State) -> None:
    """The student's validation metrics before its first (unstructured or structured) pruning stage."""
    from robot_compress.compress.evaluate import evaluate_torch

    if "student_before_pruning" not in state.results:
        state.results["student_before_pruning"] = evaluate_torch(state.student.model, state.data.val,
                                                                 state.data.info, device=state.device, log=state.log)


def stage_prune(state: State, stage: rc.PruneStage, index: int) -> dict:
    from robot_compress.compress.distributed import check_same_on_all_ranks
    from robot_compress.compress.evaluate import evaluate_torch
    from robot_compress.compress.fingerprint import substep_fingerprint
    from robot_compress.compress.pruning import iterative_schedule, prune_model

    model = state.student.model
    _score_before_pruning(state)
    targets = list(iterative_schedule(stage.amount, stage.steps)) if stage.steps > 1 else [stage.amount]
    report = {}
    for step, amount in enumerate(targets):
        report = prune_model(model, stage.criterion, float(amount), state.recipe.seed,
                             ignored_layers=stage.ignored_layers, max_layer_sparsity=stage.max_layer_sparsity,
                             warn=lambda msg: state.log(f"warning: {msg}"))
        check_same_on_all_ranks(model, f"prune step {step + 1} ({stage.criterion} {amount:g})")
        if step < len(targets) - 1 and stage.epochs_between > 0:
            _fit(state, state.student, _between_steps(stage), index * 100 + step, "student",
                 fingerprint=substep_fingerprint(state.fingerprints[index], step))
    # The paper's no-retrain curve: the accuracy right after pruning, before any fine-tuning recovers it.
    after = evaluate_torch(model, state.data.val, state.data.info, device=state.device, log=state.log)
    state.results["pruning"] = {"criterion": stage.criterion, "amount": stage.amount, "steps": stage.steps,
                                "after_pruning": after, "report": _jsonable(report)}
    state.results.setdefault("pruning_steps", []).append({"criterion": stage.criterion, "amount": stage.amount,
                                                          "after_pruning": after})
    _save_role(state, state.student, "student")
    return {"criterion": stage.criterion, "amount": stage.amount, "after_pruning": after}


def stage_structured(state: State, stage: rc.StructuredStage, index: int) -> dict:
    from robot_compress.compress.distributed import check_same_on_all_ranks
    from robot_compress.compress.pruning import is_pruned, make_permanent
    from robot_compress.compress.structured import structured_prune

    _score_before_pruning(state)
    model = state.student.model.cpu().eval()
    if is_pruned(model):
        make_permanent(model)
    h, w = state.data.info.input_size
    report = structured_prune(model, torch.zeros(1, 3, h, w), stage.ratio, ignored_layers=stage.ignored_layers or None,
                              round_to=stage.round_to)
    check_same_on_all_ranks(model, f"structured pruning (ratio {stage.ratio:g})")
    model.to(state.device)
    state.results["structured"] = {"ratio": stage.ratio, "round_to": stage.round_to, "report": _jsonable(report)}
    return {"ratio": stage.ratio}


def stage_export(state: State, stage: rc.ExportStage, index: int) -> dict:
    from robot_compress.compress.export import export_onnx

    model_id = stage.model_id or state.recipe.name
    res = export_onnx(state.student.model, state.out / f"{model_id}.onnx", state.data.info, model_id=model_id,
                      recipe=state.recipe.name, opset=stage.opset, atol=stage.atol, seed=state.recipe.seed,
                      input_size=stage.input_size, logits_size=stage.logits_size)
    state.student.model.to(state.device)
    state.exported.append({"kind": "fp32", "path": res.path.name, "max_abs_diff": res.max_abs_diff,
                           "params": res.params, "sparsity": float(res.metadata["sparsity"])})
    if stage.fp16_weights:
        _export_fp16_weights(state, res, stage)
    return {"path": res.path.name, "max_abs_diff": res.max_abs_diff}


def _verify_fp16(state: State, stage: rc.ExportStage, dst) -> tuple[float, dict]:
    """Max |torch - ONNX| of a classification/segmentation fp16 file (its logits), and no per-output detail."""
    from robot_compress.compress.export import verify_onnx

    model = state.student.model
    if stage.logits_size:  # compare like for like with the graph's logits (export_onnx set this on its copy)
        model.logits_size = tuple(stage.logits_size)
    try:
        return verify_onnx(model, dst, stage.input_size or state.data.info.input_size, seed=state.recipe.seed), {}
    finally:
        if stage.logits_size:
            model.logits_size = None


def _export_fp16_weights(state: State, res, stage: rc.ExportStage, verify=_verify_fp16) -> None:
    """`<id>_fp16.onnx` beside the float32 export, with its own card; the evaluate stage scores both.
    `verify(state, stage, dst)` -> (max |torch - ONNX|, per-output detail): the task's own comparison."""
    import json

    from robot_compress.compress.fp16 import store_weights_fp16
    from robot_compress.compress.runinfo import write_json_atomic

    model_id = res.path.stem + "_fp16"
    dst = store_weights_fp16(res.path, res.path.with_name(model_id + ".onnx"), model_id=model_id)
    diff, detail = verify(state, stage, dst)
    state.student.model.to(state.device)
    card = json.loads(res.card_json.read_text(encoding="utf-8"))
    card.update(model_id=model_id, file=dst.name, weights_storage="float16 (computed in float32)",
                export_check={"max_abs_diff_vs_torch": diff}, metrics={})
    write_json_atomic(dst.with_suffix(".json"), card)
    from robot_compress.compress.export import update_card_metrics

    update_card_metrics(dst, {})  # renders the markdown card from the JSON
    entry = {"kind": "fp16_weights", "path": dst.name, "max_abs_diff": diff, "params": res.params,
             "sparsity": float(res.metadata["sparsity"])}
    if detail:
        entry["max_abs_diff_detail"] = detail
    state.exported.append(entry)


def stage_quantize(state: State, stage: rc.QuantizeStage, index: int) -> dict:

    from robot_compress.compress.quantize import calibration_arrays, max_abs_diff, quantize_onnx, write_quantized_card

    fp32 = [e for e in state.exported if e["kind"] == "fp32"]
    if not fp32:
        raise PipelineError("the quantize stage needs an export stage before it")
    src = state.out / fp32[-1]["path"]
    arrays = calibration_arrays(state.data.train, stage.calibration_samples, state.recipe.seed)
    dst = src.with_name(src.stem + "_int8.onnx")
    quantize_onnx(src, dst, arrays, per_channel=stage.per_channel, float_first_last=stage.float_first_last)
    diff = max_abs_diff(dst, arrays, reference=state.student.model)
    state.student.model.to(state.device)
    write_quantized_card(dst, src, diff, reference="the torch model")
    state.exported.append({"kind": "int8", "path": dst.name, "params": fp32[-1]["params"],
                           "sparsity": fp32[-1]["sparsity"], "max_abs_diff": diff})
    return {"path": dst.name, "max_abs_diff": diff}


def _score_onnx(state: State, path, stage: rc.EvaluateStage) -> dict:
    """A classification/segmentation ONNX file through the Engine on the raw val split, plus its latency."""
    from robot_compress.compress.evaluate import engine_latency, evaluate_onnx

    m = evaluate_onnx(path, state.data.raw_val(), at_frame_size=state.data.at_frame_size, log=state.log)
    if stage.latency_runs:
        m.update(engine_latency(path, state.data.raw_val()[0][0], stage.latency_runs))
    return m


def stage_evaluate(state: State, stage: rc.EvaluateStage, index: int, score_onnx=_score_onnx,
                   agreement=None) -> dict:
    """The torch student (and teacher) on val, then every exported file through `score_onnx(state, path, stage)`
    and its `agreement(torch_metrics, onnx_metrics)` in points: the task's own scoring (detection passes its)."""
    from robot_compress.compress.evaluate import evaluate_torch
    from robot_compress.compress.export import update_card_metrics

    if agreement is None:
        from robot_compress.compress.evaluate import agreement
    info = state.data.info
    torch_metrics = evaluate_torch(state.student.model, state.data.val, info, stage.batch_size, state.device,
                                   log=state.log)
    state.results["student_final"] = torch_metrics
    state.results["skip_teacher"] = not stage.teacher
    if state.teacher is not None and stage.teacher:
        state.results["teacher_final"] = evaluate_torch(state.teacher.model, state.data.val, info,
                                                        stage.batch_size, state.device, log=state.log)
    if stage.onnx:
        for entry in state.exported:
            m = score_onnx(state, state.out / entry["path"], stage)
            entry["metrics"] = m
            entry["agreement_pts"] = agreement(torch_metrics, m)
            if entry["kind"] == "fp32" or (state.out / entry["path"]).with_suffix(".json").is_file():
                update_card_metrics(state.out / entry["path"], _scalars(m))
    return {"metrics": torch_metrics}


STAGES = {"train": stage_train, "distill": stage_distill, "prune": stage_prune, "finetune": stage_finetune,
          "structured": stage_structured, "export": stage_export, "quantize": stage_quantize,
          "evaluate": stage_evaluate}


def stage_function(state: State, stage) -> Callable:
    """The function running `stage`: detection replaces some stages and refuses others
    (compress/detection/stages.py), every other task runs STAGES."""
    if state.data.info.task == "detection":
        from robot_compress.compress.detection.stages import detection_stage

        replaced = detection_stage(stage)
        if replaced is not None:
            return replaced
    return STAGES[stage.stage]


# ---------------------------------------------------------------------------------------------- summary


def _scalars(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}


def _jsonable(obj):
    import json

    return json.loads(json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def _validation_protocol(data: Data) -> dict:
    """Which data the reported numbers come from, and at what resolution they were scored."""
    spec = data.spec
    if data.info.task == "detection":  # carved by image, no seed (detection/data.carve_every)
        from robot_compress.compress.detection.data import val_every

        k = val_every(spec.val_fraction)
        split = f"every {k}th image of the dataset's sorted list, from the first (val_fraction {spec.val_fraction:g})"
        return {"split": split, "val_split": None, "score_at": "frame"}
    if spec.val_split is not None:
        split = f"the dataset's own '{spec.val_split}' split"
    else:
        split = f"{spec.val_fraction:g} of the training split carved with seed {spec.seed}"
    out = {"split": split, "val_split": spec.val_split, "score_at": spec.score_at}
    if data.at_frame_size:
        label_hw = tuple(data.raw_val()[0][1].shape)
        out["scored_at"] = list(label_hw)
    return out


def summarize(state: State) -> dict:
    """The run's metrics.json body: what report.py reads (never typed numbers)."""
    from robot_compress.compress.evaluate import evaluate_torch

    info, res = state.data.info, state.results
    final = res.get("student_final") or evaluate_torch(state.student.model, state.data.val, info,
                                                       device=state.device)
    teacher = None
    if state.teacher is not None and not res.get("skip_teacher"):
        t_metrics = res.get("teacher_final") or evaluate_torch(state.teacher.model, state.data.val, info,
                                                               device=state.device)
        teacher = {"model": state.teacher.name, "metrics": t_metrics,
                   "params": param_counts(state.teacher.model, info.input_size)}
    return {
        "name": state.recipe.name,
        "task": info.task,
        "tags": state.recipe.tags,
        "primary": final["primary"],
        "dataset": {"kind": state.recipe.dataset.kind, "fingerprint": info.fingerprint,
                    "input_size": list(info.input_size), "n_train": len(state.data.train),
                    "n_val": len(state.data.val), "labels": list(info.labels),
                    "validation": _validation_protocol(state.data)},
        "teacher": teacher,
        "student": {"model": state.student.name, "kd": bool(state.recipe.tags.get("kd", state.kd_used)),
                    "metrics": final,
                    "before_pruning": res.get("student_before_pruning"),
                    "params": param_counts(state.student.model, info.input_size)},
        "pruning": res.get("pruning"),
        "pruning_steps": res.get("pruning_steps"),  # one per prune stage, with the metrics after its fine-tune
        "structured": res.get("structured"),
        "onnx": state.exported,
        "stages": res.get("stages", []),
    }
