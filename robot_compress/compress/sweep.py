"""Grid over pruning criteria x amounts x KD on/off, as in the paper's pruning figures.

The base recipe is split at its first prune stage. The part before it (teacher, distillation or plain
student training) runs once per KD setting into `<out>/base-kd` / `<out>/base-nokd`; KD off replaces each
distill stage by plain training of the student with the same optimiser settings. Every cell then starts
from that base's `student.pt` and runs the rest (prune with the cell's criterion and amount, fine-tune,
export, evaluate) into `<out>/<kd|nokd>/<criterion>/<amount>`. A cell or base whose metrics.json exists is
skipped when its run fingerprint matches (same recipe, data and starting weights), so rerunning an interrupted
sweep finishes only what is missing; a finished dir made by anything else stops the sweep untouched unless
`mode="restart"` (which reruns every dir).

A recipe with nothing before its prune stage sweeps from its student checkpoint as given (e.g. a student
already distilled by another recipe, when distilling again would cost hours): the base only scores that
checkpoint, and KD on/off changes nothing but the cells' fine-tuning.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from robot_compress.compress import recipe as rc
from robot_compress.compress.runinfo import is_finished, read_json
from robot_compress.compress.train import RESTART_HINT, ResumeError


class SweepError(ValueError):
    pass


def split_at_prune(recipe: rc.Recipe) -> tuple[list, list]:
    names = recipe.stage_names()
    if "prune" not in names:
        raise SweepError(f"recipe {recipe.name!r} has no prune stage to sweep over (stages: {names})")
    cut = names.index("prune")
    return list(recipe.stages[:cut]), list(recipe.stages[cut:])


def base_recipe(recipe: rc.Recipe, kd: bool) -> rc.Recipe:
    prefix, _ = split_at_prune(recipe)
    stages = []
    for stage in prefix:
        if stage.stage == "distill" and not kd:
            fields = stage.model_dump(include=set(rc.TrainStage.model_fields) - {"stage", "model"})
            stage = rc.TrainStage(stage="train", model="student", **fields)
        stages.append(stage)
    given_student = not prefix and recipe.student is not None and recipe.student.checkpoint
    if kd and not given_student and not any(s.stage == "distill" for s in stages):
        raise SweepError(f"KD on needs a distill stage before the prune stage in recipe {recipe.name!r} "
                         "(or no stage before it and a student checkpoint to start from)")
    stages.append(rc.EvaluateStage(stage="evaluate", onnx=False))
    return recipe.model_copy(update={"name": f"{recipe.name}-base-{'kd' if kd else 'nokd'}", "stages": stages,
                                     "tags": {**recipe.tags, "kd": kd}})


def cell_recipe(recipe: rc.Recipe, base_dir: Path, kd: bool, criterion: str, amount: float) -> rc.Recipe:
    _, suffix = split_at_prune(recipe)
    stages = []
    for stage in suffix:
        if stage.stage == "prune":
            stage = stage.model_copy(update={"criterion": criterion, "amount": amount})
        if stage.stage == "finetune" and stage.kd and not kd:  # a "KD off" cell must not distil either
            stage = stage.model_copy(update={"kd": False})
        stages.append(stage)
    student_ckpt = base_dir / "student.pt"
    student = recipe.student.model_copy(update={"checkpoint": str(student_ckpt)}) if student_ckpt.is_file() \
        else recipe.student
    teacher = recipe.teacher
    if teacher is not None and (base_dir / "teacher.pt").is_file():
        teacher = teacher.model_copy(update={"checkpoint": str(base_dir / "teacher.pt")})
    needs_teacher = any(s.stage == "finetune" and s.kd for s in stages)
    # Keep the teacher when there is one so each cell's metrics.json carries the teacher's accuracy too.
    return recipe.model_copy(update={
        "name": f"{recipe.name}-{'kd' if kd else 'nokd'}-{criterion}-{amount:g}",
        "student": student,
        "teacher": teacher if (needs_teacher or teacher is not None) else None,
        "stages": stages,
        "tags": {**recipe.tags, "kd": kd, "sweep": recipe.name},
    })


def cell_dir(out: Path, kd: bool, criterion: str, amount: float) -> Path:
    return out / ("kd" if kd else "nokd") / criterion / f"{amount:g}"


def _reuse_finished(recipe: rc.Recipe, run_dir: Path, data, trust: bool, log: Callable[[str], None]) -> bool:
    """True when `run_dir` holds a finished run of exactly this recipe (skip it); False when it must run; a
    finished run of anything else raises ResumeError (nothing in it is touched)."""
    from robot_compress.compress.pipeline import prepare
    from robot_compress.compress.reuse import stored_run_fingerprint

    if not is_finished(run_dir):
        return False
    stored = stored_run_fingerprint(run_dir)
    if stored is None:
        log(f"warning: skip finished {run_dir}: it predates run fingerprints, so its inputs cannot be checked")
        return True
    if stored != prepare(recipe, run_dir, log, trust_checkpoints=trust, data=data).run_fingerprint:
        raise ResumeError(f"{run_dir} holds a finished run of a different configuration; nothing in it was "
                          f"changed; {RESTART_HINT}")
    log(f"skip finished {run_dir}")
    return True


def check_grid(recipe: rc.Recipe, out: Path, criteria, amounts, mode: str) -> None:
    """Refuse a grid the recipe cannot sweep before anything runs (either executor)."""
    split_at_prune(recipe)
    bad = [c for c in criteria if c not in rc.CRITERIA]
    if bad:
        raise SweepError(f"unknown pruning criteria {bad}; choose from {list(rc.CRITERIA)}")
    for a in amounts:
        if not 0.0 <= float(a) < 1.0:
            raise SweepError(f"pruning amount must be in [0, 1), got {a}")
    if mode == "resume" and not out.is_dir():
        raise ResumeError(f"--resume: {out} holds no earlier sweep to resume")


def run_or_skip(cell: rc.Recipe, run_dir: Path, data, mode: str, trust: bool, log: Callable[[str], None]) -> dict:
    """One base or cell: skipped when finished with the same fingerprint, else run (resuming its checkpoints);
    returns its metrics.json. The sequential loop and the Ray tasks both run cells through this."""
    from robot_compress.compress.pipeline import run_recipe

    cell_mode = "restart" if mode == "restart" else "auto"  # --resume: each dir resumes or starts fresh
    if mode == "restart" or not _reuse_finished(cell, run_dir, data, trust, log):
        run_recipe(cell, run_dir, log=log, mode=cell_mode, trust_checkpoints=trust, data=data)
    return read_json(run_dir / "metrics.json")


def base_dir_of(out: Path, kd: bool) -> Path:
    return out / f"base-{'kd' if kd else 'nokd'}"


def run_sweep(recipe: rc.Recipe, out_dir: str | Path, criteria, amounts, kd_modes=(True, False),
              log: Callable[[str], None] = print, mode: str = "auto", trust_checkpoints: bool = False) -> list[dict]:
    from robot_compress.compress.pipeline import load_data

    out = Path(out_dir)
    check_grid(recipe, out, criteria, amounts, mode)
    data = load_data(recipe.dataset)  # once for the base and every cell: they share the dataset spec
    results = []
    for kd in kd_modes:
        base_dir = base_dir_of(out, kd)
        run_or_skip(base_recipe(recipe, kd), base_dir, data, mode, trust_checkpoints, log)
        for criterion in criteria:
            for amount in amounts:
                cdir = cell_dir(out, kd, criterion, float(amount))
                results.append(run_or_skip(cell_recipe(recipe, base_dir, kd, criterion, float(amount)), cdir,
                                           data, mode, trust_checkpoints, log))
    return results
