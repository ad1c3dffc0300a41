"""Issue 13, findings 2, 3 and 6: an output dir is reused only by the run that made it.

A stage checkpoint is resumed only when the fingerprint of everything that determines it matches (the recipe
up to that stage, the teacher's and the starting weights, the data); otherwise the run stops with exit 2
before touching the dir, whose files stay byte-identical. --restart discards the earlier run, --resume insists
on one. Recipe paths are relative to the recipe file; --set overrides and --dry-run show the resolved recipe."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

torch = pytest.importorskip("torch")

from robot_compress.cli import main  # noqa: E402

pytestmark = pytest.mark.toolkit
REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "config" / "examples" / "tiny_synthetic_kd_classblind.yaml"
PRUNE = 2  # index of the prune stage in the tiny recipe


def _snapshot(root: Path) -> dict:
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _recipe(tmp_path: Path, edit=None, name: str = "r.yaml") -> Path:
    """A copy of the tiny recipe (absolute paths), changed by `edit(data)`: plain recipe files, no --set."""
    data = yaml.safe_load(RECIPE.read_text())
    data.pop("output_dir")
    if edit:
        edit(data)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def _refused(capsys, argv, out: Path) -> str:
    """The run is refused with one error line, and `out` is byte-identical afterwards (finding 3)."""
    before = _snapshot(out)
    code = main(argv)
    assert _snapshot(out) == before  # nothing deleted, rewritten or added
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "--restart" in err and "--out" in err
    return err


def _weight_sparsity(state_dict) -> float:
    masks = [v for k, v in state_dict.items() if k.endswith("weight_mask")]
    return 1 - sum(float(m.sum()) for m in masks) / sum(m.numel() for m in masks)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """The tiny recipe run once (class-blind 50 %), shared by the refusal cases (each works on a copy)."""
    root = tmp_path_factory.mktemp("reuse")
    out = root / "run"
    assert main(["run", str(RECIPE), "--out", str(out)]) == 0
    return out


@pytest.fixture
def run_copy(finished, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(finished, out)
    return out


def test_changed_prune_amount_is_refused_untouched_and_restart_gives_the_new_result(run_copy, tmp_path, capsys):
    """Finding 2: 0.5 -> 0.8 used to reuse the fine-tune checkpoint pruned at 0.5 and report 0.8."""
    recipe = _recipe(tmp_path, lambda d: d["stages"][PRUNE].update(amount=0.8))
    argv = ["run", str(recipe), "--out", str(run_copy)]
    _refused(capsys, argv, run_copy)
    assert main([*argv, "--restart"]) == 0
    metrics = json.loads((run_copy / "metrics.json").read_text())
    assert metrics["pruning"]["amount"] == 0.8
    assert abs(metrics["onnx"][0]["sparsity"] - 0.8) < 0.01
    student = torch.load(run_copy / "student.pt", map_location="cpu", weights_only=True)
    assert abs(_weight_sparsity(student["model"]) - 0.8) < 0.01
    assert "--restart: removed" in (run_copy / "log.txt").read_text()


def test_another_teacher_is_refused(finished, tmp_path, capsys):
    """Finding 2: a teacher swapped for another checkpoint reused the student distilled from the old one."""
    from robot_compress.compress.models import get_model

    other_teacher = tmp_path / "other_teacher.pt"
    torch.save(get_model("tiny_cnn", 4, width=16).state_dict(), other_teacher)

    def given_teacher(path):
        def edit(d):
            d["teacher"]["checkpoint"] = str(path)
            d["stages"] = [{"stage": "distill", "epochs": 1, "batch_size": 16},
                           {"stage": "evaluate", "onnx": False}]
        return edit

    out = tmp_path / "kd"
    assert main(["run", str(_recipe(tmp_path, given_teacher(finished / "teacher.pt"))), "--out", str(out)]) == 0
    swapped = _recipe(tmp_path, given_teacher(other_teacher), name="swapped.yaml")
    _refused(capsys, ["run", str(swapped), "--out", str(out)], out)


def test_changed_starting_weights_at_the_same_path_are_refused(finished, tmp_path, capsys):
    """The student starts from a checkpoint file; other weights under the same file name make another run."""
    from robot_compress.compress.models import get_model

    start = tmp_path / "start.pt"
    torch.save(get_model("tiny_cnn", 4, width=8).state_dict(), start)
    recipe = _recipe(tmp_path, lambda d: d["student"].update(checkpoint=str(start)))
    out = tmp_path / "from_ckpt"
    assert main(["run", str(recipe), "--out", str(out)]) == 0
    torch.manual_seed(1)
    torch.save(get_model("tiny_cnn", 4, width=8).state_dict(), start)  # same path, other weights
    _refused(capsys, ["run", str(recipe), "--out", str(out)], out)


def test_an_earlier_stage_trained_longer_makes_later_checkpoints_stale(run_copy, tmp_path, capsys):
    """More epochs continue a stage, but the stages after it were made from the shorter one."""
    recipe = _recipe(tmp_path, lambda d: d["stages"][0].update(epochs=4))
    err = _refused(capsys, ["run", str(recipe), "--out", str(run_copy)], run_copy)
    assert "01_distill_student.pt" in err


def test_same_recipe_resumes_and_more_epochs_on_the_last_training_stage_continue(run_copy, capsys):
    assert main(["run", str(RECIPE), "--out", str(run_copy), "--resume"]) == 0
    out = capsys.readouterr().out
    assert "resuming the earlier run" in out and "nothing to train" in out
    assert main(["run", str(RECIPE), "--out", str(run_copy), "--set", "stages.3.epochs=2"]) == 0
    assert "resumed from" in capsys.readouterr().out


def test_resume_needs_an_earlier_run(tmp_path, capsys):
    assert main(["run", str(RECIPE), "--out", str(tmp_path / "none"), "--resume"]) == 2
    assert "holds no earlier run" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()


def test_a_foreign_checkpoint_in_the_dir_is_refused(run_copy, capsys):
    (run_copy / "checkpoints" / "07_finetune_student.pt").write_bytes(
        (run_copy / "checkpoints" / "03_finetune_student.pt").read_bytes())
    err = _refused(capsys, ["run", str(RECIPE), "--out", str(run_copy)], run_copy)
    assert "07_finetune_student.pt is not a checkpoint of this recipe" in err


def test_sweep_refuses_a_finished_cell_of_another_configuration(tmp_path, capsys):
    out = tmp_path / "sweep"
    argv = ["sweep", str(RECIPE), "--out", str(out), "--criteria", "random", "--amounts", "0.5", "--kd", "on"]
    assert main(argv) == 0
    changed = _recipe(tmp_path, lambda d: d["stages"][3].update(lr=0.02))  # the cells' fine-tuning
    _refused(capsys, ["sweep", str(changed), *argv[2:]], out)


# ---------------------------------------------------------------------------------- overrides and dry run


def test_dry_run_prints_the_resolved_recipe_and_touches_nothing(tmp_path, capsys):
    out = tmp_path / "dry"
    assert main(["run", str(RECIPE), "--out", str(out), "--set", f"stages.{PRUNE}.amount=0.9",
                 "--set", "dataset.train_subset=100", "--dry-run"]) == 0
    text = capsys.readouterr().out
    shown = yaml.safe_load(text)
    assert shown["stages"][PRUNE]["amount"] == 0.9 and shown["dataset"]["train_subset"] == 100
    assert shown["stages"][PRUNE]["criterion"] == "class-blind"  # defaults and untouched keys shown too
    assert str(out) in text.splitlines()[0]
    assert not out.exists()


@pytest.mark.parametrize("override,needle", [("stages.9.amount=0.9", "no item '9'"),
                                             ("stages.2.amont=0.9", "amont"),
                                             (f"stages.{PRUNE}.amount=1.5", "amount"),
                                             ("noequals", "KEY=VALUE")])
def test_bad_override_is_one_error_line(tmp_path, capsys, override, needle):
    assert main(["run", str(RECIPE), "--out", str(tmp_path / "o"), "--set", override, "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------------- finding 6: recipe paths


def test_output_dir_and_data_paths_are_relative_to_the_recipe_file(tmp_path, monkeypatch):
    """Finding 6: output_dir (as documented) and the other recipe paths resolve against the recipe's own dir,
    whatever the working directory."""
    from robot_compress.compress.recipe import load_recipe

    recipes = tmp_path / "project" / "recipes"
    recipes.mkdir(parents=True)
    data = yaml.safe_load(RECIPE.read_text())
    data["output_dir"] = "../runs/tiny"
    data["teacher"]["checkpoint"] = "weights/teacher.pt"
    (recipes / "tiny.yaml").write_text(yaml.safe_dump(data))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    recipe = load_recipe(recipes / "tiny.yaml")
    assert Path(recipe.output_dir).resolve() == tmp_path / "project" / "runs" / "tiny"
    assert Path(recipe.teacher.checkpoint).resolve() == recipes / "weights" / "teacher.pt"
    data.pop("teacher")["checkpoint"]
    data["stages"] = [{"stage": "train", "epochs": 1, "batch_size": 64}, {"stage": "evaluate", "onnx": False}]
    (recipes / "tiny.yaml").write_text(yaml.safe_dump(data))
    assert main(["run", str(recipes / "tiny.yaml")]) == 0
    assert (tmp_path / "project" / "runs" / "tiny" / "metrics.json").is_file()
    assert not (elsewhere / "runs").exists()


@pytest.mark.parametrize("name", ["camvid_teacher", "camvid_student_labels"])
def test_shipped_camvid_recipes_still_write_to_the_repository_runs_dir(name, tmp_path, monkeypatch):
    from robot_compress.compress.recipe import load_recipe

    for cwd in (REPO, tmp_path):
        monkeypatch.chdir(cwd)
        recipe = load_recipe(REPO / "config" / "recipes" / f"{name}.yaml")
        assert Path(recipe.output_dir).resolve() == REPO / "runs" / name
        assert Path(recipe.dataset.root).resolve() == (REPO.parent / "shared" / "data" / "camvid-trainval.zip")
    monkeypatch.chdir(REPO)
    assert load_recipe(REPO / "config" / "recipes" / f"{name}.yaml").output_dir == f"runs/{name}"
