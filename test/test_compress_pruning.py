"""The paper's three unstructured pruning criteria via torch.nn.utils.prune."""
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from robot_compress.compress.pruning import (  # noqa: E402
    ClassBlindCriterion,
    get_criterion,
    is_pruned,
    iterative_schedule,
    make_permanent,
    prunable_modules,
    prune_model,
)


def _net(seed=0):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(8, 4))
    with torch.no_grad():  # different scales per layer, so a global threshold treats layers differently
        net[0].weight.mul_(3.0)
        net[6].weight.mul_(0.3)
    return net


def _weights(net):
    return [m.weight.detach() for _, m in prunable_modules(net)]


def _zero_fraction(tensors):
    return sum(int((t == 0).sum()) for t in tensors) / sum(t.numel() for t in tensors)


def test_prunable_modules_are_conv_and_linear():
    assert [n for n, _ in prunable_modules(_net())] == ["0", "2", "6"]


@pytest.mark.parametrize("criterion", ["random", "class-uniform", "class-blind"])
@pytest.mark.parametrize("amount", [0.3, 0.75])
def test_exact_pruned_fraction(criterion, amount):
    net = _net()
    total = sum(w.numel() for w in _weights(net))
    summary = prune_model(net, criterion, amount, seed=1)
    assert is_pruned(net)
    zeros = sum(int((w == 0).sum()) for w in _weights(net))
    if criterion == "class-uniform":  # rounded per layer
        assert zeros == sum(round(amount * w.numel()) for w in _weights(net))
    else:
        assert zeros == round(amount * total)
    assert summary["pruned"] == zeros and summary["total"] == total


def test_class_uniform_hits_amount_in_every_layer():
    net = _net()
    prune_model(net, "class-uniform", 0.6)
    for w in _weights(net):
        assert int((w == 0).sum()) == round(0.6 * w.numel())


def test_class_blind_uses_one_global_threshold():
    net = _net()
    before = [w.clone() for w in _weights(net)]
    prune_model(net, "class-blind", 0.5)
    after = _weights(net)
    sparsities = [float((w == 0).float().mean()) for w in after]
    assert max(sparsities) - min(sparsities) > 0.2  # layers end up with different sparsities
    pruned = torch.cat([b[a == 0].abs() for b, a in zip(before, after, strict=True)])
    kept = torch.cat([b[a != 0].abs() for b, a in zip(before, after, strict=True)])
    assert pruned.max() <= kept.min()


def test_class_uniform_is_per_layer_magnitude():
    net = _net()
    before = [w.clone() for w in _weights(net)]
    prune_model(net, "class-uniform", 0.5)
    for b, a in zip(before, _weights(net), strict=True):
        assert b[a == 0].abs().max() <= b[a != 0].abs().min()


def test_random_is_reproducible_by_seed_and_differs_across_seeds():
    masks = []
    for seed in (3, 3, 4):
        net = _net()
        prune_model(net, "random", 0.5, seed=seed)
        masks.append(torch.cat([(w == 0).reshape(-1) for w in _weights(net)]))
    assert torch.equal(masks[0], masks[1])
    assert not torch.equal(masks[0], masks[2])


def test_masks_survive_fine_tuning():
    net = _net()
    prune_model(net, "class-blind", 0.6)
    zero_before = [(w == 0) for w in _weights(net)]
    opt = torch.optim.SGD(net.parameters(), lr=0.5, momentum=0.9)
    x, y = torch.randn(8, 3, 10, 10), torch.randint(0, 4, (8,))
    for _ in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    net(x)
    for z, w in zip(zero_before, _weights(net), strict=True):
        assert torch.all(w[z] == 0)
    orig = [m.weight_orig for _, m in prunable_modules(net)]
    assert any(bool((o[z] != 0).any()) for o, z in zip(orig, zero_before, strict=True))  # training did move them


def test_repruning_composes_cumulatively():
    net = _net()
    prune_model(net, "class-blind", 0.3)
    first = [(w == 0) for w in _weights(net)]
    weight_param = net[0].weight_orig
    prune_model(net, "class-blind", 0.6)
    assert net[0].weight_orig is weight_param  # same Parameter: earlier optimizers still see it
    after = _weights(net)
    assert _zero_fraction(after) == pytest.approx(0.6, abs=1e-3)
    for f, w in zip(first, after, strict=True):
        assert torch.all(w[f] == 0)
    prune_model(net, "random", 0.8, seed=0)
    assert _zero_fraction(_weights(net)) == pytest.approx(0.8, abs=1e-3)


def test_make_permanent_keeps_zeros_and_removes_reparametrization():
    net = _net()
    prune_model(net, "class-uniform", 0.5)
    make_permanent(net)
    assert not is_pruned(net)
    for _, m in prunable_modules(net):
        assert isinstance(m.weight, nn.Parameter)
        assert not hasattr(m, "weight_orig") and not hasattr(m, "weight_mask")
    assert _zero_fraction(_weights(net)) == pytest.approx(0.5, abs=0.01)
    assert all(k.endswith(("weight", "bias")) for k in net.state_dict())


@pytest.mark.parametrize("amount", [1.0, -0.1, 1.5, "0.5"])
def test_bad_amount_is_an_error(amount):
    with pytest.raises(ValueError, match=r"pruning amount must be in \[0, 1\)"):
        prune_model(_net(), "class-blind", amount)


def test_unknown_criterion():
    with pytest.raises(ValueError, match="class-blind"):
        get_criterion("magnitude")


def test_criterion_instances_plug_in():
    net = _net()
    summary = prune_model(net, ClassBlindCriterion(), 0.4)
    assert summary["criterion"] == "class-blind"


def test_iterative_schedule():
    sched = iterative_schedule(0.9, 4)
    assert len(sched) == 4 and sched[-1] == 0.9
    assert all(a < b for a, b in zip(sched, sched[1:], strict=False))
    assert sched[0] > 0.9 / 4  # cubic: prunes more early
    assert iterative_schedule(0.5, 1) == [0.5]
    with pytest.raises(ValueError):
        iterative_schedule(1.0, 3)
    with pytest.raises(ValueError):
        iterative_schedule(0.5, 0)


def test_ignored_layers_stay_whole_and_outside_the_count():
    net = _net()
    summary = prune_model(net, "class-blind", 0.5, ignored_layers=["6"])
    assert int((net[6].weight == 0).sum()) == 0 and not hasattr(net[6], "weight_mask")
    pruned = [net[0].weight, net[2].weight]
    assert sum(int((w == 0).sum()) for w in pruned) == round(0.5 * sum(w.numel() for w in pruned))
    assert summary["ignored_layers"] == ["6"] and [r["layer"] for r in summary["per_layer"]] == ["0", "2"]
    with pytest.raises(ValueError, match="fc9"):
        prune_model(_net(), "class-blind", 0.5, ignored_layers=["fc9"])


@pytest.mark.parametrize("criterion", ["random", "class-uniform", "class-blind"])
def test_max_layer_sparsity_caps_every_layer(criterion):
    net = _net()
    summary = prune_model(net, criterion, 0.6, seed=2, max_layer_sparsity=0.7)
    fractions = [r["fraction"] for r in summary["per_layer"]]
    assert max(fractions) <= 0.7
    if criterion != "class-uniform":  # a global criterion takes the rest from the other layers
        assert summary["pruned"] == round(0.6 * summary["total"])


def test_cap_below_the_amount_stops_at_the_cap_and_keeps_every_layer_alive():
    net = _net()
    summary = prune_model(net, "class-blind", 0.9, max_layer_sparsity=0.5)
    assert all(r["fraction"] <= 0.5 for r in summary["per_layer"]) and summary["emptied_layers"] == []
    assert summary["fraction"] == pytest.approx(sum(r["total"] // 2 for r in summary["per_layer"]) / summary["total"])


def test_capped_class_blind_keeps_one_threshold_over_the_layers_below_their_cap():
    """With a cap, class-blind still prunes by one magnitude threshold over every layer that has room left;
    a layer at its cap loses exactly its smallest weights."""
    net = _net()
    weights = [w.clone().abs() for w in _weights(net)]
    prune_model(net, "class-blind", 0.5, max_layer_sparsity=0.6)
    pruned_free, kept_free = [], []
    for w, (_, module) in zip(weights, prunable_modules(net), strict=True):
        mask = module.weight_mask.bool()
        if int((~mask).sum()) == int(0.6 * w.numel()):  # at its cap
            assert w[~mask].max() <= w[mask].min()
        else:
            pruned_free.append(w[~mask])
            kept_free.append(w[mask])
    assert pruned_free and torch.cat(pruned_free).max() <= torch.cat(kept_free).min()


def _small_last_layer():
    net = _net()
    with torch.no_grad():
        net[6].weight.mul_(1e-3)
    return net


def test_a_layer_emptied_by_the_criterion_is_reported_and_warned_about():
    """class-blind at a high amount empties the small-weight layer (the reason it collapses on CamVid)."""
    messages = []
    summary = prune_model(_small_last_layer(), "class-blind", 0.5, warn=messages.append)
    assert summary["emptied_layers"] == ["6"]
    assert len(messages) == 1 and "6" in messages[0] and "max_layer_sparsity" in messages[0]
    with pytest.warns(RuntimeWarning, match="removed every weight"):
        prune_model(_net(), "class-blind", 0.99)
    capped = prune_model(_small_last_layer(), "class-blind", 0.5, max_layer_sparsity=0.9, warn=messages.append)
    assert capped["emptied_layers"] == [] and len(messages) == 1
    assert capped["per_layer"][2]["pruned"] == int(0.9 * 32) and capped["pruned"] == round(0.5 * capped["total"])
