"""Structured channel pruning (torch-pruning) yields a physically smaller dense model."""
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch_pruning")

from robot_compress.compress.models import get_model  # noqa: E402
from robot_compress.compress.pruning import make_permanent, prune_model  # noqa: E402
from robot_compress.compress.structured import structured_prune  # noqa: E402


def test_classifier_shrinks_and_keeps_output_shape():
    model = get_model("tiny_cnn", 5, width=16)
    x = torch.randn(2, 3, 16, 16)
    res = structured_prune(model, x[:1], 0.5)
    assert res["params_after"] < 0.5 * res["params_before"]
    assert res["macs_after"] < 0.5 * res["macs_before"]
    assert model[0].out_channels == 8 and model[4].in_channels == 8  # dependent layers follow
    assert model[9].out_features == 5  # the classifier keeps its classes
    assert model(x).shape == (2, 5)
    assert sum(p.numel() for p in model.parameters()) == res["params_after"]


def test_segmentation_keeps_class_count_and_resolution():
    model = get_model("tiny_segnet", 4, width=16)
    x = torch.randn(1, 3, 24, 20)
    res = structured_prune(model, x, 0.25)
    assert res["params_after"] < res["params_before"]
    assert model[0].out_channels == 12 and model[6].out_channels == 4
    assert model(x).shape == (1, 4, 24, 20)


def test_cifar_resnet_prunes_inner_block_channels():
    model = get_model("resnet20", 10)
    res = structured_prune(model, torch.randn(1, 3, 32, 32), 0.5)
    assert model.layer1[0].conv1.out_channels == 8 and model.layer1[0].conv2.out_channels == 16
    assert res["macs_after"] < 0.6 * res["macs_before"]
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_ratio_zero_is_identity_and_bad_ratio_is_an_error():
    model = get_model("tiny_cnn", 3)
    res = structured_prune(model, torch.randn(1, 3, 8, 8), 0.0)
    assert res["params_after"] == res["params_before"]
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        structured_prune(model, torch.randn(1, 3, 8, 8), 1.0)


def test_masked_model_must_be_made_permanent_first():
    model = get_model("tiny_cnn", 3)
    prune_model(model, "class-blind", 0.5)
    with pytest.raises(ValueError, match="make_permanent"):
        structured_prune(model, torch.randn(1, 3, 8, 8), 0.5)
    make_permanent(model)
    structured_prune(model, torch.randn(1, 3, 8, 8), 0.5)
    assert model(torch.randn(1, 3, 8, 8)).shape == (1, 3)


def test_round_to_keeps_channel_counts_on_kernel_friendly_multiples():
    x = torch.randn(1, 3, 16, 16)
    plain, rounded = get_model("tiny_cnn", 5, width=30), get_model("tiny_cnn", 5, width=30)
    structured_prune(plain, x, 0.6)
    structured_prune(rounded, x, 0.6, round_to=8)
    assert plain[0].out_channels == 12  # 30 * (1 - 0.6): an odd width for blocked kernels
    assert rounded[0].out_channels % 8 == 0 and rounded[0].out_channels < 30
    convs = [m for m in rounded.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(c.out_channels % 8 == 0 for c in convs)
    assert rounded(x).shape == (1, 5)


def test_layers_as_wide_as_the_class_count_are_pruned_only_the_head_is_kept():
    """Issue 13, finding 8: with 16 classes every 16-wide ResNet-20 layer used to be kept whole; the head is
    now found by identity (the layer whose output is the model's output), not by its width."""
    model = get_model("resnet20", 16)
    structured_prune(model, torch.randn(1, 3, 32, 32), 0.5)
    assert [block.conv1.out_channels for block in model.layer1] == [8, 8, 8]  # 16 wide, not the head: pruned
    assert model.linear.out_features == 16 and model(torch.randn(2, 3, 32, 32)).shape == (2, 16)


def test_head_layers_are_the_layers_producing_the_output():
    from robot_compress.compress.structured import head_layers

    cases = [("resnet20", 10, ["linear"]), ("tiny_segnet", 4, ["6"]),
             ("lraspp_mobilenet_v3_large", 5, ["model.classifier.high_classifier", "model.classifier.low_classifier"]),
             ("deeplabv3_mobilenet_v3_large", 5, ["model.classifier.4"])]
    for name, classes, expected in cases:
        model = get_model(name, classes).eval()
        names = {id(m): n for n, m in model.named_modules()}
        heads = head_layers(model, torch.zeros(1, 3, 64, 64))
        assert sorted(names[id(m)] for m in heads) == expected, name


def test_segmentation_head_of_class_count_width_keeps_the_rest_prunable():
    """LR-ASPP with as many classes as its 16-channel stem: the stem is pruned, both classifiers are kept."""
    model = get_model("lraspp_mobilenet_v3_large", 16)
    x = torch.randn(1, 3, 64, 64)
    structured_prune(model, x, 0.5, round_to=4)
    assert model.model.backbone["0"][0].out_channels < 16
    assert model.model.classifier.low_classifier.out_channels == 16
    assert model.model.classifier.high_classifier.out_channels == 16
    assert model(x).shape == (1, 16, 64, 64)


def test_ignored_layers_by_name_stay_whole():
    model = get_model("tiny_cnn", 5, width=16)
    structured_prune(model, torch.randn(1, 3, 16, 16), 0.5, ignored_layers=["0"])
    assert model[0].out_channels == 16 and model[4].out_channels < 32  # kept whole; the next one pruned
    with pytest.raises(ValueError, match="nope"):
        structured_prune(get_model("tiny_cnn", 5), torch.randn(1, 3, 16, 16), 0.5, ignored_layers=["nope"])
