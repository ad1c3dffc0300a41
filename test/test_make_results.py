"""docs/make_results.py's CamVid block: goals computed from the runs' metrics.json, never typed."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytestmark = pytest.mark.toolkit
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def make_results(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("make_results", ROOT / "docs" / "make_results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(module, "ROOT", tmp_path)
    return module


def _run(runs: Path, name: str, model: str, pixel_acc: float, miou: float, nonzero: int, kd: bool = False,
         onnx_kind: str = "fp32", onnx_shift: float = 0.0):
    """A finished run; its ONNX file scores `onnx_shift` above the torch model."""
    metrics = {"student": {"model": model, "kd": kd, "params": {"nonzero": nonzero},
                           "metrics": {"pixel_acc": pixel_acc, "miou": miou, "class_acc": 0.5,
                                       "iou_per_class": [miou] * 3}},
               "dataset": {"labels": ["a", "b", "c"]}, "stages": [{"stage": "train", "epochs": 4,
                                                                  "train_seconds_by_device": {"cpu": 600.0}}],
               "onnx": [{"kind": onnx_kind, "path": f"{name}.onnx",
                         "metrics": {"pixel_acc": pixel_acc + onnx_shift, "miou": miou + onnx_shift}}]}
    (runs / name).mkdir(parents=True)
    (runs / name / "metrics.json").write_text(json.dumps(metrics))


def test_goals_are_computed_from_the_runs(make_results, tmp_path):
    runs = tmp_path / "runs"
    # The goals read the shipped files (the teacher's float16 copy, the student's robot-size export)
    _run(runs, make_results.CAMVID_TEACHER, "deeplabv3_mobilenet_v3_large", 0.89, 0.55, 11_000_000,
         onnx_kind="fp16_weights", onnx_shift=0.01)
    _run(runs, "camvid_lraspp_student", "lraspp_mobilenet_v3_large", 0.88, 0.49, 840_000, kd=True,
         onnx_shift=-0.01)
    text = "\n".join(make_results.camvid_section())
    assert "| edge teacher mIoU >= 55 % | 56.00 % | yes |" in text
    assert "| student mIoU >= 50 % | 48.00 % | **no** |" in text
    assert "87.00 % vs 90.00 % (+3.00 pt) | **no** |" in text  # 3 pt below the teacher: outside 2 pt
    assert "(92.4 % fewer) | yes |" in text
    assert "| `camvid_lraspp_student_nokd` | not finished |" in text
    assert "no `make bench` output" in text


def test_the_block_replaces_only_itself(make_results, tmp_path):
    (tmp_path / "docs").mkdir()
    page = tmp_path / "docs" / "RESULTS.md"
    page.write_text("before\n<!-- camvid:begin -->\nstale 12.34 %\n<!-- camvid:end -->\nafter\n")
    make_results.write_camvid_section()
    text = page.read_text()
    assert text.startswith("before\n<!-- camvid:begin -->") and text.endswith("<!-- camvid:end -->\nafter\n")
    assert "stale" not in text and "| `camvid_teacher` | not finished |" in text


# ---------------------------------------------------------------- Penn-Fudan detection block (issue 14)

def _det_run(runs: Path, name: str, model: str, ap50: float, total: int, kd: bool = False,
             latency_ms: float | None = None, onnx_file: str | None = None, torch_ap50: float = 0.01):
    """A finished detection run whose ONNX file (named as `ship` expects) scores `ap50` through the Engine; the
    torch model scores `torch_ap50`, so a table that reads the wrong one shows it."""
    engine = {"images": 24, "ground_truth": 66, "ap": ap50 / 2, "ap50": ap50, "ap75": ap50 / 3, "primary": "ap50"}
    if latency_ms is not None:
        engine["latency_ms_p50_1thread_640x480"] = latency_ms
    onnx_file = onnx_file or f"{name}.onnx"
    metrics = {"name": name, "task": "detection", "primary": "ap50",
               "student": {"model": model, "kd": kd, "params": {"total": total, "nonzero": total},
                           "metrics": {"ap": torch_ap50, "ap50": torch_ap50, "ap75": torch_ap50}},
               "dataset": {"input_size": [320, 320], "labels": ["person"]},
               "stages": [{"stage": "train", "epochs": 6, "seconds": 700.0, "train_seconds": 660.0,
                           "train_seconds_by_device": {"cpu": 660.0}}],
               "onnx": [{"kind": "fp32", "path": onnx_file, "metrics": engine}]}
    (runs / name).mkdir(parents=True)
    (runs / name / "metrics.json").write_text(json.dumps(metrics))
    (runs / name / onnx_file).write_bytes(b"\0" * 1000)


def _cell(runs: Path, criterion: str, amount: float, ap50: float, after: float):
    """A finished cell of the Penn-Fudan no-KD sweep: `ap50` after the fine-tune, `after` right after pruning."""
    m = {"name": f"pennfudan_prune_sweep-nokd-{criterion}-{amount:g}", "task": "detection", "primary": "ap50",
         "tags": {"kd": False, "sweep": "pennfudan_prune_sweep"},
         "student": {"model": "ssdlite_mobilenet_v3_large", "kd": False, "params": {"effective": 100},
                     "metrics": {"ap": ap50 / 2, "ap50": ap50}, "before_pruning": {"ap50": 0.70}},
         "pruning": {"criterion": criterion, "amount": amount, "after_pruning": {"ap50": after}}}
    d = runs / "pennfudan_prune_sweep" / "nokd" / criterion / f"{amount:g}"
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps(m))


def _teacher_and_student(make_results, runs: Path, ap50: float = 0.76, **student):
    """The teacher run and file SHIPPED names (fp32 training run or float16 re-export), and the KD student."""
    teacher = make_results._shipping_run("pennfudan_teacher")
    _det_run(runs, teacher, "fcos_mobilenet_v3_large_fpn", 0.80, 11_000_000, latency_ms=150.0,
             onnx_file=make_results._shipped_file(teacher))
    _det_run(runs, "pennfudan_student", "ssdlite_mobilenet_v3_large", ap50, 1_000_000, kd=True, **student)
    return teacher


def test_detection_goals_are_computed_from_the_shipped_files(make_results, tmp_path):
    runs = tmp_path / "runs"
    teacher = _teacher_and_student(make_results, runs, latency_ms=12.5)
    _det_run(runs, "pennfudan_student_nokd", "ssdlite_mobilenet_v3_large", 0.70, 1_000_000)
    (runs / "pennfudan_student_labels").mkdir()  # started, not finished
    text = "\n".join(make_results.detection_section())
    assert "| student AP50 within 3 pt of the teacher | 76.00 % vs 80.00 % (4.00 pt below) | **no** |" in text
    assert "| 1,000,000 vs 11,000,000 (9.1 %) | yes |" in text
    # no `make bench` here: the evaluate stage's latency, and said so
    assert "80.0 frames/s at 480x640 (12.5 ms p50; from the runs' evaluate stage, not `make bench`" in text
    assert "| 12.0x (150 vs 12.5 ms Engine.infer p50" in text
    assert "| `pennfudan_student` | no recipe | ssdlite_mobilenet_v3_large | 320x320 | yes | - | 38.00 | 76.00 |" \
        in text  # the Engine's numbers, not the torch model's 1 %
    assert "| `pennfudan_student_labels` | no recipe | not finished (no metrics.json yet) |" in text
    assert "| `pennfudan_student_scratch` | no recipe | not run (no run dir) |" in text
    assert "KD vs no KD (same start, cut and schedule): AP50 +6.00 pt, AP +3.00 pt" in text
    assert "24 images with 66 objects: one missed object moves AP50 by about 1.5 pt." in text
    assert f"- `{teacher}/{make_results._shipped_file(teacher)}`: 0.0 MB, ships" in text


def test_detection_goals_without_runs_or_bench_say_so(make_results, tmp_path):
    text = "\n".join(make_results.detection_section())
    teacher = make_results._shipping_run("pennfudan_teacher")
    assert f"| not finished: `{teacher}`, `pennfudan_student` | n/a |" in text
    assert "not measured (no `make bench` output in build/bench/; no evaluate-stage latency from " \
        f"`pennfudan_student` or `{teacher}`) | n/a |" in text
    assert "Base: not finished." in text and "no cell of `runs/pennfudan_prune_sweep` has a metrics.json" in text
    assert not (tmp_path / "docs" / "figures" / "pennfudan_pruning.png").exists()


def test_detection_speed_comes_from_bench_when_it_timed_the_student(make_results, tmp_path, monkeypatch):
    _teacher_and_student(make_results, tmp_path / "runs", ap50=0.785, latency_ms=12.5)
    bench = tmp_path / "build" / "bench"
    bench.mkdir(parents=True)
    latency = {"groups": [{"name": "pennfudan 480x640", "task": "detection"}],
               "variants": [{"group": "pennfudan 480x640", "name": "teacher", "weights": "random"}],
               "ratios": [{"group": "pennfudan 480x640", "variant": "deployed pennfudan_student",
                           "speedup_p50_1thread": 4.5, "frame_fps_1thread": 52.0, "frame_hw": [480, 640]}]}
    (bench / "model_latency.json").write_text(json.dumps(latency))
    text = "\n".join(make_results.detection_section())
    assert "| 78.50 % vs 80.00 % (1.50 pt below) | yes |" in text  # within the 3 pt budget
    assert "| 52.0 frames/s at 480x640 (`make bench` of unknown date" in text
    speed = next(line for line in text.splitlines() if "faster than the teacher" in line)
    assert "| 4.5x (onnxruntime session p50; teacher random;" in speed and speed.endswith("| **no** |")
    # bench's own detection goal: the whole Engine.infer on the camera frame, when its output has it
    latency["ratios"][0]["frame_speedup_p50_1thread"] = 5.5
    (bench / "model_latency.json").write_text(json.dumps(latency))
    text = "\n".join(make_results.detection_section())
    assert "| 5.5x (Engine.infer p50 on the camera frame, NMS included; teacher random;" in text
    # a bench without a detection group falls back to the evaluate stage
    latency["groups"][0]["task"] = "segmentation"
    (bench / "model_latency.json").write_text(json.dumps(latency))
    text = "\n".join(make_results.detection_section())
    assert "80.0 frames/s at 480x640 (12.5 ms p50; from the runs' evaluate stage, not `make bench` (the last " \
        "`make bench` has no detection group))" in text
    monkeypatch.setattr(make_results, "MAX_BYTES", 10)  # the fp32 FCOS teacher is over the real 25 MB budget
    assert "0.0 MB, **over the 25 MB budget: `ship` skips it**" in "\n".join(make_results.detection_section())


def test_pruning_curves_table_and_figure(make_results, tmp_path):
    runs = tmp_path / "runs"
    _teacher_and_student(make_results, runs)
    base = {"name": "pennfudan_prune_sweep-base-nokd", "task": "detection", "primary": "ap50",
            "tags": {"kd": False}, "pruning": None,
            "student": {"model": "ssdlite_mobilenet_v3_large", "kd": False, "params": {"effective": 300},
                        "metrics": {"ap": 0.33, "ap50": 0.70}}}
    (runs / "pennfudan_prune_sweep" / "base-nokd").mkdir(parents=True)
    (runs / "pennfudan_prune_sweep" / "base-nokd" / "metrics.json").write_text(json.dumps(base))
    _cell(runs, "random", 0.5, 0.61, 0.40)
    _cell(runs, "class-blind", 0.9, 0.20, 0.05)
    _cell(runs, "class-blind", 0.95, 0.10, 0.0)  # off the grid: still a row
    text = "\n".join(make_results.detection_section())
    assert "Base (the cells' start, 0 % pruned, before any fine-tune): AP50 70.00 %, AP 33.00 %." in text
    assert "| % pruned | random | class-uniform | class-blind |" in text
    assert "| 0 | not finished | not finished | not finished |" in text
    assert "| 50 | 61.00 (40.00) | not finished | not finished |" in text
    assert "| 90 | not finished | not finished | 20.00 (5.00) |" in text
    assert "| 95 | not finished | not finished | 10.00 (0.00) |" in text
    assert "![Penn-Fudan AP50 vs % pruned](figures/pennfudan_pruning.png)" in text
    assert (tmp_path / "docs" / "figures" / "pennfudan_pruning.png").stat().st_size > 1000


def test_the_detection_block_goes_after_camvid_then_replaces_itself(make_results, tmp_path):
    (tmp_path / "docs").mkdir()
    page = tmp_path / "docs" / "RESULTS.md"
    page.write_text("before\n<!-- camvid:begin -->\nc\n<!-- camvid:end -->\nafter\n")
    make_results.write_detection_section()
    first = page.read_text()
    assert first.startswith("before\n<!-- camvid:begin -->\nc\n<!-- camvid:end -->\n\n<!-- detection:begin -->")
    assert first.endswith("<!-- detection:end -->\nafter\n")
    page.write_text(first.replace("Base: not finished.", "stale 12.34 %"))
    make_results.write_detection_section()
    assert page.read_text() == first and first.count("<!-- detection:begin -->") == 1


@pytest.mark.parametrize("entry", [("pennfudan_teacher", "pennfudan_teacher.onnx", "pennfudan_teacher.onnx"),
                                   ("pennfudan_teacher_edge", "pennfudan_teacher_fp16.onnx",
                                    "pennfudan_teacher_fp16.onnx")])
def test_detection_goals_follow_the_teacher_file_that_ships(make_results, tmp_path, monkeypatch, entry):
    """The goals read the teacher file SHIPPED names: the fp32 training run's or its float16 re-export's."""
    runs = tmp_path / "runs"
    _det_run(runs, "pennfudan_student", "ssdlite_mobilenet_v3_large", 0.76, 1_000_000, kd=True, latency_ms=12.5)
    _det_run(runs, "pennfudan_teacher", "fcos_mobilenet_v3_large_fpn", 0.80, 11_000_000, latency_ms=150.0)
    _det_run(runs, "pennfudan_teacher_edge", "fcos_mobilenet_v3_large_fpn", 0.78, 11_000_000,
             onnx_file="pennfudan_teacher_fp16.onnx")
    shipped = [e for e in make_results.SHIPPED if not e[0].startswith("pennfudan_teacher")]
    monkeypatch.setattr(make_results, "SHIPPED", shipped + [entry])
    text = "\n".join(make_results.detection_section())
    teacher_ap50 = "80.00" if entry[0] == "pennfudan_teacher" else "78.00"
    assert f"| 76.00 % vs {teacher_ap50} % (" in text
    assert f"- `{entry[0]}/{entry[1]}`: 0.0 MB, ships" in text
    speed = next(line for line in text.splitlines() if "faster than the teacher" in line)
    if entry[0] == "pennfudan_teacher":
        assert "| 12.0x (150 vs 12.5 ms" in speed
    else:  # its evaluate stage has no latency here: the speedup is not taken from the fp32 run's
        assert "not measured (no `make bench` output in build/bench/; no evaluate-stage latency from " \
            "`pennfudan_teacher_edge`) | n/a |" in speed


def test_report_refuses_to_drop_runs_the_page_reports_but_this_machine_lacks(make_results, tmp_path, monkeypatch):
    import robot_compress.compress.report as report_module

    def fake_report(runs, out_dir):  # what robot-compress report writes for the one run found here
        path = Path(out_dir) / "report.md"
        path.write_text("## All runs (validation split)\n\n| run | student |\n|---|---|\n| here_run | lenet5 |\n")
        return path

    monkeypatch.setattr(report_module, "write_report", fake_report)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "results_header.md").write_text("# Results\n")
    page = tmp_path / "docs" / "RESULTS.md"
    old = ("# Results\n\n## All runs (validation split)\n\n| run | student |\n|---|---|\n"
           "| trained_elsewhere | resnet20 |\n\n## Plots\n")
    page.write_text(old)
    (tmp_path / "runs").mkdir()
    with pytest.raises(SystemExit, match="trained_elsewhere"):
        make_results.report()
    assert page.read_text() == old  # untouched
    make_results.report(allow_dropping=True)
    assert "trained_elsewhere" not in page.read_text() and "| here_run | lenet5 |" in page.read_text()
    make_results.report()  # nothing reported is missing now: no refusal
