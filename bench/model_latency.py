"""Model latency side by side: teacher vs student vs unstructured-pruned vs structured-pruned vs INT8 vs
structured + INT8, batch 1, onnxruntime CPU through the runtime Engine, 1 and 2 intra-op threads. Not a test.

    .venv/bin/python bench/model_latency.py [--quick] [--out build/bench/model_latency.json]

Weights: the trained models in models/ (their cards give accuracy) and the trained checkpoints in runs/
when present; otherwise the same architectures with random weights (the table says so and gives no
accuracy). Variants made here (pruned, INT8) are scored on the recipe's validation split through the
Engine when the weights are trained and ../shared holds the data; nothing is scored otherwise.

Timing: all variants of one group are loaded at once and timed in interleaved blocks, so machine-load
drifts hit them alike; warm-up runs are excluded. `session` = onnxruntime on the bound input only;
`frame` = Engine.infer on a frame at the robot's resolution (resize, normalise, run, argmax/top-k,
mask back to frame size). Peak RSS: VmHWM of a fresh process that loads the model and runs it.
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from robot_compress.dataset_constants import (  # noqa: E402  (after the sys.path insert above)
    CAMVID_LABELS,
    CIFAR10_LABELS,
    IMAGENET_MEAN,
    IMAGENET_STD,
)


@dataclass
class DataRef:
    kind: str
    root: str  # relative to the repository root
    input_size: tuple[int, int]
    val_fraction: float | None = None  # carve validation from train (CIFAR-10: it has no other split here)
    seed: int = 0
    val_split: str | None = None  # or the dataset's own split (CamVid: val), scored at the frames' native size

    def train_and_val(self, raw_uint8: bool = False):
        """(train, val) exactly as the recipes split them; a native-size val split yields camera frames."""
        from robot_compress.compress.data import load_dataset, split_train_val

        root = str(REPO / self.root)
        ds, _ = load_dataset(self.kind, root, input_size=self.input_size, train=True, raw_uint8=raw_uint8)
        if self.val_split is None:
            return split_train_val(ds, self.val_fraction, self.seed)
        val, _ = load_dataset(self.kind, root, input_size=self.input_size, train=False, split=self.val_split,
                              raw_uint8=raw_uint8, native=True)
        return ds, val

    def describe(self) -> str:
        if self.val_split is None:
            return f"val split {self.val_fraction:.0%} of train, seed {self.seed}"
        return f"{self.kind}'s own {self.val_split} split, scored at frame size"


@dataclass
class Group:
    """One teacher/student pair at one model input size."""
    name: str
    task: str
    labels: list[str]
    input_size: tuple[int, int]  # model input (h, w)
    frame_hw: tuple[int, int]  # the robot's camera frame
    teacher_arch: str
    student_arch: str
    teacher_onnx: list[str] = field(default_factory=list)  # globs under the repo; used if the input size fits
    teacher_ckpt: list[str] = field(default_factory=list)
    teacher_passes: int = 1  # forward passes of teacher_arch per frame in the shipped teacher (test-time flip: 2)
    student_ckpt: list[str] = field(default_factory=list)
    deployed_onnx: list[str] = field(default_factory=list)  # shipped students, shown as extra rows
    finetuned_onnx: list[str] = field(default_factory=list)  # outputs of the structured + KD recipes, if run
    data: DataRef | None = None
    ignore_index: int | None = None
    structured_ratio: float = 0.5
    unstructured_amount: float = 0.9
    arch_cfg: dict = field(default_factory=dict)
    note: str = ""  # shown under the group's table


def default_groups() -> list[Group]:
    cifar = DataRef("cifar10", "../shared/data/cifar10-jpeg-train.zip", (32, 32), 0.1)
    cls = Group("cifar10 32x32", "classification", CIFAR10_LABELS, (32, 32), (32, 32), "resnet56", "resnet20",
                teacher_onnx=["models/cifar10_resnet56_teacher.onnx"],
                teacher_ckpt=["runs/cifar10_resnet56_teacher_jpeg/student.pt"],
                student_ckpt=["runs/cifar10_resnet20_kd_full_int8/student.pt",  # the most accurate dense KD student
                              "runs/cifar10_resnet20_sweep/base-kd/student.pt",
                              "runs/cifar10_resnet20_sweep/base-kd/checkpoints/*distill_student.pt"],
                deployed_onnx=["models/cifar10_resnet20*.onnx", "models/cifar10_resnet32*.onnx"],
                finetuned_onnx=["runs/cifar10_resnet20_structured50_kd_int8/*.onnx"], data=cifar)
    # CamVid: the edge teacher and the robot's student, both at the camera's 360x480, scored on CamVid's own val
    # split at frame size (config/recipes/camvid_*.yaml).
    seg = Group("camvid 360x480", task="segmentation", labels=CAMVID_LABELS, input_size=(360, 480),
                frame_hw=(360, 480), teacher_arch="lraspp_mobilenet_v3_large",
                student_arch="lraspp_mobilenet_v3_large", teacher_passes=2,  # the edge teacher averages flips
                teacher_onnx=["models/camvid_teacher_fp16.onnx", "runs/camvid_teacher/camvid_teacher.onnx"],
                teacher_ckpt=["runs/camvid_student_labels/student.pt"],
                student_ckpt=["runs/camvid_student_labels/student.pt"],
                deployed_onnx=["models/camvid_lraspp_student.onnx",
                               "runs/camvid_lraspp_student/camvid_lraspp_student.onnx"],
                finetuned_onnx=["runs/camvid_lraspp_student_nokd/*.onnx"],
                data=DataRef("camvid", "../shared/data/camvid-trainval.zip", (360, 480), val_split="val"),
                ignore_index=11)
    return [cls, seg]


def tiny_groups() -> list[Group]:
    """Seconds-fast stand-ins (tests, --tiny): the same variants on few-thousand-parameter models."""
    return [
        Group("tiny cls 32x32", "classification", CIFAR10_LABELS, (32, 32), (32, 32), "tiny_cnn", "tiny_cnn",
              arch_cfg={"teacher": {"width": 16}, "student": {"width": 8}}),
        Group("tiny seg 36x48", "segmentation", CAMVID_LABELS, (36, 48), (72, 96), "tiny_segnet", "tiny_segnet",
              arch_cfg={"teacher": {"width": 16}, "student": {"width": 8}}),
    ]


@dataclass
class Variant:
    group: str
    name: str
    path: str
    weights: str  # "trained (<source>)" or "random"
    accuracy: dict = field(default_factory=dict)  # {"metric": ..., "value": ..., "n": ..., "source": ...}
    accuracy_note: str = ""
    params: int | None = None
    macs: int | None = None
    size_mb: float = 0.0
    timing: dict = field(default_factory=dict)  # threads -> {session_p50, session_p95, frame_p50, frame_p95, runs}
    peak_rss_mb: float | None = None


# ------------------------------------------------------------------------------------------ building

def _first(patterns) -> Path | None:
    for pattern in patterns:
        hits = sorted(glob.glob(str(REPO / pattern)))
        if hits:
            return Path(hits[0])
    return None


def _onnx_input_hw(path) -> tuple[int, int] | None:
    import onnx

    dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    h, w = dims[2].dim_value, dims[3].dim_value
    return (h, w) if h and w else None


def _card_accuracy(onnx_path: Path) -> dict:
    """Accuracy from the model card beside the file, else from the run's metrics.json (INT8 files have no card)."""
    card = onnx_path.with_suffix(".json")
    if card.is_file():
        found = _accuracy(json.loads(card.read_text(encoding="utf-8")).get("metrics", {}), f"card {card.name}")
        if found:
            return found
    run_metrics = onnx_path.parent / "metrics.json"
    if run_metrics.is_file():
        for entry in json.loads(run_metrics.read_text(encoding="utf-8")).get("onnx") or []:
            if entry.get("path") == onnx_path.name and entry.get("metrics"):
                return _accuracy(entry["metrics"], f"{run_metrics.relative_to(REPO)}")
    return {}


def _card_params(onnx_path: Path) -> int | None:
    """Nonzero parameter count from the model card (an INT8 file shares its FP32 source's card)."""
    for card in (onnx_path.with_suffix(".json"), onnx_path.with_name(onnx_path.stem.removesuffix("_int8") + ".json")):
        if card.is_file():
            nonzero = json.loads(card.read_text(encoding="utf-8")).get("params", {}).get("nonzero")
            if nonzero is not None:
                return int(nonzero)
    return None


def _run_macs(onnx_path: Path) -> int | None:
    """MACs after structured pruning, from the run's metrics.json (None when the run did not record it)."""
    run_metrics = onnx_path.parent / "metrics.json"
    if not run_metrics.is_file():
        return None
    report = (json.loads(run_metrics.read_text(encoding="utf-8")).get("structured") or {}).get("report") or {}
    return report.get("macs_after")


def _finished_checkpoint(patterns) -> Path | None:
    """The first checkpoint whose run finished (its run dir has metrics.json, written only at the end):
    a checkpoint of a run still training is a moving target, not a result."""
    for pattern in patterns:
        for hit in sorted(glob.glob(str(REPO / pattern))):
            path = Path(hit)
            run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
            if (run_dir / "metrics.json").is_file():
                return path
    return None


def _accuracy(metrics: dict, source: str) -> dict:
    """The primary metric (top-1; global pixel accuracy, the paper's) plus mIoU where there is one."""
    for key in ("top1", "pixel_acc"):
        if key in metrics:
            out = {"metric": key, "value": float(metrics[key]), "n": metrics.get("n"), "source": source}
            if "miou" in metrics:
                out["miou"] = float(metrics["miou"])
            return out
    return {}


def _info(group: Group):
    from robot_compress.compress.data import DatasetInfo

    return DatasetInfo(task=group.task, labels=list(group.labels), input_size=tuple(group.input_size),
                       mean=IMAGENET_MEAN, std=IMAGENET_STD, ignore_index=group.ignore_index,
                       fingerprint="bench", source="bench/model_latency.py")


def _torch_model(group: Group, role: str):
    """(model, weights description) from the first trained checkpoint found, else random weights."""
    from robot_compress.compress.models import get_model
    from robot_compress.compress.pruning import is_pruned, make_permanent
    from robot_compress.compress.train import load_weights

    arch = group.teacher_arch if role == "teacher" else group.student_arch
    model = get_model(arch, len(group.labels), **group.arch_cfg.get(role, {}))
    ckpt = _finished_checkpoint(group.teacher_ckpt if role == "teacher" else group.student_ckpt)
    weights = "random"
    if ckpt is not None:
        load_weights(model, ckpt)
        weights = f"trained ({ckpt.relative_to(REPO)})"
        if is_pruned(model):
            make_permanent(model)
    if role == "teacher" and group.teacher_passes == 2:
        from robot_compress.compress.tta import FlipAveraged

        model = FlipAveraged(model)
    return model.eval(), weights


def _export(model, group: Group, path: Path, model_id: str) -> Path:
    from robot_compress.compress.export import export_onnx

    export_onnx(model, path, _info(group), model_id=model_id, recipe="bench/model_latency.py", verify_batches=1,
                atol=1e-2)
    return path


def _calibration(group: Group, shared_ok: bool, n: int) -> tuple[list[np.ndarray], str]:
    """Normalised NCHW float32 calibration inputs: real training frames when ../shared has them."""
    if shared_ok and group.data is not None:
        from robot_compress.compress.quantize import calibration_arrays

        train, _ = group.data.train_and_val()
        arrays = calibration_arrays(train, n, seed=0)
        return arrays, f"{len(arrays)} real training frames"
    rng = np.random.default_rng(0)
    h, w = group.input_size
    mean = np.asarray(IMAGENET_MEAN, np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(IMAGENET_STD, np.float32).reshape(1, 3, 1, 1)
    arrays = [((rng.integers(0, 256, (1, 3, h, w)) / 255.0 - mean) / std).astype(np.float32) for _ in range(n)]
    return arrays, f"{n} synthetic frames"


def _shared_ok(group: Group) -> bool:
    return group.data is not None and (REPO / group.data.root).is_file()


def build_variants(group: Group, work: Path, calib_n: int = 64, log=print) -> list[Variant]:
    """Export every variant of a group into `work`; returns them (not yet timed)."""
    import copy

    import torch

    from robot_compress.compress.pruning import make_permanent, prune_model
    from robot_compress.compress.quantize import quantize_onnx
    from robot_compress.compress.structured import structured_prune

    work.mkdir(parents=True, exist_ok=True)
    slug = group.name.replace(" ", "_")
    h, w = group.input_size
    example = torch.zeros(1, 3, h, w)
    out: list[Variant] = []

    shipped = _first(group.teacher_onnx)
    if shipped is not None and _onnx_input_hw(shipped) == tuple(group.input_size):
        from robot_compress.compress.models import get_model

        arch_macs = _count(get_model(group.teacher_arch, len(group.labels), **group.arch_cfg.get("teacher", {})),
                           example)[0] * group.teacher_passes  # MACs follow from the architecture
        out.append(Variant(group.name, "teacher", str(shipped), f"trained ({shipped.relative_to(REPO)})",
                           _card_accuracy(shipped), params=_card_params(shipped), macs=arch_macs))
    else:
        teacher, weights = _torch_model(group, "teacher")
        path = _export(teacher, group, work / f"{slug}_teacher.onnx", f"{slug}_teacher")
        out.append(Variant(group.name, "teacher", str(path), weights, params=_count(teacher, example)[1],
                           macs=_count(teacher, example)[0]))
    log(f"  {group.name}: teacher ready")

    student, weights = _torch_model(group, "student")
    macs, params = _count(student, example)
    dense = _export(student, group, work / f"{slug}_student.onnx", f"{slug}_student")
    out.append(Variant(group.name, "student", str(dense), weights, params=params, macs=macs))

    sparse_model = copy.deepcopy(student)
    prune_model(sparse_model, "class-blind", group.unstructured_amount)
    make_permanent(sparse_model)
    sparse = _export(sparse_model, group, work / f"{slug}_student_unstructured.onnx", f"{slug}_student_unstr")
    nonzero = int(sum(int((p != 0).sum()) for p in sparse_model.parameters()))
    out.append(Variant(group.name, f"student unstructured {group.unstructured_amount:.0%} (class-blind)",
                       str(sparse), weights, params=nonzero, macs=macs))

    slim_model = copy.deepcopy(student)
    report = structured_prune(slim_model, example, group.structured_ratio)
    slim = _export(slim_model, group, work / f"{slug}_student_structured.onnx", f"{slug}_student_struct")
    out.append(Variant(group.name, f"student structured {group.structured_ratio:.0%} (no fine-tune)", str(slim),
                       weights, params=report["params_after"], macs=report["macs_after"]))
    log(f"  {group.name}: student, unstructured, structured ready")

    arrays, calib_note = _calibration(group, _shared_ok(group), calib_n)
    for src, name, p, m in ((dense, "student INT8", params, macs),
                            (slim, f"student structured {group.structured_ratio:.0%} + INT8",
                             report["params_after"], report["macs_after"])):
        q = quantize_onnx(src, src.with_name(src.stem + "_int8.onnx"), arrays, per_channel=True, preprocess=True)
        v = Variant(group.name, name, str(q), weights, params=p, macs=m)
        v.accuracy_note = f"calibrated on {calib_note}"
        out.append(v)
    log(f"  {group.name}: INT8 ready ({calib_note})")

    seen = set()  # a shipped model is also its recipe's output in runs/: time it once, as "deployed"
    for label, patterns in (("deployed", group.deployed_onnx), ("fine-tuned", group.finetuned_onnx)):
        for pattern in patterns:
            for hit in sorted(glob.glob(str(REPO / pattern))):
                path = Path(hit)
                name = f"{label} {path.stem}"
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                # A segmentation model takes the camera frame at any input size (Engine resizes it and the mask
                # back, scored at frame size); a classifier's frames come at its input size.
                other_size = group.task != "segmentation" and _onnx_input_hw(path) != tuple(group.input_size)
                if other_size or any(v.name == name for v in out) or digest in seen:
                    continue  # another size, or the same model already found under models/
                seen.add(digest)
                out.append(Variant(group.name, name, str(path),
                                   f"trained ({path.relative_to(REPO)})", _card_accuracy(path),
                                   params=_card_params(path), macs=_run_macs(path)))
    for v in out:
        v.size_mb = Path(v.path).stat().st_size / 1e6
    return out


def _count(model, example) -> tuple[int, int]:
    import torch_pruning as tp

    macs, params = tp.utils.count_ops_and_params(model, example)
    return int(macs), int(params)


# ------------------------------------------------------------------------------------------ measuring

def frame_for(group: Group, seed: int = 0) -> np.ndarray:
    """A camera frame at the robot's resolution: a real validation frame when ../shared has one."""
    if _shared_ok(group):
        from robot_compress.compress.data import load_dataset

        ds, _ = load_dataset(group.data.kind, str(REPO / group.data.root), input_size=group.frame_hw,
                             train=group.data.val_split is None, raw_uint8=True,
                             **({"split": group.data.val_split} if group.data.val_split else {}))
        return np.ascontiguousarray(np.asarray(ds[seed][0]), dtype=np.uint8)
    h, w = group.frame_hw
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([(xx * 255 // max(w - 1, 1)), (yy * 255 // max(h - 1, 1)), ((xx + yy) % 256)], axis=-1)
    return rgb.astype(np.uint8)


def _pct(values) -> tuple[float, float]:
    arr = np.asarray(values, np.float64)
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 95))


def time_group(variants: list[Variant], frame: np.ndarray, threads: int, runs: int, warmup: int = 10,
               block: int = 10, max_seconds: float | None = None) -> None:
    """Interleaved blocks of `block` runs per variant until each has `runs` session and frame timings.

    `max_seconds` bounds a very slow group: runs stop early (at least 30 each) and the count is recorded.
    """
    from robot_compress.runtime.engine import Engine

    engines = [Engine(v.path, threads=threads) for v in variants]
    for eng in engines:
        for _ in range(warmup):
            eng.infer(frame)
    session = defaultdict(list)
    full = defaultdict(list)
    t_start = time.monotonic()
    done = 0
    while done < runs:
        for k, eng in enumerate(engines):
            eng.preprocess(frame)
            for _ in range(block):
                t0 = time.perf_counter()
                eng.run_preprocessed()
                session[k].append((time.perf_counter() - t0) * 1000.0)
            for _ in range(max(1, block // 2)):
                t0 = time.perf_counter()
                eng.infer(frame)
                full[k].append((time.perf_counter() - t0) * 1000.0)
        done += block
        if max_seconds and done >= 30 and time.monotonic() - t_start > max_seconds:
            break
    for k, v in enumerate(variants):
        s50, s95 = _pct(session[k])
        f50, f95 = _pct(full[k])
        v.timing[str(threads)] = {"session_p50": s50, "session_p95": s95, "frame_p50": f50, "frame_p95": f95,
                                  "runs": len(session[k]), "frame_runs": len(full[k])}


_RSS_CHILD = """
import json, resource, sys
import numpy as np
from robot_compress.runtime.engine import Engine
path, h, w = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
if path != "-":
    eng = Engine(path, threads=1)
    frame = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    for _ in range(10):
        eng.infer(frame)
else:
    import onnxruntime  # noqa: F401 - the floor: interpreter + runtime imports, no model
hwm = [ln for ln in open("/proc/self/status") if ln.startswith("VmHWM:")]
print(json.dumps({"vmhwm_kb": int(hwm[0].split()[1]) if hwm else None,
                  "ru_maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def peak_rss_mb(path: str | None, frame_hw) -> float:
    """Peak RSS (MB) of a fresh interpreter that loads `path` in an Engine and runs 10 frames ("-": none).

    The child's VmHWM, not its ru_maxrss: Linux carries the forking parent's high-water mark across exec into
    ru_maxrss, so a child of this (torch-loaded) process would report the parent's size. Where /proc is
    missing, ru_maxrss is the fallback."""
    out = subprocess.run([sys.executable, "-c", _RSS_CHILD, path or "-", str(frame_hw[0]), str(frame_hw[1])],
                         capture_output=True, text=True, timeout=300, cwd=str(REPO), check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    return (got["vmhwm_kb"] or got["ru_maxrss_kb"]) / 1024.0


def hot_ops(path: str, frame: np.ndarray, runs: int = 20, top: int = 6) -> list[dict]:
    """onnxruntime's profiler (SessionOptions.enable_profiling), 1 thread: share of node time per op type."""
    import onnxruntime as ort

    from robot_compress.runtime.engine import Engine

    x = Engine(path, threads=1).preprocess(frame).copy()
    with tempfile.TemporaryDirectory(prefix="ort_prof_") as tmp:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "prof")
        opts.log_severity_level = 3
        sess = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        for _ in range(runs):
            sess.run(None, {name: x})
        events = json.loads(Path(sess.end_profiling()).read_text())
    per_op = defaultdict(float)
    for ev in events:
        if ev.get("cat") == "Node" and ev.get("name", "").endswith("_kernel_time"):
            per_op[ev.get("args", {}).get("op_name", "?")] += ev.get("dur", 0)
    total = sum(per_op.values()) or 1.0
    ranked = sorted(per_op.items(), key=lambda kv: -kv[1])[:top]
    return [{"op": op, "share": dur / total, "ms_per_run": dur / 1000.0 / runs} for op, dur in ranked]


def evaluate_variant(v: Variant, group: Group, limit: int | None = None) -> None:
    """Score a trained-weights variant on the recipe's validation split through the Engine (at the frames'
    native size where the recipes score there)."""
    from robot_compress.compress.evaluate import evaluate_onnx

    _, val = group.data.train_and_val(raw_uint8=True)
    if limit is not None and limit < len(val):
        from torch.utils.data import Subset

        val = Subset(val, list(range(limit)))
    m = evaluate_onnx(v.path, val, threads=1, at_frame_size=group.data.val_split is not None)
    m["n"] = len(val)
    v.accuracy = _accuracy(m, f"measured here, {group.data.describe()}")


# ------------------------------------------------------------------------------------------ driver

def run(groups: list[Group], work: Path, runs: int, threads=(1, 2), evaluate: bool = True, rss: bool = True,
        profile: bool = True, eval_limit: int | None = None, max_seconds: float | None = None, log=print) -> dict:
    variants: list[Variant] = []
    frames = {}
    for group in groups:
        log(f"building {group.name} ...")
        built = build_variants(group, work)
        frames[group.name] = frame_for(group)
        if evaluate and _shared_ok(group):
            for v in built:
                if not v.accuracy and v.weights.startswith("trained"):
                    log(f"  scoring {v.name} ...")
                    evaluate_variant(v, group, eval_limit)
        for v in built:
            if not v.accuracy and not v.weights.startswith("trained"):
                v.accuracy_note = ("n/a (random weights)" + (f"; {v.accuracy_note}" if v.accuracy_note else ""))
        for t in threads:
            log(f"timing {group.name}, {t} thread(s) ...")
            time_group(built, frames[group.name], t, runs, max_seconds=max_seconds)
        if rss:
            for v in built:
                v.peak_rss_mb = peak_rss_mb(v.path, group.frame_hw)
        variants += built
    result = {"variants": [asdict(v) for v in variants], "groups": [asdict(g) for g in groups],
              "rss_floor_mb": peak_rss_mb(None, (1, 1)) if rss else None, "ratios": ratios(variants, groups),
              "profile": {}, "profile_deployed": {}}
    if profile:
        for group in groups:
            best = fastest_student(variants, group.name)
            if best is not None:
                result["profile"][group.name] = {"variant": best.name, "ops": hot_ops(best.path, frames[group.name])}
            # the shipped students too: where a speed goal misses, the one within the accuracy budget is the
            # model whose hot spot explains it
            result["profile_deployed"][group.name] = [
                {"variant": v.name, "ops": hot_ops(v.path, frames[group.name])} for v in variants
                if v.group == group.name and v.name.startswith("deployed") and v is not best]
    return result


def fastest_student(variants: list[Variant], group_name: str, threads: str = "1") -> Variant | None:
    students = [v for v in variants if v.group == group_name and v.name != "teacher"]
    return min(students, key=lambda v: v.timing[threads]["frame_p50"], default=None)


def ratios(variants: list[Variant], groups: list[Group]) -> list[dict]:
    """Speedup of every student variant over its teacher at session p50, 1 thread; fps for frames."""
    rows = []
    for group in groups:
        mine = [v for v in variants if v.group == group.name]
        teacher = next((v for v in mine if v.name == "teacher"), None)
        if teacher is None or "1" not in teacher.timing:
            continue
        t50 = teacher.timing["1"]["session_p50"]
        for v in mine:
            if v is teacher:
                continue
            s50 = v.timing["1"]["session_p50"]
            rows.append({"group": group.name, "variant": v.name, "speedup_p50_1thread": t50 / s50,
                         "frame_fps_1thread": 1000.0 / v.timing["1"]["frame_p50"],
                         "frame_hw": list(group.frame_hw)})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="30 runs per variant, no scoring, no RSS/profile")
    ap.add_argument("--tiny", action="store_true", help="tiny stand-in models (seconds; for tests)")
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--work", type=Path, default=REPO / "build" / "bench" / "models")
    ap.add_argument("--out", type=Path, default=REPO / "build" / "bench" / "model_latency.json")
    ap.add_argument("--eval-limit", type=int, default=None, help="score at most this many validation items")
    args = ap.parse_args(argv)
    groups = tiny_groups() if args.tiny else default_groups()
    runs = 30 if args.quick else args.runs
    if runs < 10:
        ap.error(f"--runs must be >= 10, got {runs}")
    result = run(groups, args.work, runs, evaluate=not args.quick, rss=not args.quick, profile=not args.quick,
                 eval_limit=args.eval_limit, log=lambda s: print(s, file=sys.stderr, flush=True))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1), encoding="utf-8")
    for v in result["variants"]:
        t1 = v["timing"]["1"]
        print(f"{v['group']:16} {v['name']:45} {t1['session_p50']:8.2f} ms  {t1['frame_p50']:8.2f} ms frame  "
              f"{v['size_mb']:7.2f} MB  {v['accuracy'].get('value', v['accuracy_note'])}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
