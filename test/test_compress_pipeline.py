"""A recipe run end to end on synthetic data: teacher -> KD student -> class-blind prune -> fine-tune ->
ONNX export -> evaluation through the runtime Engine -> report with tables and plots."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from robot_compress.cli import main  # noqa: E402
from robot_compress.compress.recipe import load_recipe  # noqa: E402

pytestmark = pytest.mark.toolkit
RECIPE = Path(__file__).resolve().parents[1] / "config" / "examples" / "tiny_synthetic_kd_classblind.yaml"


def _onnx_weight_sparsity(path) -> float:
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    weights = [inits[n.input[1]] for n in model.graph.node if n.op_type in ("Conv", "Gemm") and n.input[1] in inits]
    return sum(int((w == 0).sum()) for w in weights) / sum(w.size for w in weights)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("pipeline") / "run"
    assert main(["run", str(RECIPE), "--out", str(out)]) == 0
    return out


def test_output_dir_records_inputs_and_metrics(run_dir):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "succeeded" and not (run_dir / "FAILED").exists()
    assert (run_dir / "recipe.yaml").is_file() and run["config"]["name"] == "tiny_synthetic_kd_classblind"
    assert len(metrics["commit"]) == 40 or metrics["commit"] == "unknown"
    assert metrics["dataset_fingerprint"] and metrics["dataset_fingerprint"] == metrics["dataset"]["fingerprint"]
    assert metrics["seeds"]["seed"] == 0 and "data_split" in metrics["seeds"]
    assert [s["stage"] for s in metrics["stages"]] == ["train", "distill", "prune", "finetune", "export", "evaluate"]
    assert metrics["student"]["kd"] is True and metrics["teacher"]["model"] == "tiny_cnn"
    # The whole chain learns the synthetic task (4 classes: chance is 25 %).
    assert metrics["teacher"]["metrics"]["top1"] > 0.6
    assert metrics["student"]["metrics"]["top1"] > 0.6
    assert 0 < metrics["student"]["params"]["effective"] <= metrics["student"]["params"]["nonzero"]


def test_exported_model_is_pruned_as_requested_and_loads_in_engine(run_dir):
    from robot_compress.runtime.engine import Engine

    metrics = json.loads((run_dir / "metrics.json").read_text())
    onnx_entry = metrics["onnx"][0]
    path = run_dir / onnx_entry["path"]
    # Masks were made permanent: the plain ONNX weights hold the zeros (class-blind amount 0.5).
    assert abs(_onnx_weight_sparsity(path) - 0.5) < 0.01
    assert abs(onnx_entry["sparsity"] - 0.5) < 0.01
    engine = Engine(path)
    recipe = load_recipe(RECIPE)
    assert engine.meta.task == "classification" and engine.meta.num_classes == 4
    assert engine.meta.input_size == tuple(recipe.dataset.input_size)
    assert engine.meta.model_id == "tiny_cnn_kd_cb50"
    assert engine.meta.provenance["recipe"] == recipe.name
    assert engine.meta.provenance["dataset_fingerprint"] == metrics["dataset_fingerprint"]
    assert (path.with_suffix(".md")).is_file() and json.loads(path.with_suffix(".json").read_text())["metrics"]
    # The pruned student checkpoint still carries its masks (fine-tuning kept them).
    state = torch.load(run_dir / "student.pt", map_location="cpu", weights_only=False)
    masks = [v for k, v in state["model"].items() if k.endswith("weight_mask")]
    assert masks and abs(1 - sum(float(m.sum()) for m in masks) / sum(m.numel() for m in masks) - 0.5) < 0.01


def test_torch_and_engine_metrics_agree(run_dir):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    entry = metrics["onnx"][0]
    assert entry["metrics"]["n"] == metrics["student"]["metrics"]["n"] == metrics["dataset"]["n_val"]
    assert entry["agreement_pts"]["top1"] <= 0.1
    assert abs(entry["metrics"]["top1"] - metrics["student"]["metrics"]["top1"]) * 100 <= 0.1


def test_segmentation_torch_and_engine_agree(tmp_path):
    """Segmentation through the same path: pixel accuracy/mIoU from torch and from the Engine agree."""
    from robot_compress.compress import recipe as rc
    from robot_compress.compress.pipeline import run_recipe

    recipe = rc.parse_recipe({
        "name": "tiny_seg", "dataset": {"kind": "synthetic_seg", "input_size": [24, 32], "val_fraction": 0.25,
                                        "options": {"n": 24}},
        "student": {"model": "tiny_segnet"},
        "stages": [{"stage": "train", "epochs": 1, "batch_size": 8},
                   {"stage": "prune", "criterion": "class-uniform", "amount": 0.3},
                   {"stage": "export"}, {"stage": "evaluate"}],
    })
    metrics = run_recipe(recipe, tmp_path / "seg", log=lambda _msg: None)
    torch_m, onnx_m = metrics["student"]["metrics"], metrics["onnx"][0]["metrics"]
    assert torch_m["n_pixels"] == onnx_m["n_pixels"] > 0
    assert abs(torch_m["pixel_acc"] - onnx_m["pixel_acc"]) * 100 <= 0.1
    assert abs(torch_m["miou"] - onnx_m["miou"]) * 100 <= 0.1
    # The report lists the per-class IoU under the dataset's class names.
    from robot_compress.compress.report import write_report

    text = write_report([tmp_path / "seg"], tmp_path / "rep").read_text()
    labels = metrics["dataset"]["labels"]
    assert "| model | " + " | ".join(labels) + " |" in text
    assert "| tiny_seg (tiny_segnet) | " + " | ".join(
        "n/a" if v is None else f"{100 * v:.2f}" for v in torch_m["iou_per_class"]) + " |" in text


def test_report_has_tables_and_plot(run_dir, tmp_path):
    out = tmp_path / "report"
    assert main(["report", str(run_dir), "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert "## Table 2" in text and "## Accuracy vs % pruned" in text
    student_pct = f"{100 * metrics['student']['metrics']['top1']:.2f}"
    assert f"| 50 | {student_pct} |" in text  # the number comes from metrics.json, not typed in
    pngs = sorted(out.glob("*.png"))
    assert pngs and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert any(p.name.endswith("acc_vs_pruned.png") for p in pngs)


def test_sweep_resumes_and_reports(tmp_path):
    out = tmp_path / "sweep"
    argv = ["sweep", str(RECIPE), "--out", str(out), "--criteria", "class-blind", "random", "--amounts", "0.6",
            "--kd", "on"]
    assert main(argv) == 0
    cells = sorted(out.rglob("metrics.json"))
    assert len(cells) == 3  # base + 2 cells
    stamps = {p: p.stat().st_mtime_ns for p in cells}
    assert main(argv) == 0  # everything finished: nothing reruns
    assert {p: p.stat().st_mtime_ns for p in cells} == stamps
    sparsities = {json.loads(p.read_text())["pruning"]["criterion"]: json.loads(p.read_text())["onnx"][0]["sparsity"]
                  for p in cells if "pruning" in p.read_text() and json.loads(p.read_text())["pruning"]}
    assert set(sparsities) == {"class-blind", "random"}
    assert all(abs(s - 0.6) < 0.01 for s in sparsities.values())
    assert main(["report", str(out), "--out", str(tmp_path / "rep")]) == 0
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "| % pruned | class-blind | random |" in text


def test_train_subset_teacher_cache_and_latency(tmp_path):
    """train_subset trains on a fixed part of the train split (val untouched); cache_teacher and the
    teacher-free evaluation keep the pipeline's results; the ONNX entry carries an Engine latency."""
    import yaml

    data = yaml.safe_load(RECIPE.read_text())
    data["dataset"]["train_subset"] = 100
    for stage in data["stages"]:
        if stage["stage"] == "distill":
            stage["cache_teacher"] = True
        if stage["stage"] == "evaluate":
            stage.update({"teacher": False, "latency_runs": 3})
    recipe = tmp_path / "subset.yaml"
    recipe.write_text(yaml.safe_dump(data))
    out = tmp_path / "run"
    assert main(["run", str(recipe), "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"]["n_train"] == 100 and metrics["dataset"]["n_val"] == 80  # 320 items, val 25 %
    assert metrics["teacher"] is None  # not evaluated on request
    assert metrics["student"]["metrics"]["top1"] > 0.5  # still learns (4 classes)
    onnx_metrics = metrics["onnx"][0]["metrics"]
    assert onnx_metrics["latency_ms_p50_1thread"] > 0
    assert onnx_metrics["latency_ms_p95_1thread"] >= onnx_metrics["latency_ms_p50_1thread"]
    card = json.loads((out / metrics["onnx"][0]["path"]).with_suffix(".json").read_text())
    assert card["metrics"]["latency_ms_p50_1thread"] == onnx_metrics["latency_ms_p50_1thread"]


def test_train_subset_is_fixed_and_inside_the_train_split():
    from robot_compress.compress import recipe as rc
    from robot_compress.compress.pipeline import load_data

    spec = rc.DataSpec(kind="synthetic_cls", input_size=(16, 16), val_fraction=0.25,
                       options={"n": 320, "num_classes": 4}, train_subset=50)
    a, b = load_data(spec), load_data(spec)
    assert len(a.train) == 50 and list(a.train.indices) == list(b.train.indices)
    picked = {a.train.dataset.indices[i] for i in a.train.indices}
    assert len(picked) == 50 and not picked & set(a.val.indices)


def test_report_lists_every_run_with_params_and_run_time(run_dir, tmp_path):
    out = tmp_path / "report_runs"
    assert main(["report", str(run_dir), "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    p = metrics["student"]["params"]
    row = next(line for line in text.splitlines() if line.startswith(f"| {metrics['name']} |"))
    assert f"| {100 * metrics['student']['metrics']['top1']:.2f} |" in row
    assert f"| {p['total']} | {p['nonzero']} | {p['effective']} |" in row
    seconds = sum(s["seconds"] for s in metrics["stages"])
    assert row.rstrip().endswith(f"| {seconds:.0f} |")


def test_sweep_kd_off_cells_fine_tune_without_the_teacher(tmp_path):
    from robot_compress.compress.sweep import cell_recipe

    recipe = load_recipe(RECIPE)
    recipe = recipe.model_copy(update={"stages": [
        s.model_copy(update={"kd": True}) if s.stage == "finetune" else s for s in recipe.stages]})
    finetune = {kd: next(s for s in cell_recipe(recipe, tmp_path, kd, "random", 0.5).stages
                         if s.stage == "finetune") for kd in (True, False)}
    assert finetune[True].kd is True and finetune[False].kd is False


def test_pruning_series_keep_sweeps_and_single_runs_apart():
    from robot_compress.compress.report import pruning_series

    def run(name, amount, acc, sweep=None):
        return {"name": name, "task": "classification", "primary": "top1", "tags": {"sweep": sweep} if sweep else {},
                "pruning": {"criterion": "class-blind", "amount": amount},
                "student": {"model": "resnet20", "kd": True, "metrics": {"top1": acc}, "params": {"effective": 1}}}

    series = pruning_series([run("s-a", 0.5, 0.9, "s"), run("s-b", 0.9, 0.7, "s"), run("deployed", 0.85, 0.85)])
    assert series[("classification", "resnet20", True, "s")]["class-blind"] == [(0.5, 0.9, 1), (0.9, 0.7, 1)]
    assert series[("classification", "resnet20", True, "deployed")]["class-blind"] == [(0.85, 0.85, 1)]


def test_gradual_pruning_run_records_each_step_and_reports_its_own_curve(tmp_path):
    """Prune -> fine-tune -> prune further -> fine-tune: metrics.json keeps each step's recovered accuracy,
    and the report draws the run as a curve through the steps (not one point at the final amount)."""
    import yaml

    from robot_compress.compress.report import pruning_series

    data = yaml.safe_load(RECIPE.read_text())
    prune_at = [i for i, st in enumerate(data["stages"]) if st["stage"] == "prune"][0]
    data["stages"][prune_at:prune_at + 2] = [
        {"stage": "prune", "criterion": "class-blind", "amount": 0.3},
        {"stage": "finetune", "epochs": 1, "lr": 0.01, "batch_size": 16},
        {"stage": "prune", "criterion": "class-blind", "amount": 0.6},
        {"stage": "finetune", "epochs": 1, "lr": 0.01, "batch_size": 16},
    ]
    recipe = tmp_path / "gradual.yaml"
    recipe.write_text(yaml.safe_dump(data))
    out = tmp_path / "run"
    assert main(["run", str(recipe), "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    steps = metrics["pruning_steps"]
    assert [s["amount"] for s in steps] == [0.3, 0.6]
    assert all(0.0 <= s["metrics"]["top1"] <= 1.0 for s in steps)
    assert steps[0]["params"]["nonzero"] > steps[1]["params"]["nonzero"]  # the second step prunes more
    assert steps[1]["metrics"]["top1"] == metrics["student"]["metrics"]["top1"]
    curve = pruning_series([metrics])[("classification", "tiny_cnn", True, metrics["name"])]["class-blind"]
    assert [a for a, _, _ in curve] == [0.3, 0.6]
    assert curve[0][1] == steps[0]["metrics"]["top1"]


def test_sweep_from_a_given_student_checkpoint(run_dir, tmp_path):
    """Nothing before the prune stage: the base scores the given (distilled) checkpoint, cells start from it."""
    import yaml

    distilled = next((run_dir / "checkpoints").glob("*distill_student.pt"))
    data = yaml.safe_load(RECIPE.read_text())
    data["student"]["checkpoint"] = str(distilled)
    data["stages"] = [s for s in data["stages"] if s["stage"] not in ("train", "distill")]
    data["teacher"]["checkpoint"] = str(run_dir / "teacher.pt")
    recipe = tmp_path / "given.yaml"
    recipe.write_text(yaml.safe_dump(data))
    out = tmp_path / "sweep"
    assert main(["sweep", str(recipe), "--out", str(out), "--criteria", "class-uniform", "--amounts", "0.5",
                 "--kd", "on"]) == 0
    base = json.loads((out / "base-kd" / "metrics.json").read_text())
    cell = json.loads((out / "kd" / "class-uniform" / "0.5" / "metrics.json").read_text())
    distill_acc = json.loads((run_dir / "metrics.json").read_text())["student"]["before_pruning"]["top1"]
    assert base["student"]["metrics"]["top1"] == pytest.approx(distill_acc, abs=1e-9)  # the checkpoint, untouched
    assert cell["student"]["before_pruning"]["top1"] == pytest.approx(distill_acc, abs=1e-9)
    assert cell["pruning"]["criterion"] == "class-uniform" and abs(cell["onnx"][0]["sparsity"] - 0.5) < 0.01


def test_sweep_kd_on_without_distillation_or_checkpoint_is_refused(tmp_path):
    import yaml

    data = yaml.safe_load(RECIPE.read_text())
    data["stages"] = [s for s in data["stages"] if s["stage"] != "distill"]
    recipe = tmp_path / "nodistill.yaml"
    recipe.write_text(yaml.safe_dump(data))
    assert main(["sweep", str(recipe), "--out", str(tmp_path / "s"), "--criteria", "random", "--amounts", "0.5",
                 "--kd", "on"]) == 2


def _seg_run(name, nonzero, acc, *, teacher=True, pruning=None, structured=None, sweep=None):
    params = {"total": 1000, "nonzero": nonzero, "effective": nonzero}
    return {"name": name, "task": "segmentation", "primary": "pixel_acc", "tags": {"sweep": sweep} if sweep else {},
            "student": {"model": "s", "kd": True, "params": params,
                        "metrics": {"pixel_acc": acc, "miou": acc / 2, "iou_per_class": [acc, 0.0]}},
            "teacher": {"model": "t", "metrics": {"pixel_acc": 0.9, "miou": 0.5},
                        "params": {"total": 4000, "nonzero": 4000}} if teacher else None,
            "pruning": pruning, "structured": structured, "dataset": {"labels": ["a", "b"]}}


def test_segmentation_table_names_the_method_and_compression_vs_teacher():
    from robot_compress.compress.report import table_segmentation

    runs = [_seg_run("cell", 300, 0.5, teacher=False, pruning={"criterion": "random", "amount": 0.7}, sweep="sw"),
            _seg_run("slim", 400, 0.8, structured={"ratio": 0.6})]
    rows = {line.split(" | ")[0][2:]: line for line in table_segmentation(runs) if line.startswith("| ")}
    assert "| random 70 % |" in rows["cell"] and "| 92.50 |" in rows["cell"]  # 1 - 300/4000, teacher of "slim"
    assert "| structured 60 % |" in rows["slim"] and "| 90.00 |" in rows["slim"]
    assert "| 80.00 | 40.00 |" in rows["slim"]
    text = "\n".join(table_segmentation(runs))
    assert "slim (s)" in text and "cell (s)" not in text  # per-class IoU only for stand-alone runs


def test_segmentation_table_holds_each_run_against_its_own_teacher():
    from robot_compress.compress.report import table_segmentation

    strong = _seg_run("strong", 400, 0.8)
    strong["teacher"] = {"model": "t2", "metrics": {"pixel_acc": 0.95, "miou": 0.6},
                         "params": {"total": 8000, "nonzero": 8000}}
    own = _seg_run("own", 8000, 0.95, teacher=False)
    own["tags"] = {"role": "teacher"}
    runs = [_seg_run("weak", 400, 0.8), strong, own]
    lines = table_segmentation(runs)
    rows = {line.split(" | ")[0][2:]: line for line in lines if line.startswith("| ")}
    assert "| 90.00 | 90.00 |" in rows["weak"]  # 1 - 400/4000; its teacher's 90 %
    assert "| 95.00 | 95.00 |" in rows["strong"]  # 1 - 400/8000; its teacher's 95 %
    assert "| - | - |" in rows["own"]  # a teacher run is not compressed against another teacher
    assert sum(line.startswith("Teacher ") for line in lines) == 2
