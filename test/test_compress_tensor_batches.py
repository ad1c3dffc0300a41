"""Preloaded training batches (recipe `dataset.preload`), bf16 precision and `run --train-only`."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from robot_compress.cli import main  # noqa: E402
from robot_compress.compress.data import load_dataset  # noqa: E402
from robot_compress.compress.tensor_batches import TensorBatches, preload  # noqa: E402

pytestmark = pytest.mark.toolkit
RECIPE = Path(__file__).resolve().parents[1] / "config" / "examples" / "tiny_synthetic_kd_classblind.yaml"


def _raw(kind: str, n: int = 24):
    ds, info = load_dataset(kind, None, input_size=(16, 20), n=n, raw_uint8=True)
    return (*preload(ds), info)


def _unnormalise(x, info):
    mean = np.array(info.mean, np.float32).reshape(1, 3, 1, 1) * 255
    std = np.array(info.std, np.float32).reshape(1, 3, 1, 1) * 255
    return np.rint(x.numpy() * std + mean).astype(np.int64)


def test_unaugmented_batches_equal_the_datasets_own_items_in_order():
    images, targets, info = _raw("synthetic_cls")
    ds, _ = load_dataset("synthetic_cls", None, input_size=(16, 20), n=24)
    batches = list(TensorBatches(images, targets, info.mean, info.std, 10, shuffle=False, augment=False))
    assert [len(y) for _, y in batches] == [10, 10, 4]
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    expected = torch.stack([ds[i][0] for i in range(len(ds))])
    assert x.shape == (24, 3, 16, 20) and x.dtype == torch.float32
    assert torch.allclose(x, expected, atol=1e-5)
    assert y.tolist() == [ds[i][1] for i in range(len(ds))]


def test_shuffled_pass_visits_every_item_once_and_a_seed_repeats_it():
    images, targets, info = _raw("synthetic_cls")
    ids = np.arange(len(targets))  # use the targets to track which item each row is
    a = TensorBatches(images, ids, info.mean, info.std, 7, shuffle=True, augment=True, seed=3)
    b = TensorBatches(images, ids, info.mean, info.std, 7, shuffle=True, augment=True, seed=3)
    first = [(x.clone(), y.clone()) for x, y in a]
    assert sorted(torch.cat([y for _, y in first]).tolist()) == list(range(24))
    for (xa, ya), (xb, yb) in zip(first, b, strict=True):
        assert torch.equal(ya, yb) and torch.equal(xa, xb)
    second = torch.cat([y for _, y in a]).tolist()  # the next pass draws a new order
    assert second != torch.cat([y for _, y in first]).tolist()


def test_augmented_images_are_crops_of_the_zero_padded_image_or_their_mirror():
    images, targets, info = _raw("synthetic_cls", n=16)
    pad = 4
    batches = TensorBatches(images, np.arange(16), info.mean, info.std, 16, shuffle=False, augment=True,
                            pad_crop=pad, seed=0)
    x, ids = next(iter(batches))
    got = _unnormalise(x, info)
    h, w = images.shape[1:3]
    moved = flipped = 0
    for row, i in zip(got, ids.tolist(), strict=True):
        padded = np.pad(images[i], ((pad, pad), (pad, pad), (0, 0))).transpose(2, 0, 1).astype(np.int64)
        matches = [(dy, dx, f) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1) for f in (False, True)
                   if np.array_equal(row, (lambda c: c[:, :, ::-1] if f else c)(padded[:, dy:dy + h, dx:dx + w]))]
        assert matches, f"item {i} is not a crop/flip of its padded image"
        moved += all(m[:2] != (pad, pad) for m in matches)
        flipped += all(m[2] for m in matches)
    assert moved > 0 and flipped > 0  # augmentation really happens, not only the identity crop


def test_segmentation_labels_flip_with_their_images():
    images, labels, info = _raw("synthetic_seg", n=16)
    batches = TensorBatches(images, labels, info.mean, info.std, 16, shuffle=False, augment=True,
                            task="segmentation", seed=1)
    x, y = next(iter(batches))
    got = _unnormalise(x, info)
    n_flipped = 0
    for k in range(16):
        plain = images[k].transpose(2, 0, 1).astype(np.int64)
        if np.array_equal(got[k], plain):
            assert np.array_equal(y[k].numpy(), labels[k])
        else:
            assert np.array_equal(got[k], plain[:, :, ::-1]) and np.array_equal(y[k].numpy(), labels[k][:, ::-1])
            n_flipped += 1
    assert 0 < n_flipped < 16


def test_bad_arrays_are_refused():
    with pytest.raises(ValueError, match="uint8"):
        TensorBatches(np.zeros((2, 8, 8, 3), np.float32), np.zeros(2), (0.5,) * 3, (0.25,) * 3, 1,
                      shuffle=False, augment=False)
    with pytest.raises(ValueError, match="2 images but 3 targets"):
        TensorBatches(np.zeros((2, 8, 8, 3), np.uint8), np.zeros(3), (0.5,) * 3, (0.25,) * 3, 1,
                      shuffle=False, augment=False)


def test_preloaded_bf16_recipe_trains_only_then_finishes_on_a_second_run(tmp_path, capsys):
    """The GPU workflow on CPU: `--train-only` trains and stops before export (status 'stopped', no
    metrics.json); the plain rerun resumes every training stage as done and exports + scores."""
    import yaml

    data = yaml.safe_load(RECIPE.read_text())
    data["dataset"]["preload"] = True
    data["dataset"]["options"]["augment"] = True
    data["precision"] = "bf16"
    recipe = tmp_path / "preload.yaml"
    recipe.write_text(yaml.safe_dump(data))
    out = tmp_path / "run"
    assert main(["run", str(recipe), "--out", str(out), "--train-only"]) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "stopped" and "export" in run["error"]
    assert not (out / "metrics.json").exists() and not list(out.glob("*.onnx"))
    assert "training in fp32 on cpu" in (out / "log.txt").read_text()  # bf16 is for CUDA devices only
    trained = sorted(p.name for p in (out / "checkpoints").glob("*.pt"))
    stamps = {p: (out / "checkpoints" / p).stat().st_mtime_ns for p in trained}

    assert main(["run", str(recipe), "--out", str(out)]) == 0
    assert {p: (out / "checkpoints" / p).stat().st_mtime_ns for p in trained} == stamps  # nothing retrained
    metrics = json.loads((out / "metrics.json").read_text())
    assert json.loads((out / "run.json").read_text())["status"] == "succeeded"
    assert metrics["student"]["metrics"]["top1"] > 0.6  # the preloaded, augmented path learns (4 classes)
    assert metrics["onnx"] and (out / metrics["onnx"][0]["path"]).is_file()
    assert "nothing to train" in (out / "log.txt").read_text()
    # Each epoch records where it ran; the report sums training time per device.
    from robot_compress.compress.report import training_seconds_by_device

    by_device = training_seconds_by_device(metrics)
    assert list(by_device) == ["cpu"] and by_device["cpu"] > 0
