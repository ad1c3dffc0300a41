"""Build docs/RESULTS.md and docs/figures/ from finished runs, and copy the shipped models into models/.

    .venv/bin/python docs/make_results.py ship     # ONNX + model cards from runs/ -> models/
    .venv/bin/python docs/make_results.py report   # robot-compress report over runs/ -> docs/RESULTS.md
                                                   # (refused if runs the page reports are missing here)
    .venv/bin/python docs/make_results.py camvid     # only the CamVid block of docs/RESULTS.md
    .venv/bin/python docs/make_results.py detection  # only the Penn-Fudan block (+ docs/figures/pennfudan_pruning.png)

Every number in RESULTS.md comes from a run's metrics.json (through robot_compress.compress.report or the
goal check below); the only typed text is the prose header in docs/results_header.md.
"""
from __future__ import annotations

import functools
import json
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))  # bench/goals.py: one definition of every goal
RUNS = ROOT / "runs"
# (run dir, ONNX file in it, name in models/)
SHIPPED = [
    ("cifar10_resnet56_teacher_jpeg", "cifar10_resnet56_teacher.onnx", "cifar10_resnet56_teacher.onnx"),
    # ResNet-18 teacher trained here on a lent GPU: 43 MB, over the 25 MB budget -> reproducible by its recipe.
    ("cifar10_resnet18_teacher", "cifar10_resnet18_teacher.onnx", "cifar10_resnet18_teacher.onnx"),
    # The deployed <= 5 % student: KD -> gradual class-blind 50/70/85 % with KD fine-tunes (GPU-trained).
    ("cifar10_resnet20_kd_gradual_cb85_int8", "cifar10_resnet20_kd_gradual_cb85.onnx",
     "cifar10_resnet20_kd_gradual_cb85.onnx"),
    ("cifar10_resnet20_kd_gradual_cb85_int8", "cifar10_resnet20_kd_gradual_cb85_int8.onnx",
     "cifar10_resnet20_kd_gradual_cb85_int8.onnx"),
    # structured 50 % + KD + INT8: the fastest CIFAR-10 student within 0.5 pt of its FP32 model.
    ("cifar10_resnet20_structured50_kd_int8", "cifar10_resnet20_kd_struct50_int8.onnx",
     "cifar10_resnet20_kd_struct50_int8.onnx"),
    # dense KD ResNet-20 distilled on the whole train split, INT8: the fast and accurate CIFAR-10 point.
    ("cifar10_resnet20_kd_full_int8", "cifar10_resnet20_kd_full_int8.onnx", "cifar10_resnet20_kd_full_int8.onnx"),
    # the next size up, ResNet-32, distilled on the whole train split, INT8: the fastest CIFAR-10 student within
    # the 1 pt budget.
    ("cifar10_resnet32_kd_full_int8", "cifar10_resnet32_kd_full_int8.onnx", "cifar10_resnet32_kd_full_int8.onnx"),
    # the same student after 100 more KD epochs with augmentation (unfinished: 84 of 100 epochs so far).
    ("cifar10_resnet20_kd_long_int8", "cifar10_resnet20_kd_long_int8.onnx", "cifar10_resnet20_kd_long_int8.onnx"),
    # CamVid edge teacher: the labels-trained LR-ASPP with test-time flip averaging, float16 weights.
    ("camvid_teacher", "camvid_teacher_fp16.onnx", "camvid_teacher_fp16.onnx"),
    # CamVid robot student: structured 50 % of the label-trained LR-ASPP, KD fine-tune from the teacher.
    ("camvid_lraspp_student", "camvid_lraspp_student.onnx", "camvid_lraspp_student.onnx"),
    # Penn-Fudan edge teacher: FCOS-MobileNetV3-FPN at 480x640, 11 M parameters, 44 MB in float32 (over the
    # budget), so it ships as pennfudan_teacher_edge's float16-weight re-export of runs/pennfudan_teacher.
    ("pennfudan_teacher_edge", "pennfudan_teacher_fp16.onnx", "pennfudan_teacher_fp16.onnx"),
    # Penn-Fudan robot student: the labels-trained SSDlite 320, structured 50 %, KD fine-tune from the teacher.
    ("pennfudan_student", "pennfudan_student.onnx", "pennfudan_student.onnx"),
]
FALLBACK: dict[str, str] = {}
DEPLOYED = "cifar10_resnet20_kd_gradual_cb85_int8"
MAX_BYTES = 25 * 1024 * 1024


def ship() -> None:
    out = ROOT / "models"
    out.mkdir(exist_ok=True)
    for run, name, target in SHIPPED:
        if run in FALLBACK and not (RUNS / run / "metrics.json").is_file():
            run = FALLBACK[run]
        src = RUNS / run / name
        if not (RUNS / run / "metrics.json").is_file() or not src.is_file():
            print(f"skip {target}: run {run} not finished")
            continue
        if src.stat().st_size > MAX_BYTES:
            print(f"skip {target}: {src.stat().st_size / 2**20:.1f} MB > 25 MB")
            continue
        if name.endswith("_int8.onnx"):
            card = _int8_card(run, src, out / target)
            if card is None:
                continue
        else:
            card = json.loads(src.with_suffix(".json").read_text())
        _write_card(card, run, out / target)
        shutil.copyfile(src, out / target)
        print(f"shipped {out / target} ({src.stat().st_size / 2**20:.2f} MB)")


@functools.cache
def _recipe_files() -> dict[str, str]:
    """run dir name -> the recipe file that writes it (from each recipe's output_dir)."""
    from robot_compress.compress.recipe import load_recipe

    files = {}
    for path in sorted((ROOT / "config" / "recipes").glob("*.yaml")):
        recipe = load_recipe(path)
        files[Path(recipe.output_dir or f"runs/{recipe.name}").name] = path.relative_to(ROOT).as_posix()
    return files


def _write_card(card: dict, run: str, target: Path) -> None:
    """The export's card plus where the data, split, recipe and run time come from (read from metrics.json)."""
    from robot_compress.compress.export import _card_markdown
    from robot_compress.compress.report import run_seconds, training_seconds_by_device

    metrics = json.loads((RUNS / run / "metrics.json").read_text())
    recipe = json.loads((RUNS / run / "run.json").read_text())["config"]
    ds = recipe["dataset"]
    card["file"] = target.name
    card["data"] = {"kind": ds["kind"], "source": ds["root"], "input_size": ds["input_size"],
                    "validation": _validation_text(ds, metrics),
                    "n_train": metrics["dataset"]["n_train"], "n_val": metrics["dataset"]["n_val"],
                    "fingerprint": metrics["dataset"]["fingerprint"]}
    recipe_file = _recipe_files()[run]
    card["recipe"] = {"name": recipe["name"], "file": recipe_file, "command": f"robot-compress run {recipe_file}",
                      "run_time_s": round(run_seconds(metrics)),
                      "training_s_by_device": training_seconds_by_device(metrics)}
    if metrics.get("teacher"):
        t = metrics["teacher"]
        card["teacher"] = {"model": t["model"], "params_nonzero": t["params"]["nonzero"],
                           "val_metrics": {k: v for k, v in t["metrics"].items() if isinstance(v, float)}}
        if metrics.get("task") == "detection":  # the teacher scored on this run's inputs, resized to its own size
            card["teacher"]["scored_on"] = (f"this run's {ds['input_size'][0]}x{ds['input_size'][1]} inputs "
                                            "(resized to the teacher's own input size, as in KD)")
    target.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    d, r = card["data"], card["recipe"]
    extra = ["## Data and recipe", "",
             f"- data: {d['kind']} from `{d['source']}` at {d['input_size'][0]}x{d['input_size'][1]}; "
             f"validation = {d['validation']} ({d['n_val']} items, never trained on); {d['n_train']} training items "
             f"used; fingerprint `{d['fingerprint']}`",
             f"- recipe `{r['name']}`: `{r['command']}` ({r['run_time_s']} s, after the runs it starts from; "
             + _where_trained(r["training_s_by_device"]) + ")"]
    if card.get("teacher"):
        t = card["teacher"]
        extra.append(f"- teacher {t['model']}: {t['params_nonzero']} nonzero params, validation "
                     + ", ".join(f"{k} {v:.4f}" for k, v in t["val_metrics"].items())
                     + (f", scored on {t['scored_on']}" if t.get("scored_on") else ""))
    extra.append("- latency: runtime Engine (preprocess + onnxruntime), 1 thread, single frame, on the shared "
                 "2-core development CPU under load")
    target.with_suffix(".md").write_text(_card_markdown(card) + "\n".join(extra) + "\n")


def _validation_text(ds: dict, metrics: dict) -> str:
    """Which split the card's metrics come from and at what resolution they were scored."""
    if ds.get("val_split"):
        at = metrics["dataset"].get("validation", {}).get("scored_at")
        size = f"{at[0]}x{at[1]}, " if at else ""
        return (f"the dataset's own '{ds['val_split']}' split, scored at {size}the frames' native size, as the "
                "node publishes masks")
    if metrics.get("task") == "detection":  # carved by image, no seed (compress/detection/data.carve_every)
        from robot_compress.compress.detection.data import val_every

        k = val_every(ds["val_fraction"])
        return f"every {k}th image by sorted file name, scored in each frame's own pixels through the Engine"
    return f"fixed {100 * ds['val_fraction']:g} % split of the training data, seed {ds['seed']}"


def _where_trained(by_device: dict) -> str:
    """'training 312 s on cuda:NVIDIA H100 80GB HBM3 (lent GPU) + 4,680 s on cpu (the shared 2-core CPU)'."""
    names = {"cpu": "the shared 2-core CPU",
             "unrecorded": "the shared 2-core CPU (trained before devices were recorded; no GPU then)"}
    parts = [f"{s:,.0f} s on " + (names[d] if d in names else f"{d} (lent GPU)") for d, s in by_device.items()
             if s > 0]
    # Zero or absent: trained by earlier processes that did not record epoch times (see RESULTS.md).
    return "training " + " + ".join(parts) if parts else "training time not recorded in its metrics.json"


def _int8_card(run: str, src: Path, target: Path) -> dict | None:
    """INT8 ships only within 0.5 pt of its FP32 model (both through the Engine); its card is the FP32
    card with the INT8 file, metrics and quantization settings."""
    metrics = json.loads((RUNS / run / "metrics.json").read_text())
    entries = {e["kind"]: e for e in metrics["onnx"]}
    fp32, int8 = entries["fp32"], entries.get("int8")
    primary = metrics["primary"]
    if not int8 or not int8.get("metrics"):
        print(f"skip {target.name}: INT8 model not evaluated")
        return None
    drop = 100 * (fp32["metrics"][primary] - int8["metrics"][primary])
    if drop > 0.5:
        print(f"skip {target.name}: INT8 loses {drop:.2f} pt vs FP32 (> 0.5)")
        return None
    card = json.loads((RUNS / run / fp32["path"]).with_suffix(".json").read_text())
    card["model_id"] = card["model_id"] + "_int8"
    card["file"] = target.name
    card["metrics"] = {k: v for k, v in int8["metrics"].items() if isinstance(v, (int, float, str))}
    import onnx

    made = json.loads({p.key: p.value for p in onnx.load(str(src)).metadata_props}["quantization"])
    card["metrics"]["quantization"] = (
        f"INT8 QDQ static (onnxruntime), {'per-channel' if made['per_channel'] else 'per-tensor'} weights, "
        f"{made['calibration_items']} training images, float layers: {', '.join(made.get('float_nodes') or ['none'])}")
    card["metrics"][f"{primary}_drop_vs_fp32_pts"] = round(drop, 3)
    return card


def _finished_metrics(run: str) -> dict | None:
    """A run's metrics.json (written only when the run succeeded), or None when it has not finished."""
    path = RUNS / run / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _each_finished(runs, lines: list[str]):
    """(run, metrics) for each finished run; a "not run" line in `lines` for each other one."""
    for run in runs:
        m = _finished_metrics(run)
        if m is None:
            lines.append(f"- `{run}`: not run")
        else:
            yield run, m


def goal_check() -> list[str]:
    """Issue 7's classification goal, computed from the deployed run's metrics.json."""
    from goals import ACC_BUDGET_PTS, PARAM_SHARE_GOAL

    from robot_compress.compress.report import pruning_method

    share_goal, budget = PARAM_SHARE_GOAL["classification"], ACC_BUDGET_PTS["classification"]
    m = _finished_metrics(DEPLOYED)
    if m is None:
        return ["## Goal check (classification)", "", f"Not available: run {DEPLOYED} has not finished.", ""]
    s, t = m["student"], m["teacher"]
    ratio = s["params"]["nonzero"] / t["params"]["nonzero"]
    gap = 100 * (t["metrics"]["top1"] - s["metrics"]["top1"])
    onnx = {e["kind"]: e.get("metrics", {}) for e in m.get("onnx", [])}
    lines = ["## Goal check (classification)", "",
             f"Deployed student `{DEPLOYED}` ({s['model']}, {m['pruning']['criterion']} "
             f"{100 * m['pruning']['amount']:g} %): {s['params']['nonzero']} nonzero parameters = "
             f"{100 * ratio:.2f} % of the teacher's {t['params']['nonzero']} (goal <= {100 * share_goal:g} %: "
             f"{'met' if ratio <= share_goal else 'missed'}); top-1 {100 * s['metrics']['top1']:.2f} % vs teacher "
             f"{100 * t['metrics']['top1']:.2f} % = {gap:.2f} pt below (goal <= {budget:.1f} pt: "
             f"{'met' if gap <= budget else f'missed by {gap - budget:.2f} pt'}).", ""]
    for kind, om in onnx.items():
        if om:
            lines.append(f"- ONNX {kind} through the runtime Engine: top-1 {100 * om['top1']:.2f} %, "
                         f"p50 latency {om.get('latency_ms_p50_1thread')} ms (1 thread)")
    lines += ["", "Other CIFAR-10 students (the one-shot predecessor of the deployed one, and speed rather than "
              f"the <= {100 * share_goal:g} % parameter budget; see BENCHMARKS.md):", ""]
    for run, o in _each_finished(OTHER_CLS_RUNS, lines):
        so, to = o["student"], o["teacher"]
        parts = [f"{e['kind']} {100 * e['metrics']['top1']:.2f} %" for e in o.get("onnx", []) if e.get("metrics")]
        gap_o = 100 * (to["metrics"]["top1"] - so["metrics"]["top1"])
        share = 100 * so["params"]["nonzero"] / to["params"]["nonzero"]
        lines.append(f"- `{run}` ({so['model']}, pruning: {pruning_method(o)}): "
                     f"{so['params']['nonzero']} nonzero params = {share:.2f} % of the teacher's; top-1 "
                     f"{100 * so['metrics']['top1']:.2f} % = {gap_o:.2f} pt below the teacher "
                     f"(Engine: {', '.join(parts)})")
    return lines + [""] + teacher_check(s)


def teacher_check(deployed: dict) -> list[str]:
    """Both CIFAR-10 teachers, and the deployed student measured against each."""
    lines = ["Teachers (the goal above is held against the ResNet-56, the stronger one):", ""]
    for run, m in _each_finished(TEACHER_RUNS, lines):
        t = m["student"]  # a teacher recipe trains its model as the run's "student"
        gap = 100 * (t["metrics"]["top1"] - deployed["metrics"]["top1"])
        lines.append(f"- `{run}` ({t['model']}): top-1 {100 * t['metrics']['top1']:.2f} %, "
                     f"{t['params']['nonzero']} params; the deployed student has "
                     f"{100 * deployed['params']['nonzero'] / t['params']['nonzero']:.2f} % of them and is "
                     f"{gap:.2f} pt below it")
    return lines + [""]


OTHER_CLS_RUNS = ("cifar10_resnet56_to_resnet20_kd_classblind", "cifar10_resnet20_kd_full_int8",
                  "cifar10_resnet32_kd_full_int8",
                  "cifar10_resnet20_kd_long_int8", "cifar10_resnet20_structured50_kd_int8")
TEACHER_RUNS = ("cifar10_resnet56_teacher_jpeg", "cifar10_resnet18_teacher")


CAMVID_TEACHER = "camvid_teacher"
CAMVID_STUDENT = "camvid_lraspp_student"
# References: the DeepLabV3 teachers (from random weights: archived; from the LR-ASPP backbone) and the student
# distilled from the first (archived when the teacher changed)
CAMVID_RUNS = ("archive/camvid_teacher_scratch", "camvid_teacher_deeplabv3", "camvid_student_labels", CAMVID_TEACHER,
               "camvid_lraspp_student_nokd", "archive/camvid_lraspp_student_scratch_teacher", CAMVID_STUDENT,
               "camvid_lraspp_student_s70")
# The file each role ships (docs/make_results.py ship): its Engine metrics are the deployed model's numbers
CAMVID_SHIPPED_KIND = {CAMVID_TEACHER: "fp16_weights", CAMVID_STUDENT: "fp32"}
CAMVID_BEGIN, CAMVID_END = "<!-- camvid:begin -->", "<!-- camvid:end -->"


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}"


def _goal_row(text: str, measured: str, ok: bool | None) -> str:
    return f"| {text} | {measured} | {'n/a' if ok is None else ('yes' if ok else '**no**')} |"


def _bench_fps() -> tuple[float | None, str]:
    """The deployed CamVid student's frames/s on 360x480 frames, one core, from the last `make bench`."""
    path = ROOT / "build" / "bench" / "model_latency.json"
    if not path.is_file():
        return None, "no `make bench` output in build/bench/"
    latency = json.loads(path.read_text())
    for v in latency.get("variants", []):
        if v["group"].startswith("camvid") and v["name"].startswith("deployed") and "int8" not in v["name"]:
            t = v.get("timing", {}).get("1") or v.get("timing", {}).get(1) or {}
            if t.get("frame_p50"):
                return 1000.0 / t["frame_p50"], f"`make bench` of {_bench_started()}"
    return None, "the last `make bench` has no deployed CamVid row"


def _bench_started() -> str:
    """When and at which commit the last `make bench` ran (bench_all.json's machine record)."""
    path = ROOT / "build" / "bench" / "bench_all.json"
    machine = json.loads(path.read_text()).get("machine", {}) if path.is_file() else {}
    return f"{machine.get('started', 'unknown date')}, commit {machine.get('commit', 'unknown')}"


def _val_curve(run: str) -> str:
    """'epoch 5: 31.2, epoch 10: 40.1, ...' (mIoU %) from the run's training checkpoint history."""
    from robot_compress.compress.train import read_checkpoint

    ckpts = sorted((RUNS / run / "checkpoints").glob("*_student.pt"))
    if not ckpts:
        return "n/a"
    history = read_checkpoint(ckpts[0]).get("history") or []
    return ", ".join(f"{h['epoch']}: {100 * h['val']['miou']:.1f}" for h in history if h.get("val"))


def camvid_section() -> list[str]:
    """The CamVid block of RESULTS.md: goals of issue 12 and every CamVid run, all from metrics.json."""
    from goals import CAMVID_ANCHORS

    from robot_compress.compress.runinfo import git_commit

    lines = [CAMVID_BEGIN, "", "## CamVid: the edge teacher and the robot's student", "",
             f"*Generated by `python docs/make_results.py camvid` at commit `{git_commit()[:10]}` from "
             "`runs/camvid_*/metrics.json`; edit the generator, not this block.*", "",
             "Protocol: every number below is measured on CamVid's own `val` split (101 frames from other sequences "
             "than `train`), scored at the full 360x480 label resolution through the runtime Engine exactly as the "
             "node publishes masks (frame resized to the model input, argmax, mask resized back), void ignored. "
             "Global pixel accuracy is the paper's metric; mIoU and class-average accuracy as SegNet reports them. "
             "No CamVid number here comes from frames carved out of `train`.", ""]
    runs = {r: _finished_metrics(r) for r in CAMVID_RUNS}
    lines += _camvid_goals(runs) + _camvid_runs(runs) + _camvid_onnx(runs) + _camvid_iou(runs)
    lines += ["", "Published anchors on CamVid's *test* split (11 classes, 360x480; context, not our split): "
              + "; ".join(f"{name} {'' if acc is None else f'{100 * acc:.1f} % global, '}{100 * miou:.1f} % mIoU"
                          for name, acc, miou in CAMVID_ANCHORS) + ".", "", CAMVID_END]
    return lines


def _camvid_goals(runs: dict) -> list[str]:
    """Issue 12's goal table: teacher and student mIoU, the student's accuracy gap, parameters and speed."""
    from goals import ACC_BUDGET_PTS, CAMVID_STUDENT_MIOU_GOAL, CAMVID_TEACHER_MIOU_GOAL, FPS_GOAL, PARAM_SHARE_GOAL

    t, st = runs[CAMVID_TEACHER], runs[CAMVID_STUDENT]
    tm = _shipped_metrics(t, CAMVID_TEACHER) if t else None  # a teacher recipe trains its model as its "student"
    sm = _shipped_metrics(st, CAMVID_STUDENT) if st else None
    fps, fps_src = _bench_fps()
    lines = ["### Goals", "", "| goal | measured | met |", "|---|---|---|"]
    lines.append(_goal_row(f"edge teacher mIoU >= {100 * CAMVID_TEACHER_MIOU_GOAL:.0f} %",
                           f"{_pct(tm and tm['miou'])} %" if tm else "not trained yet",
                           tm and tm["miou"] >= CAMVID_TEACHER_MIOU_GOAL))
    lines.append(_goal_row(f"student mIoU >= {100 * CAMVID_STUDENT_MIOU_GOAL:.0f} %",
                           f"{_pct(sm and sm['miou'])} %" if sm else "not trained yet",
                           sm and sm["miou"] >= CAMVID_STUDENT_MIOU_GOAL))
    if tm and sm:
        gap = 100 * (tm["pixel_acc"] - sm["pixel_acc"])
        share = st["student"]["params"]["nonzero"] / t["student"]["params"]["nonzero"]
        budget = ACC_BUDGET_PTS["segmentation"]
        lines.append(_goal_row(f"student global pixel accuracy within {budget:g} pt of the teacher",
                               f"{_pct(sm['pixel_acc'])} % vs {_pct(tm['pixel_acc'])} % ({gap:+.2f} pt)",
                               gap <= budget))
        lines.append(_goal_row(f"student >= {100 * (1 - PARAM_SHARE_GOAL['segmentation']):.0f} % fewer parameters",
                               f"{st['student']['params']['nonzero']:,} vs {t['student']['params']['nonzero']:,} "
                               f"({100 * (1 - share):.1f} % fewer)", share <= PARAM_SHARE_GOAL["segmentation"]))
    lines.append(_goal_row(f"student >= {FPS_GOAL:g} frames/s on 360x480 frames, one core (Engine.infer with resize "
                           "and mask)", f"{fps:.1f} frames/s ({fps_src})" if fps else fps_src,
                           None if fps is None else fps >= FPS_GOAL))
    if tm and sm:  # the point of the edge: what it buys over the robot's own model on the same frames
        lines += ["", f"What the edge buys over the robot's student on these frames: "
                  f"{100 * (tm['pixel_acc'] - sm['pixel_acc']):+.2f} pt pixel accuracy, "
                  f"{100 * (tm['miou'] - sm['miou']):+.2f} pt mIoU (teacher minus student)."]
    return lines


def _shipped_metrics(m: dict, run: str) -> dict:
    """The Engine's val metrics of the file this run ships (the robot's input size, the edge's float16 weights),
    else the torch model's."""
    for e in m.get("onnx", []):
        if e["kind"] == CAMVID_SHIPPED_KIND.get(run) and e.get("metrics"):
            return e["metrics"]
    return m["student"]["metrics"]


def _camvid_runs(runs: dict) -> list[str]:
    from robot_compress.compress.report import pruning_method

    lines = ["", "### Runs", "", "The trained torch models, fed whole 360x480 frames (the ONNX table below scores "
             "the exported files at their own input size; the goals above use the shipped files).", "",
             "| run | model | KD | pruning | pixel acc % | mIoU % | class avg % | nonzero params | epochs | "
             "training time | val mIoU % by epoch |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for run, m in runs.items():
        if m is None:
            lines.append(f"| `{run}` | not finished | | | | | | | | | |")
            continue
        s = m["student"]
        lines.append(f"| `{run}` | {s['model']} | {'yes' if s['kd'] else 'no'} | {pruning_method(m)} | "
                     f"{_pct(s['metrics']['pixel_acc'])} | {_pct(s['metrics']['miou'])} | "
                     f"{_pct(s['metrics'].get('class_acc'))} | {s['params']['nonzero']:,} | {_epochs(m)} | "
                     f"{_train_time(m)} | {_val_curve(run)} |")
    return lines


def _camvid_onnx(runs: dict) -> list[str]:
    lines = ["", "ONNX files through the runtime Engine (the same val frames; p50 latency on this shared 2-core "
             "CPU, 1 thread, under the load of the other trainings):", "",
             "| run | file | input -> logits | pixel acc % | mIoU % | p50 ms | size MB |",
             "|---|---|---|---|---|---|---|"]
    for run, m in runs.items():
        for e in (m or {}).get("onnx", []):
            em = e.get("metrics") or {}
            path = RUNS / run / e["path"]
            size = f"{path.stat().st_size / 2**20:.1f}" if path.is_file() else "n/a"
            lines.append(f"| `{run}` | `{e['path']}` ({e['kind']}) | {_io_sizes(path)} | {_pct(em.get('pixel_acc'))} | "
                         f"{_pct(em.get('miou'))} | {em.get('latency_ms_p50_1thread', 'n/a')} | {size} |")
    return lines


def _io_sizes(onnx_path: Path) -> str:
    """'288x384 -> 180x240': the model's input size and the logits it returns (one Engine run on the file)."""
    from robot_compress.runtime.engine import Engine

    if not onnx_path.is_file():
        return "n/a"
    engine = Engine(onnx_path)
    (h, w), (lh, lw) = engine.meta.input_size, engine.run_preprocessed().shape[-2:]
    return f"{h}x{w} -> {lh}x{lw}"


def _camvid_iou(runs: dict) -> list[str]:
    finished = {run: m for run, m in runs.items() if m}
    if not finished:
        return []
    labels = list(finished.values())[-1]["dataset"]["labels"]
    lines = ["", "Per-class IoU %:", "", "| run | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    return lines + [f"| `{run}` | " + " | ".join(_pct(v) for v in m["student"]["metrics"]["iou_per_class"]) + " |"
                    for run, m in finished.items()]


def write_camvid_section() -> None:
    """Replace the CamVid block of docs/RESULTS.md (between its markers) with a freshly generated one."""
    _write_block(CAMVID_BEGIN, CAMVID_END, camvid_section())


def _write_block(begin: str, end: str, lines: list[str], after: str | None = None) -> None:
    """Replace the block between `begin` and `end` in docs/RESULTS.md; a page without it gets it inserted on
    the line after `after` (when given), else stops with an error."""
    path = ROOT / "docs" / "RESULTS.md"
    text = path.read_text()
    block = "\n".join(lines)
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    elif after and after in text:
        head, tail = text.split(after, 1)
        text = head + after + "\n\n" + block + tail
    else:
        raise SystemExit(f"{path} has no {begin} ... {end} block to replace")
    path.write_text(text)
    print(f"wrote the {begin} block of {path}")


PENNFUDAN_TEACHER = "pennfudan_teacher"
PENNFUDAN_STUDENT = "pennfudan_student"
# Issue 14's comparison: the edge teacher, the deployed KD student, its no-KD ablation (same start, cut and
# schedule), the dense labels-only SSDlite both are cut from, and a from-scratch student if one was ever run.
# pennfudan_teacher_edge only re-exports the trained teacher with float16 weights (the 25 MB budget).
PENNFUDAN_RUNS = (PENNFUDAN_TEACHER, "pennfudan_teacher_edge", PENNFUDAN_STUDENT, "pennfudan_student_nokd",
                  "pennfudan_student_labels", "pennfudan_student_scratch")
PENNFUDAN_SWEEP = "pennfudan_prune_sweep"
# The grid its command asks for (config/recipes/pennfudan_prune_sweep.yaml): cells not there yet read "not finished"
PENNFUDAN_SWEEP_AMOUNTS = (0.0, 0.3, 0.5, 0.7, 0.8, 0.9)
PENNFUDAN_CRITERIA = ("random", "class-uniform", "class-blind")
PENNFUDAN_FIGURE = "pennfudan_pruning.png"
DETECTION_BEGIN, DETECTION_END = "<!-- detection:begin -->", "<!-- detection:end -->"


def detection_section() -> list[str]:
    """The Penn-Fudan block of RESULTS.md: issue 14's goals, the runs and the pruning curves, from metrics.json
    (writes docs/figures/pennfudan_pruning.png as a side effect)."""
    from robot_compress.compress.runinfo import git_commit

    lines = [DETECTION_BEGIN, "", "## Penn-Fudan detection: the edge teacher and the robot's student", "",
             f"*Generated by `python docs/make_results.py detection` at commit `{git_commit()[:10]}` from "
             "`runs/pennfudan_*/metrics.json`; edit the generator, not this block.*", "",
             "Protocol: COCO AP (IoU 0.50:0.95), AP50 and AP75 from pycocotools on Penn-Fudan's 24 validation images "
             "(every 5th by sorted name, never trained on), boxes scored in the frames' own pixels, each ONNX file "
             "through the runtime Engine (resize, graph, threshold, per-class NMS) as the node runs it."
             + _val_size_note(), ""]
    runs = {r: _finished_metrics(r) for r in PENNFUDAN_RUNS}
    lines += _detection_goals() + _detection_runs(runs) + _detection_pruning()
    return lines + ["", DETECTION_END]


def _val_size_note() -> str:
    """How coarse the scores are, from the scorer's own counts in the first finished run (a small val set)."""
    for run in PENNFUDAN_RUNS:
        m = _finished_metrics(run)
        counts = m and _detection_engine(m, run)[0]
        if counts and counts.get("images") and counts.get("ground_truth"):
            return (f" {counts['images']} images with {counts['ground_truth']} objects: one missed object moves AP50 "
                    f"by about {100 / counts['ground_truth']:.1f} pt.")
    return ""


def _shipping_run(stem: str) -> str:
    """The run `ship` copies models/<stem>.onnx (or <stem>_fp16.onnx) from: SHIPPED decides whether the teacher
    ships from its training run or from a float16 re-export, and the goals follow it."""
    return next((run for run, _, target in SHIPPED if Path(target).stem in (stem, f"{stem}_fp16")), stem)


def _shipped_file(run: str) -> str | None:
    """The ONNX file `ship` copies from this run (SHIPPED is the one list of them)."""
    return next((name for r, name, _ in SHIPPED if r == run), None)


def _detection_engine(m: dict, run: str) -> tuple[dict, str]:
    """(metrics, what they score): the Engine's metrics of the file this run ships, else of its first scored
    export, else the torch model's."""
    entries = [e for e in m.get("onnx", []) if e.get("metrics")]
    e = next((e for e in entries if e["path"] == _shipped_file(run)), entries[0] if entries else None)
    if e is None:
        return m["student"]["metrics"], "the torch model (no scored ONNX file)"
    return e["metrics"], f"`{e['path']}` through the Engine"


def _detection_goals() -> list[str]:
    """Issue 14's goal table: AP50 gap and parameter share (shipped files), frame rate and speedup (bench)."""
    from goals import DETECTION_AP50_BUDGET_PTS, DETECTION_PARAM_SHARE_GOAL

    t_run, s_run = _shipping_run(PENNFUDAN_TEACHER), _shipping_run(PENNFUDAN_STUDENT)
    t, s = _finished_metrics(t_run), _finished_metrics(s_run)
    missing = ", ".join(f"`{r}`" for r, m in ((t_run, t), (s_run, s)) if m is None)
    lines = ["### Goals", "", "| goal | measured | met |", "|---|---|---|"]
    budget = DETECTION_AP50_BUDGET_PTS
    if t and s:
        (tm, _), (sm, _) = _detection_engine(t, t_run), _detection_engine(s, s_run)
        gap = 100 * (tm["ap50"] - sm["ap50"])
        lines.append(_goal_row(f"student AP50 within {budget:g} pt of the teacher",
                               f"{_pct(sm['ap50'])} % vs {_pct(tm['ap50'])} % ({abs(gap):.2f} pt "
                               f"{'below' if gap >= 0 else 'above'})", gap <= budget))
        tp, sp = t["student"]["params"]["total"], s["student"]["params"]["total"]
        share = sp / tp
        lines.append(_goal_row(f"student parameters <= {100 * DETECTION_PARAM_SHARE_GOAL:g} % of the teacher's",
                               f"{sp:,} vs {tp:,} ({100 * share:.1f} %)", share <= DETECTION_PARAM_SHARE_GOAL))
    else:
        lines.append(_goal_row(f"student AP50 within {budget:g} pt of the teacher", f"not finished: {missing}", None))
        lines.append(_goal_row(f"student parameters <= {100 * DETECTION_PARAM_SHARE_GOAL:g} % of the teacher's",
                               f"not finished: {missing}", None))
    return lines + _detection_speed_rows((t_run, t), (s_run, s)) + [""] + _detection_files((t_run, s_run))


def _detection_speed_rows(teacher: tuple[str, dict | None], student: tuple[str, dict | None]) -> list[str]:
    """Frame rate and speedup goals: from `make bench` when it timed the deployed student, else the evaluate
    stage's single-frame latency (labelled as such), else 'not measured'."""
    from goals import FPS_GOAL, SPEEDUP_GOAL

    fps_goal = f"student >= {FPS_GOAL:g} frames/s on camera frames, one core (Engine.infer with resize and NMS)"
    speed_goal = f"student >= {SPEEDUP_GOAL:g}x faster than the teacher (p50, 1 thread)"
    bench, why = _bench_detection()
    if bench:
        h, w = bench["frame_hw"]
        src = f"`make bench` of {_bench_started()}, {bench['variant']}"
        return [_goal_row(fps_goal, f"{bench['fps']:.1f} frames/s at {h}x{w} ({src})", bench["fps"] >= FPS_GOAL),
                _goal_row(speed_goal, f"{bench['speedup']:.1f}x ({bench['speedup_of']}; teacher "
                          f"{bench['teacher_weights']}; {src})", bench["speedup"] >= SPEEDUP_GOAL)]
    s_ms, t_ms = _evaluate_latency(*student), _evaluate_latency(*teacher)
    label = f"from the runs' evaluate stage, not `make bench` ({why})"
    lacking = [f"`{run}`" for (run, _), ms in ((student, s_ms), (teacher, t_ms)) if not ms]
    unmeasured = f"not measured ({why}; no evaluate-stage latency from {' or '.join(lacking)})"
    fps_row = (_goal_row(fps_goal, f"{1000 / s_ms:.1f} frames/s at 480x640 ({s_ms:g} ms p50; {label})",
                         1000 / s_ms >= FPS_GOAL) if s_ms else _goal_row(fps_goal, unmeasured, None))
    speed_row = (_goal_row(speed_goal, f"{t_ms / s_ms:.1f}x ({t_ms:g} vs {s_ms:g} ms Engine.infer p50 on a 640x480 "
                           f"frame; {label})", t_ms / s_ms >= SPEEDUP_GOAL) if s_ms and t_ms
                 else _goal_row(speed_goal, unmeasured, None))
    return [fps_row, speed_row]


def _evaluate_latency(run: str, m: dict | None) -> float | None:
    """The evaluate stage's Engine.infer p50 (ms, 640x480 frame, 1 thread) of the file this run ships."""
    if m is None:
        return None
    metrics, _ = _detection_engine(m, run)
    return metrics.get("latency_ms_p50_1thread_640x480")


def _bench_detection() -> tuple[dict | None, str]:
    """The deployed Penn-Fudan student's row of the last `make bench` (its detection group), or why there is none."""
    path = ROOT / "build" / "bench" / "model_latency.json"
    if not path.is_file():
        return None, "no `make bench` output in build/bench/"
    latency = json.loads(path.read_text())
    groups = {g["name"] for g in latency.get("groups", []) if g.get("task") == "detection"}
    if not groups:
        return None, "the last `make bench` has no detection group"
    for r in latency.get("ratios", []):
        # bench names a shipped model's row "deployed <file stem>"
        if r["group"] in groups and r["variant"] == f"deployed {PENNFUDAN_STUDENT}":
            teacher = next((v for v in latency.get("variants", [])
                            if v["group"] == r["group"] and v["name"] == "teacher"), {})
            # bench's detection goal counts the whole Engine.infer (NMS included); older output has only the session's
            frame = "frame_speedup_p50_1thread" in r
            return {"fps": r["frame_fps_1thread"], "frame_hw": r["frame_hw"],
                    "speedup": r["frame_speedup_p50_1thread" if frame else "speedup_p50_1thread"],
                    "speedup_of": "Engine.infer p50 on the camera frame, NMS included" if frame
                    else "onnxruntime session p50",
                    "variant": f"{r['group']} / {r['variant']}",
                    "teacher_weights": teacher.get("weights", "weights unknown")}, ""
    return None, f"the last `make bench` has no `deployed {PENNFUDAN_STUDENT}` row in its detection group"


def _detection_files(shipping: tuple[str, ...]) -> list[str]:
    """Each file `ship` would copy, with its size against the 25 MB budget (an fp32 teacher can exceed it)."""
    lines = ["Shipped files (`make_results.py ship` copies each one under 25 MB into `models/`):", ""]
    for run in shipping:
        path = RUNS / run / (_shipped_file(run) or "")
        if _finished_metrics(run) is None or not path.is_file():
            lines.append(f"- `{run}`: not finished")
            continue
        size = path.stat().st_size
        verdict = "ships" if size <= MAX_BYTES else "**over the 25 MB budget: `ship` skips it**"
        lines.append(f"- `{run}/{path.name}`: {size / 2**20:.1f} MB, {verdict}")
    return lines


def _detection_runs(runs: dict) -> list[str]:
    from robot_compress.compress.report import pruning_method

    lines = ["", "### Runs", "", "AP columns score the exported ONNX file through the Engine (the file `ship` "
             "copies where there is one); latency is the evaluate stage's Engine.infer p50 on one 640x480 frame, "
             "1 thread, on this shared 2-core CPU under training load. Training time is the run's own; the KD and "
             "no-KD students start from `pennfudan_student_labels` (its row has that time).", "",
             "| run | recipe | model | input | KD | pruning | AP % | AP50 % | AP75 % | params | p50 ms | epochs | "
             "training time |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for run, m in runs.items():
        if m is None:
            lines.append(f"| `{run}` | {_recipe_files().get(run, 'no recipe')} | {_unfinished(run)} "
                         "| | | | | | | | | | |")
            continue
        st = m["student"]
        em, scored = _detection_engine(m, run)
        torch = "" if "Engine" in scored else " (torch)"
        h, w = m["dataset"]["input_size"]
        lines.append(f"| `{run}` | {_recipe_files().get(run, 'no recipe')} | {st['model']} | {h}x{w} | "
                     f"{'yes' if st['kd'] else 'no'} | {pruning_method(m)} | {_pct(em.get('ap'))}{torch} | "
                     f"{_pct(em.get('ap50'))}{torch} | {_pct(em.get('ap75'))}{torch} | {st['params']['total']:,} | "
                     f"{em.get('latency_ms_p50_1thread_640x480', 'n/a')} | {_epochs(m)} | {_train_time(m)} |")
    return lines + _kd_effect(runs)


def _unfinished(run: str) -> str:
    """A run without metrics.json: started (its dir exists: training or stopped) or never run."""
    return "not finished (no metrics.json yet)" if (RUNS / run).is_dir() else "not run (no run dir)"


def _epochs(m: dict) -> int:
    return sum(x.get("epochs", 0) for x in m["stages"] if "epochs" in x)


def _train_time(m: dict) -> str:
    """'94 min cpu (run 95 min)': the CamVid and Penn-Fudan run tables' training-time cell."""
    from robot_compress.compress.report import run_seconds, training_seconds_by_device

    by_dev = ", ".join(f"{sec / 60:.0f} min {dev}" for dev, sec in training_seconds_by_device(m).items())
    return f"{by_dev} (run {run_seconds(m) / 60:.0f} min)".strip()


def _kd_effect(runs: dict) -> list[str]:
    """What KD buys: the deployed student minus its no-KD ablation (same start, cut and fine-tune)."""
    kd, nokd = runs[PENNFUDAN_STUDENT], runs["pennfudan_student_nokd"]
    if not (kd and nokd):
        return ["", "KD vs no KD: not finished (needs both `pennfudan_student` and `pennfudan_student_nokd`)."]
    a, b = _detection_engine(kd, PENNFUDAN_STUDENT)[0], _detection_engine(nokd, "pennfudan_student_nokd")[0]
    return ["", f"KD vs no KD (same start, cut and schedule): AP50 {100 * (a['ap50'] - b['ap50']):+.2f} pt, "
            f"AP {100 * (a['ap'] - b['ap']):+.2f} pt (KD minus no KD)."]


def _sweep_runs() -> list[dict]:
    """Every finished run (cells and bases) of the Penn-Fudan pruning sweep."""
    from robot_compress.compress.report import collect_runs

    root = RUNS / PENNFUDAN_SWEEP
    return collect_runs([root]) if root.is_dir() and any(root.rglob("metrics.json")) else []


def _detection_pruning() -> list[str]:
    """The paper's pruning curves for the detector: AP50 vs % pruned per criterion, table and figure."""
    lines = ["", "### Pruning curves (AP50 vs % of weights pruned)", "",
             f"`robot-compress sweep config/recipes/{PENNFUDAN_SWEEP}.yaml --out runs/{PENNFUDAN_SWEEP} --kd off "
             f"--amounts {' '.join(f'{a:g}' for a in PENNFUDAN_SWEEP_AMOUNTS)}`: each cell prunes the labels-trained "
             "SSDlite (unstructured, every conv of backbone and head) and fine-tunes it briefly on labels. Cells "
             "read the torch model's AP50 % after the fine-tune (in brackets: right after pruning, before it).", ""]
    swept = _sweep_runs()
    cells = [r for r in swept if r.get("pruning")]
    base = next((r for r in swept if not r.get("pruning")), None)
    bm = base and base["student"]["metrics"]
    lines.append(f"Base (the cells' start, 0 % pruned, before any fine-tune): AP50 {_pct(bm['ap50'])} %, "
                 f"AP {_pct(bm['ap'])} %." if bm else "Base: not finished.")
    if not cells:
        return lines + ["", f"Not finished: no cell of `runs/{PENNFUDAN_SWEEP}` has a metrics.json yet."]
    for kd in sorted({bool(r["student"].get("kd")) for r in cells}, reverse=True):
        lines += ["", _pruning_table(kd, [r for r in cells if bool(r["student"].get("kd")) == kd])]
    t_run = _shipping_run(PENNFUDAN_TEACHER)
    return lines + ["", _pruning_figure(swept, t_run, _finished_metrics(t_run))]


def _pruning_table(kd: bool, cells: list[dict]) -> str:
    """Rows: % pruned (the sweep's grid and any other amount found); columns: the three criteria."""
    at = {(r["pruning"]["criterion"], float(r["pruning"]["amount"])): r for r in cells}
    criteria = list(PENNFUDAN_CRITERIA) + sorted({c for c, _ in at} - set(PENNFUDAN_CRITERIA))
    amounts = sorted(set(PENNFUDAN_SWEEP_AMOUNTS) | {a for _, a in at})
    rows = [f"KD {'on' if kd else 'off'}:", "", "| % pruned | " + " | ".join(criteria) + " |",
            "|---:|" + "---:|" * len(criteria)]
    for a in amounts:
        rows.append(f"| {100 * a:g} | " + " | ".join(_cell(at.get((c, a))) for c in criteria) + " |")
    return "\n".join(rows)


def _cell(r: dict | None) -> str:
    if r is None:
        return "not finished"
    after = (r["pruning"].get("after_pruning") or {}).get("ap50")
    return _pct(r["student"]["metrics"]["ap50"]) + ("" if after is None else f" ({_pct(after)})")


def _pruning_figure(swept: list[dict], t_run: str, teacher: dict | None) -> str:
    """docs/figures/pennfudan_pruning.png with report.py's pruning plot (criterion colours, no-retrain dotted,
    teacher and 0 % lines); returns its markdown link."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from robot_compress.compress.report import baselines, draw_pruning_plot, no_retrain_series, pruning_series

    per_kd = {(kd, src): crit for (_, _, kd, src), crit in pruning_series(swept).items()}
    raw = {(kd, src): crit for (_, _, kd, src), crit in no_retrain_series(swept).items()}
    student = swept[0]["student"]["model"]
    reference = dict(baselines(swept).get(("detection", student), {"dense": {}}))
    if teacher:  # the sweep has no teacher of its own: draw the edge teacher's AP50 for scale
        reference["teacher"] = (teacher["student"]["model"], _detection_engine(teacher, t_run)[0]["ap50"])
    fig, ax = plt.subplots(figsize=(6, 4))
    draw_pruning_plot(ax, per_kd, "pruned", raw, reference)
    ax.set_xlabel("% of weights pruned")
    ax.set_ylabel("AP50 (%)")
    ax.set_title(f"Penn-Fudan {student}: AP50 vs % pruned")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    out = ROOT / "docs" / "figures" / PENNFUDAN_FIGURE
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return f"![Penn-Fudan AP50 vs % pruned](figures/{PENNFUDAN_FIGURE})"


def write_detection_section() -> None:
    """Replace the detection block of docs/RESULTS.md; the first time, put it right after the CamVid block."""
    _write_block(DETECTION_BEGIN, DETECTION_END, detection_section(), after=CAMVID_END)


REPRO = RUNS / "repro"  # reruns of finished recipes into a mirror tree: runs/repro/X reruns runs/X


def repro_check() -> list[str]:
    """Issue 7's honesty check: a rerun of a short recipe must reproduce its metric within noise."""
    lines = ["## Reproducibility", ""]
    pairs = sorted(REPRO.rglob("metrics.json")) if REPRO.is_dir() else []
    if not pairs:
        return lines + ["No rerun under `runs/repro/` yet.", ""]
    lines += ["Each row reruns a finished run from scratch with the same recipe and seeds (different process, "
              "same machine) into `runs/repro/`, and compares the validation metric of the two.", "",
              "| run | metric | original % | rerun % | difference pt |", "|---|---|---|---|---|"]
    for rerun in pairs:
        rel = rerun.relative_to(REPRO)
        original = RUNS / rel
        if not original.is_file():
            continue
        a, b = json.loads(original.read_text()), json.loads(rerun.read_text())
        key = a["primary"]
        va, vb = a["student"]["metrics"][key], b["student"]["metrics"][key]
        lines.append(f"| `{rel.parent}` | {key} | {100 * va:.2f} | {100 * vb:.2f} | {100 * (vb - va):+.2f} |")
    return lines + [""]


def _reported_runs(text: str) -> set[str]:
    """The run names in a RESULTS.md's "All runs" table (its first column)."""
    rows, inside = set(), False
    for line in text.splitlines():
        if line.startswith("## "):
            inside = line.startswith("## All runs")
        elif inside and line.startswith("| ") and not line.startswith(("| run |", "|---")):
            rows.add(line.split("|")[1].strip())
    return rows


def report(allow_dropping: bool = False) -> None:
    """Regenerate all of RESULTS.md from runs/. Runs that the page reports but this machine lacks (trained on
    another machine) would silently drop out of it: refused, naming them, unless `allow_dropping`."""
    from robot_compress.compress.report import write_report

    runs = [p for p in sorted(RUNS.iterdir()) if p.is_dir() and p != REPRO and any(p.rglob("metrics.json"))]
    figures = ROOT / "docs" / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    page = ROOT / "docs" / "RESULTS.md"
    with tempfile.TemporaryDirectory() as tmp:
        text = write_report(runs, tmp).read_text()
        lost = _reported_runs(page.read_text()) - _reported_runs(text) if page.is_file() else set()
        if lost and not allow_dropping:  # checked before anything under docs/ changes
            sys.exit(f"refusing to rewrite {page}: {len(lost)} reported run(s) have no metrics.json under {RUNS} "
                     f"(e.g. {', '.join(sorted(lost)[:3])}), so their rows would be lost; regenerate only the "
                     "blocks (`make_results.py camvid` / `detection`), copy those runs here, or pass "
                     "--allow-dropping")
        for png in Path(tmp).glob("*.png"):
            shutil.copyfile(png, figures / png.name)
            text = text.replace(f"]({png.name})", f"](figures/{png.name})")
    text = text.replace(str(ROOT) + "/", "")
    header = (ROOT / "docs" / "results_header.md").read_text()
    goals = "\n".join(goal_check() + camvid_section() + [""] + detection_section() + [""] + repro_check())
    page.write_text(header.rstrip() + "\n\n" + goals + "\n" + text)
    print(f"wrote {page}")


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else "report"
    if command == "report":
        report(allow_dropping="--allow-dropping" in sys.argv[2:])
    else:
        {"ship": ship, "camvid": write_camvid_section, "detection": write_detection_section}[command]()
