"""Total / nonzero / effective parameter counts, hand-computed on a tiny net with a dead neuron."""
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from robot_compress.compress.models import get_model  # noqa: E402
from robot_compress.compress.params import count_params, sparsity_table  # noqa: E402
from robot_compress.compress.pruning import prune_model  # noqa: E402


def _mlp():
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(1.0)
    return net


def test_dense_net_all_effective():
    out = count_params(_mlp(), torch.zeros(1, 3))
    assert out == {"total": 26, "nonzero": 26, "effective": 26, "effective_exact": True}


def test_dead_neuron_by_incoming_weights_kills_its_outgoing_weights():
    net = _mlp()
    with torch.no_grad():
        net[0].weight[1].zero_()  # hidden unit 1 receives nothing from the input: 3 zeros
        net[0].bias[1] = 0.5  # a constant is not a path from the input
        net[2].weight[0, 3] = 0.0  # one more zero elsewhere
    out = count_params(net, torch.zeros(1, 3))
    assert out["total"] == 26
    assert out["nonzero"] == 26 - 3 - 1
    # dead: unit 1's bias (1) and its 2 outgoing weights; the remaining 22 - 3 = 19 are effective
    assert out["effective"] == 19


def test_dead_neuron_by_outgoing_weights_kills_its_incoming_weights():
    net = _mlp()
    with torch.no_grad():
        net[2].weight[:, 2].zero_()  # hidden unit 2 reaches no output
    out = count_params(net, torch.zeros(1, 3))
    assert out["nonzero"] == 24
    assert out["effective"] == 24 - 3 - 1  # its 3 incoming weights and its bias are dead too


def test_dead_input_channel_of_conv_chain():
    net = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False), nn.Conv2d(2, 2, 1, bias=False), nn.Flatten(), nn.Linear(8, 1,
                                                                                                                 bias=False))
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(1.0)
        net[0].weight[0].zero_()  # conv channel 0 is dead -> conv2 weights reading it are dead (2)
    out = count_params(net, torch.zeros(1, 1, 2, 2))
    assert out["total"] == 2 + 4 + 8
    assert out["nonzero"] == 13
    assert out["effective"] == 13 - 2


def test_residual_add_keeps_channel_alive():
    class Res(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(2, 2, 1, bias=False)
            self.b = nn.Conv2d(2, 2, 1, bias=False)
            self.head = nn.Conv2d(2, 1, 1, bias=False)

        def forward(self, x):
            return self.head(x + self.b(self.a(x)))

    net = Res()
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(1.0)
        net.b.weight[0].zero_()  # b's output channel 0 is dead, but the skip path still carries channel 0
    out = count_params(net, torch.zeros(1, 2, 3, 3))
    assert out["effective"] == out["nonzero"] == 4 + 2 + 2


def test_cifar_resnet_pruning_lowers_effective_below_nonzero():
    net = get_model("resnet20", 10)
    dense = count_params(net)
    assert dense["effective_exact"] and dense["effective"] == dense["nonzero"]
    with torch.no_grad():
        net.layer3[2].conv2.weight.zero_()  # the block output is only the skip path now
        net.layer3[2].conv1.weight[:4].zero_()
    out = count_params(net)
    conv1_w = net.layer3[2].conv1.weight
    # conv1 feeds only the dead conv2, so all its weights die; so do the BN scales of bn1 and bn2 (64 each,
    # their biases are still 0)
    assert out["effective"] == out["nonzero"] - int((conv1_w != 0).sum()) - 2 * 64


def test_pruned_model_counts_masked_weights_as_zero():
    net = get_model("tiny_cnn", 3)
    before = count_params(net, torch.zeros(1, 3, 16, 16))
    prune_model(net, "class-uniform", 0.5)
    after = count_params(net, torch.zeros(1, 3, 16, 16))
    assert after["total"] == before["total"]
    assert after["nonzero"] < before["nonzero"]
    assert after["effective"] <= after["nonzero"]


def test_untraceable_model_falls_back_to_nonzero():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow: fx cannot trace it
                return self.fc(x)
            return -self.fc(x)

    out = count_params(Branchy(), torch.zeros(1, 3))
    assert out["effective_exact"] is False and out["effective"] == out["nonzero"]


def test_sparsity_table():
    net = _mlp()
    prune_model(net, "class-uniform", 0.5)
    rows = sparsity_table(net)
    assert [r["layer"] for r in rows] == ["0", "2"]
    assert rows[0]["total"] == 12 and rows[0]["nonzero"] == 6 and rows[0]["sparsity"] == pytest.approx(0.5)
    assert rows[1]["total"] == 8 and rows[1]["nonzero"] == 4
