"""Model registry, builders and checkpoint loading."""
import zipfile

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import shared_path  # noqa: E402

from robot_compress.compress.models import (  # noqa: E402
    CheckpointError,
    UnknownModelError,
    get_model,
    list_models,
    load_checkpoint,
    load_user_model,
    model_task,
)

SLOW_FORWARD = {"resnet101", "fcn_resnet101"}  # built, but not run: too slow for a unit test on 2 cores


# Detectors return (boxes, scores) and are covered by test_detection_models.py.
@pytest.mark.parametrize("name", sorted(n for n, task in list_models().items() if task != "detection"))
def test_every_model_builds_and_returns_logits_tensor(name):
    model = get_model(name, 5).eval()
    task = model_task(name)
    size = 32 if task == "classification" else 64
    if name in SLOW_FORWARD:
        pytest.skip(f"{name} builds; its forward is too slow for the unit suite")
    with torch.no_grad():
        out = model(torch.randn(2, 3, size, size))
    assert isinstance(out, torch.Tensor)
    assert out.shape == ((2, 5) if task == "classification" else (2, 5, size, size))


def test_big_models_build_with_the_right_head():
    assert get_model("resnet101", 7).fc.out_features == 7
    assert get_model("fcn_resnet101", 7).model.classifier[4].out_channels == 7


def test_small_input_stem():
    model = get_model("resnet18", 10, small_input=True)
    assert model.conv1.stride == (1, 1) and isinstance(model.maxpool, torch.nn.Identity)
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


def test_unknown_model_lists_known_names():
    with pytest.raises(UnknownModelError, match="resnet20"):
        get_model("resnet21", 10)
    with pytest.raises(ValueError, match="bad options"):
        get_model("lenet5", 10, width=3)


def test_user_model_by_import_path():
    model = load_user_model("robot_compress.compress.models:tiny_cnn", num_classes=3)
    assert model(torch.zeros(1, 3, 8, 8)).shape == (1, 3)
    with pytest.raises(ValueError, match="package.module:Callable"):
        load_user_model("robot_compress.compress.models.tiny_cnn")
    with pytest.raises(ValueError, match="no attribute"):
        load_user_model("robot_compress.compress.models:nope")


def test_checkpoint_round_trip_with_wrappers_and_prefix(tmp_path):
    src = get_model("tiny_cnn", 4)
    state = {"module." + k: v for k, v in src.state_dict().items()}
    for i, obj in enumerate([src.state_dict(), {"state_dict": state}, {"model": src.state_dict(), "epoch": 3}]):
        path = tmp_path / f"c{i}.pt"
        torch.save(obj, path)
        dst = load_checkpoint(get_model("tiny_cnn", 4), path)
        for k, v in src.state_dict().items():
            assert torch.equal(dst.state_dict()[k], v)


def test_pruned_checkpoint_loads_into_plain_model(tmp_path):
    from robot_compress.compress.pruning import prune_model

    src = get_model("tiny_cnn", 4)
    prune_model(src, "class-blind", 0.5)
    torch.save(src.state_dict(), tmp_path / "p.pt")
    dst = load_checkpoint(get_model("tiny_cnn", 4), tmp_path / "p.pt")
    assert torch.equal(dst[0].weight, src[0].weight_orig * src[0].weight_mask)


def test_missing_and_corrupt_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(get_model("tiny_cnn", 4), tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"this is not a torch file")
    with pytest.raises(CheckpointError, match="not a readable torch file"):
        load_checkpoint(get_model("tiny_cnn", 4), bad)
    good = tmp_path / "good.pt"
    torch.save(get_model("tiny_cnn", 4).state_dict(), good)
    truncated = tmp_path / "trunc.pt"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(CheckpointError):
        load_checkpoint(get_model("tiny_cnn", 4), truncated)


def test_mismatched_checkpoint_names_the_key(tmp_path):
    path = tmp_path / "c10.pt"
    torch.save(get_model("tiny_cnn", 10).state_dict(), path)
    with pytest.raises(CheckpointError, match=r"9\.weight: checkpoint \(10, 16\) vs model \(4, 16\)"):
        load_checkpoint(get_model("tiny_cnn", 4), path)
    with pytest.raises(CheckpointError, match="missing keys.*conv1.weight"):
        load_checkpoint(get_model("lenet5", 10), path)


def test_cifar_resnet20_pretrained_predicts_real_images():
    weights = sorted(shared_path("weights", "cifar10-resnet").glob("resnet20-*.th"))
    archive = shared_path("data", "cifar10-jpeg-train.zip")
    if not weights:
        pytest.skip("no resnet20 weights in ../shared")
    model = load_checkpoint(get_model("resnet20", 10), weights[0]).eval()
    from robot_compress.compress.data import CIFAR10_LABELS, _decode_rgb

    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    xs, ys = [], []
    with zipfile.ZipFile(archive) as zf:
        for k, label in enumerate(CIFAR10_LABELS):
            img = _decode_rgb(zf.read(f"train/{label}/0007.jpg"))
            xs.append(((img / 255.0 - mean) / std).transpose(2, 0, 1))
            ys.append(k)
    with torch.no_grad():
        pred = model(torch.tensor(np.stack(xs), dtype=torch.float32)).argmax(1).numpy()
    assert (pred == np.array(ys)).sum() >= 6  # one image per class; a broken option-A net is at chance


def test_segmentation_models_use_batchnorm_momentum_0_1():
    """Short from-scratch training needs BN running stats that keep up (torchvision MobileNetV3 uses 0.01)."""
    from robot_compress.compress.models import get_model

    model = get_model("lraspp_mobilenet_v3_large", 11)
    momenta = {m.momentum for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert momenta == {0.1}
