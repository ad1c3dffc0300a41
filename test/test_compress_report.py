"""Issue 13, finding 10: pruning plots colour each criterion the same with and without KD and draw the teacher
and the unpruned student as reference lines; runs record the accuracy right after pruning (before fine-tuning,
the paper's no-retrain curve) and the report shows it; the INT8 model gets a model card."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

torch = pytest.importorskip("torch")
pytest.importorskip("matplotlib")

from robot_compress.cli import main  # noqa: E402

pytestmark = pytest.mark.toolkit
RECIPE = Path(__file__).resolve().parents[1] / "config" / "examples" / "tiny_synthetic_kd_classblind.yaml"


def _run(name, kd, criterion, amount, acc, after=None, teacher_acc=0.95, dense=0.9):
    return {"name": name, "task": "classification", "primary": "top1", "tags": {"sweep": "s"},
            "pruning": {"criterion": criterion, "amount": amount,
                        **({"after_pruning": {"top1": after}} if after is not None else {})},
            "teacher": {"model": "resnet56", "metrics": {"top1": teacher_acc}, "params": {"total": 9}},
            "student": {"model": "resnet20", "kd": kd, "metrics": {"top1": acc},
                        "params": {"effective": 1, "total": 5, "nonzero": 5},
                        "before_pruning": {"top1": dense if kd else dense - 0.02}}}


def _axes(runs, tmp_path):
    """{label: Line2D} of the accuracy-vs-% pruned plot that `write_report` draws for these runs."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from robot_compress.compress.report import write_report

    for r in runs:
        (tmp_path / "runs" / r["name"]).mkdir(parents=True)
        (tmp_path / "runs" / r["name"] / "metrics.json").write_text(json.dumps(r))
    drawn = {}
    real_savefig = Figure.savefig

    def savefig(fig, path, *args, **kwargs):
        drawn[Path(path).name] = {line.get_label(): line for line in fig.axes[0].get_lines()}
        return real_savefig(fig, path, *args, **kwargs)

    Figure.savefig = savefig
    try:
        write_report([tmp_path / "runs"], tmp_path / "report")
    finally:
        Figure.savefig = real_savefig
    return drawn["classification_resnet20_acc_vs_pruned.png"]


def test_each_criterion_keeps_its_colour_with_and_without_kd(tmp_path):
    runs = [_run(f"{c}-{kd}-{a}", kd, c, a, 0.8) for c in ("class-blind", "random") for kd in (True, False)
            for a in (0.5, 0.9)]
    runs += [_run("uniform-nokd", False, "class-uniform", 0.5, 0.8)]  # a criterion present without KD only
    lines = _axes(runs, tmp_path)
    assert lines["class-blind (KD)"].get_color() == lines["class-blind (no KD)"].get_color()
    assert lines["random (KD)"].get_color() == lines["random (no KD)"].get_color()
    colours = {lines[f"{c} (KD)"].get_color() for c in ("class-blind", "random")} | {
        lines["class-uniform (no KD)"].get_color()}
    assert len(colours) == 3
    assert lines["class-blind (KD)"].get_linestyle() != lines["class-blind (no KD)"].get_linestyle()


def test_teacher_and_unpruned_student_are_reference_lines(tmp_path):
    lines = _axes([_run("a", True, "class-blind", 0.5, 0.8), _run("b", False, "class-blind", 0.5, 0.7)], tmp_path)
    assert set(lines["teacher (resnet56)"].get_ydata()) == {95.0}
    assert set(lines["0 % pruned (KD)"].get_ydata()) == {90.0}
    assert set(lines["0 % pruned (no KD)"].get_ydata()) == {88.0}


def test_no_retrain_curve_is_drawn_and_tabulated(tmp_path):
    from robot_compress.compress.report import no_retrain_series, table_pruning

    runs = [_run("a", True, "class-blind", 0.5, 0.8, after=0.6), _run("b", True, "class-blind", 0.9, 0.7, after=0.2)]
    line = _axes(runs, tmp_path)["class-blind (KD, before fine-tuning)"]
    assert list(line.get_xdata()) == [50.0, 90.0] and list(line.get_ydata()) == [60.0, 20.0]
    from robot_compress.compress.report import pruning_series

    table = "\n".join(table_pruning(pruning_series(runs), no_retrain_series(runs)))
    assert "| % pruned | class-blind | eff. params (class-blind) | class-blind before fine-tuning |" in table
    assert "| 50 | 80.00 | 1 | 60.00 |" in table and "| 90 | 70.00 | 1 | 20.00 |" in table


@pytest.fixture(scope="module")
def quantized_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("int8")
    data = yaml.safe_load(RECIPE.read_text())
    data.pop("output_dir")
    at = [s["stage"] for s in data["stages"]].index("evaluate")
    data["stages"].insert(at, {"stage": "quantize", "calibration_samples": 8})
    data["stages"][at + 1]["latency_runs"] = 0
    recipe = root / "int8.yaml"
    recipe.write_text(yaml.safe_dump(data))
    out = root / "run"
    assert main(["run", str(recipe), "--out", str(out)]) == 0
    return out


def test_accuracy_right_after_pruning_is_recorded(quantized_run):
    metrics = json.loads((quantized_run / "metrics.json").read_text())
    after = metrics["pruning"]["after_pruning"]
    assert 0.0 <= after["top1"] <= 1.0 and after["n"] == metrics["dataset"]["n_val"]
    assert metrics["pruning_steps"][0]["after_pruning"] == after
    assert metrics["pruning_steps"][0]["metrics"] == metrics["student"]["metrics"]  # after fine-tuning


def test_int8_model_has_a_model_card(quantized_run):
    metrics = json.loads((quantized_run / "metrics.json").read_text())
    entry = next(e for e in metrics["onnx"] if e["kind"] == "int8")
    onnx_path = quantized_run / entry["path"]
    card = json.loads(onnx_path.with_suffix(".json").read_text())
    assert card["model_id"] == "tiny_cnn_kd_cb50_int8" and card["file"] == onnx_path.name
    assert card["quantization"]["format"] == "QDQ" and card["params"]["total"] > 0
    assert card["export_check"]["max_abs_diff_vs_torch"] == entry["max_abs_diff"] >= 0
    assert card["metrics"]["top1"] == entry["metrics"]["top1"]  # the evaluate stage filled it in
    md = onnx_path.with_suffix(".md").read_text()
    assert md.startswith("# Model card: tiny_cnn_kd_cb50_int8") and "top1" in md


def test_each_task_names_its_own_metric_in_pruning_tables():
    from robot_compress.compress.report import pruning_series, table_pruning

    runs = []
    for task, primary in (("detection", "ap50"), ("segmentation", "pixel_accuracy")):
        r = _run(f"{task}-cell", False, "random", 0.5, 0.6)
        r.update(task=task, primary=primary)
        r["student"]["metrics"] = {primary: 0.6}
        runs.append(r)
    text = "\n".join(table_pruning(pruning_series(runs)))
    assert "(detection, KD off; AP50 %; s)" in text and "(segmentation, KD off; pixel accuracy %; s)" in text
