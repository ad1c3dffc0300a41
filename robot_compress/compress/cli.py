"""`robot-compress` toolkit subcommands (dispatched from robot_compress.cli).

Single-step commands are one-stage recipes run by the same pipeline as `run`, so every output dir has
the same bookkeeping (run.json, recipe.yaml, metrics.json on success only). Bad input ends with one
line on stderr and exit code 2; nothing is written as a result. SIGINT/SIGTERM end a command with one line,
run.json status `interrupted` and exit code 130/143; rerunning the same command resumes.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
from pathlib import Path

from robot_compress.compress import recipe as rc

EXIT_BAD_INPUT = 2


class UsageError(ValueError):
    """Bad command-line input (named in the message)."""


# ---------------------------------------------------------------------------------------------- arguments


def _amount(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"pruning amount must be a number in [0, 1), got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"pruning amount must be in [0, 1), got {value}")
    return value


def _json_obj(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (the usage block is one `--help` away)."""

    def error(self, message):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser(command: str, description: str) -> argparse.ArgumentParser:
    return _Parser(prog=f"robot-compress {command}", description=description)


def _add_data(p: argparse.ArgumentParser, required: bool = True):
    g = p.add_argument_group("data")
    g.add_argument("--dataset", required=required,
                   help="dataset kind: cifar10 | fashion_mnist | camvid | voc | coco | synthetic_cls | synthetic_seg")
    g.add_argument("--data-root", help="local dataset path (dir or zip); none for synthetic kinds")
    g.add_argument("--input-size", nargs=2, type=_positive_int, metavar=("H", "W"), help="model input height width")
    g.add_argument("--val-fraction", type=float, default=None, help="held-out validation fraction (default 0.1)")
    g.add_argument("--split-seed", type=int, default=None, help="seed of the train/val split")
    g.add_argument("--data-options", type=_json_obj, default=None, help="extra dataset options as JSON")


def _add_training(p: argparse.ArgumentParser, lr: float = 0.05):
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=_positive_int, default=1)
    g.add_argument("--lr", type=float, default=lr)
    g.add_argument("--batch-size", type=_positive_int, default=32)
    g.add_argument("--optimizer", choices=("sgd", "adam", "adamw"), default="sgd")
    g.add_argument("--weight-decay", type=float, default=5e-4)


def _add_trust(p: argparse.ArgumentParser):
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="load checkpoints that need full unpickling (pickled classes or functions, which can run "
                        "code); without it only weights are loaded. Only for files you trust")


def _add_run_control(p: argparse.ArgumentParser):
    """--resume / --restart (default: start fresh, or resume an earlier run of the same configuration)."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--resume", action="store_true",
                   help="continue the earlier run in --out (an error if there is none or it was made differently)")
    g.add_argument("--restart", action="store_true",
                   help="discard the earlier run in --out (checkpoints, models, metrics) and start over")
    _add_trust(p)


def _mode(args) -> str:
    return "resume" if getattr(args, "resume", False) else "restart" if getattr(args, "restart", False) else "auto"


def _add_common(p: argparse.ArgumentParser):
    p.add_argument("--out", required=True, help="output dir (checkpoints, run.json, metrics.json)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    _add_run_control(p)


def _data_spec(args, fallback: dict | None = None) -> dict:
    spec = dict(fallback or {})
    if args.dataset:
        spec = {"kind": args.dataset} if spec.get("kind") != args.dataset else spec
    for key, val in (("root", args.data_root), ("val_fraction", args.val_fraction), ("seed", args.split_seed),
                     ("options", args.data_options)):
        if val is not None:
            spec[key] = val
    if args.input_size:
        spec["input_size"] = list(args.input_size)
    if "kind" not in spec:
        raise UsageError("no dataset given: pass --dataset (the checkpoint records none)")
    return spec


def _training(args) -> dict:
    return {"epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size, "optimizer": args.optimizer,
            "weight_decay": args.weight_decay}


def _from_checkpoint(path: str, model: str | None, trust: bool = False) -> tuple[dict, dict | None]:
    """(ModelSpec dict, dataset spec recorded in the checkpoint) for commands that start from a checkpoint."""
    from robot_compress.compress.train import is_own_checkpoint, read_checkpoint

    state = read_checkpoint(path, trust=trust)
    if is_own_checkpoint(state):
        cfg = state.get("config") or {}
        spec = {"model": model or state["model_name"], "checkpoint": str(path), "cfg": state.get("model_cfg") or {}}
        return spec, cfg.get("dataset") if isinstance(cfg.get("dataset"), dict) else None
    if not model:
        raise UsageError(f"{path} is a plain state dict: name its architecture with --model")
    return {"model": model, "checkpoint": str(path)}, None


# ---------------------------------------------------------------------------------------------- commands


def _run_stages(name: str, args, student: dict, data: dict, stages: list, teacher: dict | None = None) -> int:
    from robot_compress.compress.pipeline import run_recipe

    recipe = rc.parse_recipe({"name": name, "seed": args.seed, "device": args.device, "dataset": data,
                              "teacher": teacher, "student": student, "stages": stages},
                             source=f"robot-compress {name}")
    run_recipe(recipe, args.out, log=_log, mode=_mode(args), trust_checkpoints=args.trust_checkpoint)
    return 0


def cmd_train(argv):
    p = _parser("train", "Train a teacher or student from scratch (or from --checkpoint).")
    p.add_argument("--model", required=True, help="registry name or 'pkg.module:Callable'")
    p.add_argument("--model-cfg", type=_json_obj, default={}, help="builder options as JSON")
    p.add_argument("--checkpoint", help="initial weights")
    _add_data(p)
    _add_training(p)
    _add_common(p)
    args = p.parse_args(argv)
    student = {"model": args.model, "cfg": args.model_cfg, "checkpoint": args.checkpoint}
    return _run_stages("train", args, student, _data_spec(args), [{"stage": "train", **_training(args)}])


def cmd_distill(argv):
    p = _parser("distill", "Knowledge-distil a student from a trained teacher (Hinton KD / pixel-wise KD).")
    p.add_argument("--teacher", help="teacher architecture (default: recorded in its checkpoint)")
    p.add_argument("--teacher-checkpoint", required=True)
    p.add_argument("--student", required=True, help="student architecture")
    p.add_argument("--student-cfg", type=_json_obj, default={})
    p.add_argument("--temperature", type=float, default=4.0)
    p.add_argument("--alpha", type=float, default=0.9, help="weight of the soft (teacher) term, in [0, 1]")
    _add_data(p, required=False)
    _add_training(p)
    _add_common(p)
    args = p.parse_args(argv)
    teacher, recorded = _from_checkpoint(args.teacher_checkpoint, args.teacher, args.trust_checkpoint)
    stage = {"stage": "distill", "temperature": args.temperature, "alpha": args.alpha, **_training(args)}
    return _run_stages("distill", args, {"model": args.student, "cfg": args.student_cfg},
                       _data_spec(args, recorded), [stage], teacher=teacher)


def cmd_prune(argv):
    p = _parser("prune", "Unstructured pruning (random | class-uniform | class-blind) or structured channel "
                         "pruning of a checkpoint; masks are kept in the saved student.pt.")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--model", help="architecture (default: recorded in the checkpoint)")
    p.add_argument("--criterion", required=True, choices=rc.CRITERIA + ("structured",))
    p.add_argument("--amount", required=True, type=_amount, help="fraction to prune, in [0, 1)")
    p.add_argument("--steps", type=_positive_int, default=1, help="iterative steps (1 = one-shot)")
    p.add_argument("--epochs-between", type=int, default=1, help="fine-tune epochs between iterative steps")
    p.add_argument("--ignored-layers", nargs="+", default=[], metavar="NAME",
                   help="layers (module names or fnmatch patterns) kept whole")
    p.add_argument("--max-layer-sparsity", type=float, default=None, metavar="F",
                   help="unstructured: no layer loses more than this fraction, in (0, 1]")
    _add_data(p, required=False)
    _add_common(p)
    args = p.parse_args(argv)
    student, recorded = _from_checkpoint(args.checkpoint, args.model, args.trust_checkpoint)
    if args.criterion == "structured":
        if args.max_layer_sparsity is not None:
            raise UsageError("--max-layer-sparsity applies to unstructured criteria, not structured")
        stage = {"stage": "structured", "ratio": args.amount, "ignored_layers": args.ignored_layers}
    else:
        stage = {"stage": "prune", "criterion": args.criterion, "amount": args.amount, "steps": args.steps,
                 "epochs_between": args.epochs_between, "ignored_layers": args.ignored_layers,
                 "max_layer_sparsity": args.max_layer_sparsity}
    stages = [stage, {"stage": "evaluate", "onnx": False}]
    return _run_stages("prune", args, student, _data_spec(args, recorded), stages)


def cmd_finetune(argv):
    p = _parser("finetune", "Fine-tune a (pruned) checkpoint; pruning masks stay in place.")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--model", help="architecture (default: recorded in the checkpoint)")
    p.add_argument("--teacher-checkpoint", help="keep distilling from this teacher while fine-tuning")
    p.add_argument("--temperature", type=float, default=4.0)
    p.add_argument("--alpha", type=float, default=0.9)
    _add_data(p, required=False)
    _add_training(p, lr=0.01)
    _add_common(p)
    args = p.parse_args(argv)
    student, recorded = _from_checkpoint(args.checkpoint, args.model, args.trust_checkpoint)
    teacher = (_from_checkpoint(args.teacher_checkpoint, None, args.trust_checkpoint)[0] if args.teacher_checkpoint
               else None)
    stage = {"stage": "finetune", "kd": teacher is not None, "temperature": args.temperature, "alpha": args.alpha,
             **_training(args)}
    return _run_stages("finetune", args, student, _data_spec(args, recorded), [stage], teacher=teacher)


def cmd_evaluate(argv):
    p = _parser("evaluate", "Top-1/top-5 or pixel accuracy + mIoU of a checkpoint (torch) or an ONNX model "
                            "(through the runtime Engine) on the validation split.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint")
    src.add_argument("--onnx")
    p.add_argument("--model", help="architecture for a plain state dict")
    _add_data(p, required=False)
    _add_common(p)
    args = p.parse_args(argv)
    if args.checkpoint:
        student, recorded = _from_checkpoint(args.checkpoint, args.model, args.trust_checkpoint)
        return _run_stages("evaluate", args, student, _data_spec(args, recorded),
                           [{"stage": "evaluate", "onnx": False}])
    return _evaluate_onnx_file(args)


def _evaluate_onnx_file(args) -> int:
    from robot_compress.compress.evaluate import evaluate_onnx
    from robot_compress.compress.fingerprint import digest
    from robot_compress.compress.pipeline import load_data
    from robot_compress.compress.reuse import check_output_dir
    from robot_compress.compress.runinfo import RunDir, append_log, signal_name
    from robot_compress.runtime.engine import read_metadata

    meta = read_metadata(args.onnx)
    spec = _data_spec(args)
    if spec.get("input_size") and tuple(spec["input_size"]) != tuple(meta.input_size):
        raise UsageError(f"--input-size {spec['input_size']} disagrees with the model's input_size "
                         f"{list(meta.input_size)}: wrong input size")
    spec["input_size"] = list(meta.input_size)
    data = load_data(rc.DataSpec.model_validate(spec))
    if len(data.info.labels) != meta.num_classes:
        raise UsageError(f"{args.onnx} has {meta.num_classes} classes but the dataset has "
                         f"{len(data.info.labels)}: class-count mismatch")
    run = RunDir(args.out, "evaluate", {"onnx": str(args.onnx), "dataset": spec}, args.seed)
    run.info["dataset_fingerprint"] = data.info.fingerprint
    dataset = {k: v for k, v in spec.items() if k != "root"}
    run_fp = digest({"onnx_sha256": _file_sha256(args.onnx), "dataset": dataset, "data": data.info.fingerprint})
    run.info["fingerprint"] = {"run": run_fp}
    check_output_dir(args.out, run_fp, {}, _mode(args))  # before anything in --out is touched
    run.start()
    try:
        metrics = evaluate_onnx(args.onnx, data.raw_val(), log=_log)
    except KeyboardInterrupt as exc:
        run.interrupt(signal_name(exc))
        raise
    except BaseException as exc:
        run.fail(f"{type(exc).__name__}: {exc}")
        raise
    run.succeed({"name": Path(args.onnx).stem, "task": meta.task, "primary": metrics["primary"],
                 "onnx": [{"kind": "onnx", "path": str(args.onnx), "metrics": metrics}]})
    line = f"{metrics['primary']}={100 * metrics[metrics['primary']]:.2f}% -> {Path(args.out) / 'metrics.json'}"
    _log(line)
    append_log(args.out, line)
    return 0


def _file_sha256(path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cmd_export(argv):
    p = _parser("export", "Export a checkpoint to ONNX (opset >= 17, dynamic batch) with the runtime metadata "
                          "contract, verified against torch, plus a model card (.md + .json).")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--model", help="architecture for a plain state dict")
    p.add_argument("--output", required=True, help="path of the .onnx file to write")
    p.add_argument("--model-id", help="model_id in the metadata (default: file stem)")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--atol", type=float, default=1e-3, help="max |onnx - torch| accepted")
    _add_data(p, required=False)
    p.add_argument("--seed", type=int, default=0)
    _add_trust(p)
    args = p.parse_args(argv)
    from robot_compress.compress.export import export_onnx
    from robot_compress.compress.pipeline import build_model, load_data

    output = Path(args.output)
    if output.suffix != ".onnx":
        raise UsageError(f"--output must end in .onnx, got {output}")
    student, recorded = _from_checkpoint(args.checkpoint, args.model, args.trust_checkpoint)
    data = load_data(rc.DataSpec.model_validate(_data_spec(args, recorded)))
    built = build_model(rc.ModelSpec.model_validate(student), data.info, "model", trust=args.trust_checkpoint)
    recipe_name = ((built.checkpoint.get("config") or {}).get("name")) or f"export of {args.checkpoint}"
    res = export_onnx(built.model, output, data.info, model_id=args.model_id or output.stem, recipe=recipe_name,
                      opset=args.opset, atol=args.atol, seed=args.seed)
    _log(f"wrote {res.path} (max |onnx - torch| = {res.max_abs_diff:.2g}), {res.card_md.name}, {res.card_json.name}")
    return 0


def cmd_quantize(argv):
    p = _parser("quantize", "INT8 post-training static quantization (onnxruntime, QDQ) of an exported model, "
                            "calibrated on training images; the metadata contract is kept.")
    p.add_argument("--onnx", required=True, help="fp32 model exported by `robot-compress export`")
    p.add_argument("--output", required=True)
    p.add_argument("--samples", type=_positive_int, default=32, help="calibration images")
    p.add_argument("--per-tensor", action="store_true", help="per-tensor instead of per-channel weights")
    p.add_argument("--quantize-all", action="store_true",
                   help="quantize the first and last conv/linear layer too (default: they stay float)")
    _add_data(p)
    args = p.parse_args(argv)

    from robot_compress.compress.pipeline import load_data
    from robot_compress.compress.quantize import calibration_arrays, max_abs_diff, quantize_onnx, write_quantized_card
    from robot_compress.runtime.engine import read_metadata

    meta = read_metadata(args.onnx)
    spec = _data_spec(args)
    spec["input_size"] = list(meta.input_size)
    data = load_data(rc.DataSpec.model_validate(spec))
    arrays = calibration_arrays(data.train, args.samples, spec.get("seed", 0))
    quantize_onnx(args.onnx, args.output, arrays, per_channel=not args.per_tensor,
                  float_first_last=not args.quantize_all)
    diff = max_abs_diff(args.output, arrays, fp32_path=args.onnx)
    card = write_quantized_card(args.output, args.onnx, diff, reference=f"{Path(args.onnx).name} (float ONNX)")
    _log(f"wrote {args.output} ({len(arrays)} calibration images drawn across the training split; max |INT8 - "
         f"float| = {diff:.3g}){f', card {card.name}' if card else ''}")
    return 0


def _add_overrides(p: argparse.ArgumentParser):
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe value before validation (repeatable): dotted keys, 0-based list "
                        "indices, YAML values, e.g. --set stages.2.amount=0.9 --set dataset.train_subset=500")


def cmd_run(argv):
    p = _parser("run", "Run a whole pipeline from a recipe YAML (config/recipes/*.yaml). Rerunning the same recipe "
                       "into the same output dir resumes from the stage checkpoints; a dir holding a run of "
                       "anything else is refused untouched (see --resume/--restart).")
    p.add_argument("recipe", help="recipe YAML (its relative paths are relative to the file)")
    p.add_argument("--out", help="output dir (default: the recipe's output_dir, else runs/<name>)")
    p.add_argument("--train-only", action="store_true",
                   help="stop before the export/quantize/evaluate stages (train on a GPU machine, then rerun "
                        "without this flag on the target CPU: training resumes as done)")
    _add_overrides(p)
    p.add_argument("--dry-run", action="store_true", help="print the resolved recipe and output dir, run nothing")
    p.add_argument("--nproc", type=_positive_int, default=1, metavar="N",
                   help="data-parallel over N processes on this machine (torchrun's launcher, gloo on CPU, nccl "
                        "on GPUs; rank 0 writes the output dir). Several machines: start torchrun yourself, see "
                        "docs/TOOLKIT.md 'On a cluster'")
    _add_run_control(p)
    args = p.parse_args(argv)
    from robot_compress.compress.pipeline import run_recipe

    recipe = rc.load_recipe(args.recipe, args.overrides)
    out = args.out or _default_out(recipe)
    if args.dry_run:
        _print_dry_run(recipe, out)
        return 0
    if args.nproc > 1:
        from robot_compress.compress import distributed
        from robot_compress.compress.launch import launch

        if distributed.requested():
            raise UsageError("--nproc inside torchrun: drop --nproc, torchrun already started the ranks")
        return launch(args.nproc, ["run", *_without_nproc(argv), "--out", out], Path(out), log=_log)
    run_recipe(recipe, out, log=_log, train_only=args.train_only, mode=_mode(args),
               trust_checkpoints=args.trust_checkpoint)
    return 0


def _without_nproc(argv: list[str]) -> list[str]:
    """The ranks' own command line: the same arguments, less --nproc (and --out: the launcher passes its own)."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("--nproc", "--out"):
            skip = True
        elif not arg.startswith(("--nproc=", "--out=")):
            kept.append(arg)
    return kept


def _default_out(recipe: rc.Recipe) -> str:
    return recipe.output_dir or str(Path("runs") / recipe.name)


def _print_dry_run(recipe: rc.Recipe, out: str) -> None:
    import yaml

    print(f"# resolved recipe (paths relative to {Path.cwd()}); output dir: {out}")
    print(yaml.safe_dump(rc.dump_recipe(recipe), sort_keys=False, default_flow_style=None), end="", flush=True)


def cmd_sweep(argv):
    p = _parser("sweep", "Grid over pruning criteria x amounts x KD on/off from a base recipe that has a "
                         "prune stage; finished cells are skipped, so an interrupted sweep resumes.")
    p.add_argument("recipe", help="base recipe YAML")
    p.add_argument("--out", required=True)
    p.add_argument("--criteria", nargs="+", default=list(rc.CRITERIA), choices=rc.CRITERIA)
    p.add_argument("--amounts", nargs="+", type=_amount, default=[0.0, 0.5, 0.7, 0.9])
    p.add_argument("--kd", nargs="+", choices=("on", "off"), default=["on", "off"])
    g = p.add_argument_group("executor")
    g.add_argument("--executor", choices=("sequential", "ray"), default="sequential",
                   help="sequential (default, one cell after another in this process) or ray (each cell a Ray "
                        "task; needs requirements/cluster.txt)")
    g.add_argument("--address", default=None,
                   help="Ray cluster to use ('auto': the one `ray start` joined this machine to); default: a "
                        "local instance started and stopped for this sweep")
    g.add_argument("--cpus-per-cell", type=float, default=1.0, help="CPUs Ray reserves for each cell")
    g.add_argument("--gpus-per-cell", type=float, default=0.0, help="GPUs Ray reserves for each cell")
    g.add_argument("--max-retries", type=int, default=2, help="reruns of a cell whose Ray worker died")
    _add_overrides(p)
    _add_run_control(p)
    args = p.parse_args(argv)
    from robot_compress.compress import distributed
    from robot_compress.compress.sweep import run_sweep

    if distributed.requested():
        raise UsageError("sweep does not run under torchrun; spread its cells with --executor ray instead")
    if args.executor == "sequential" and (args.address or args.gpus_per_cell):
        raise UsageError("--address and --gpus-per-cell need --executor ray")
    recipe = rc.load_recipe(args.recipe, args.overrides)
    kd_modes = [k == "on" for k in args.kd]
    if args.executor == "ray":
        from robot_compress.compress.sweep_ray import run_sweep_ray

        cells = run_sweep_ray(recipe, args.out, args.criteria, args.amounts, kd_modes, log=_log, mode=_mode(args),
                              trust_checkpoints=args.trust_checkpoint, address=args.address,
                              cpus_per_cell=args.cpus_per_cell, gpus_per_cell=args.gpus_per_cell,
                              max_retries=args.max_retries)
    else:
        cells = run_sweep(recipe, args.out, args.criteria, args.amounts, kd_modes, log=_log, mode=_mode(args),
                          trust_checkpoints=args.trust_checkpoint)
    _log(f"{len(cells)} cells in {args.out}; tables: robot-compress report {args.out} --out {args.out}/report")
    return 0


def cmd_report(argv):
    p = _parser("report", "Markdown tables (teacher -> student, accuracy vs % pruned per criterion, "
                          "segmentation) and PNG plots from run output dirs' metrics.json.")
    p.add_argument("runs", nargs="+", help="run or sweep output dirs (searched recursively)")
    p.add_argument("--out", required=True, help="dir for report.md and the plots")
    args = p.parse_args(argv)
    from robot_compress.compress.report import write_report

    path = write_report(args.runs, args.out)
    _log(f"wrote {path}")
    return 0


COMMANDS = {"train": cmd_train, "distill": cmd_distill, "prune": cmd_prune, "finetune": cmd_finetune,
            "evaluate": cmd_evaluate, "export": cmd_export, "quantize": cmd_quantize, "run": cmd_run,
            "sweep": cmd_sweep, "report": cmd_report}


# ---------------------------------------------------------------------------------------------- dispatch


def _log(msg: str) -> None:
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for the run
        print(msg, flush=True)


def _bad_input_errors() -> tuple:
    from robot_compress.compress.evaluate import EvaluationError
    from robot_compress.compress.export import ExportError
    from robot_compress.compress.models import CheckpointError, UnknownModelError
    from robot_compress.compress.pipeline import PipelineError
    from robot_compress.compress.train import ResumeError
    from robot_compress.runtime.engine import ModelLoadError

    errors = [UsageError, rc.RecipeError, PipelineError, CheckpointError, UnknownModelError, EvaluationError,
              ExportError, ResumeError, ModelLoadError, FileNotFoundError, ValueError]
    try:
        from robot_compress.compress.data import DatasetError

        errors.append(DatasetError)
    except ImportError:
        pass
    return tuple(errors)


@contextlib.contextmanager
def _stop_on_signals():
    """SIGINT and SIGTERM raise runinfo.Interrupted, so a run stops cleanly between two Python steps (the last
    checkpoint stays whole: writes are atomic); a second signal while it stops is ignored."""
    from robot_compress.compress.runinfo import Interrupted

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, _frame):
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        raise Interrupted(signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _record_for_launcher(exc: BaseException, message: str) -> None:
    """The rank's error in the file torch's elastic agent gave it (TORCHELASTIC_ERROR_FILE): the launcher reads
    it back from the failure it reports."""
    import time

    from robot_compress.compress.runinfo import write_text_atomic

    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if path:
        kind = type(exc).__name__
        # "time": sub-second, so the launcher can tell which of two ranks failing in one second came first
        now = time.time()
        with contextlib.suppress(OSError):
            # Atomic: the agent's SIGTERM may land mid-write, and it cannot parse half a file (the launcher
            # would then report a JSONDecodeError instead of any rank's error).
            write_text_atomic(path, json.dumps({"message": {"message": f"{kind}: {message}", "extraInfo": {
                "timestamp": int(now), "time": now, "kind": kind}}}))


def run(command: str, argv: list[str]) -> int:
    from robot_compress.compress.runinfo import signal_name

    if command not in COMMANDS:
        print(f"robot-compress: unknown toolkit command {command!r}", file=sys.stderr)
        return EXIT_BAD_INPUT
    from robot_compress.compress import distributed

    rank = os.environ.get("RANK", "0")
    launched = bool(os.environ.get("ROBOT_COMPRESS_LAUNCHED"))  # `run --nproc` prints the ranks' failure
    try:
        with _stop_on_signals():
            distributed.init_from_env()  # torchrun started this process as one of several ranks
            return COMMANDS[command](list(argv))
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2, message already printed)
        return exc.code if isinstance(exc.code, int) else EXIT_BAD_INPUT
    except KeyboardInterrupt as exc:  # SIGINT, or SIGTERM through runinfo.Interrupted
        if not launched and rank == "0":
            print(f"robot-compress {command}: interrupted by {signal_name(exc)}; finished epochs are kept, rerun "
                  "the same command to resume", file=sys.stderr, flush=True)
        return getattr(exc, "exit_code", 130)
    except _bad_input_errors() as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        if launched:
            _record_for_launcher(exc, message)
        elif rank == "0":  # every rank finds the same bad input
            print(f"robot-compress {command}: error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as exc:
        if not launched:
            raise
        # `run --nproc` prints one line for the whole run, naming the rank that failed first and why.
        _record_for_launcher(exc, " ".join(str(exc).split())[:500] or type(exc).__name__)
        return 1
    finally:
        if distributed.requested():
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
