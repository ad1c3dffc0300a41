"""Distillation losses against hand-computed values."""
import math

import pytest

torch = pytest.importorskip("torch")

from robot_compress.compress.kd import TeacherLogitCache, kd_loss, pixel_kd_loss  # noqa: E402


def _softmax(v):
    e = [math.exp(x) for x in v]
    return [x / sum(e) for x in e]


def test_kd_loss_matches_hand_computation():
    s, t, y = [1.0, 2.0, 0.0], [2.0, 0.0, 1.0], 1
    temp, alpha = 2.0, 0.7
    ps, pt = _softmax([v / temp for v in s]), _softmax([v / temp for v in t])
    kl = sum(b * math.log(b / a) for a, b in zip(ps, pt, strict=True))
    ce = -math.log(_softmax(s)[y])
    expected = alpha * temp**2 * kl + (1 - alpha) * ce
    got = kd_loss(torch.tensor([s]), torch.tensor([t]), torch.tensor([y]), temperature=temp, alpha=alpha)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_kd_loss_batchmean_averages_over_items():
    s = torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 0.0]])
    t = torch.tensor([[2.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    one = kd_loss(s[:1], t[:1], torch.tensor([0]), alpha=1.0)
    both = kd_loss(s, t, torch.tensor([0, 0]), alpha=1.0)  # second item has KL 0
    assert both.item() == pytest.approx(one.item() / 2, rel=1e-5)


def test_kd_zero_when_student_equals_teacher_at_alpha_one():
    logits = torch.randn(4, 10)
    assert kd_loss(logits, logits.clone(), torch.zeros(4, dtype=torch.long), alpha=1.0).item() == pytest.approx(
        0.0, abs=1e-6)
    assert kd_loss(logits, logits.clone(), torch.zeros(4, dtype=torch.long), alpha=0.5).item() > 0


def test_kd_gradient_flows_to_student_only():
    s = torch.randn(2, 5, requires_grad=True)
    t = torch.randn(2, 5, requires_grad=True)
    kd_loss(s, t, torch.tensor([0, 1])).backward()
    assert s.grad is not None and t.grad is None


def test_class_count_mismatch_is_an_error():
    with pytest.raises(ValueError, match="class counts"):
        kd_loss(torch.randn(2, 5), torch.randn(2, 6), torch.tensor([0, 1]))


def test_pixel_kd_ignores_void_pixels():
    torch.manual_seed(0)
    s, t = torch.randn(2, 4, 5, 6), torch.randn(2, 4, 5, 6)
    y = torch.randint(0, 4, (2, 5, 6))
    y[:, 0, :] = 11  # void row
    base = pixel_kd_loss(s, t, y, temperature=2.0, alpha=0.5, ignore_index=11)
    s2, t2 = s.clone(), t.clone()
    s2[:, :, 0, :] = torch.randn(2, 4, 6) * 100
    t2[:, :, 0, :] = torch.randn(2, 4, 6) * 100
    assert pixel_kd_loss(s2, t2, y, temperature=2.0, alpha=0.5, ignore_index=11).item() == pytest.approx(base.item())
    s3 = s.clone()
    s3[:, :, 1, :] += torch.randn(2, 4, 6)  # a scored pixel row does change it
    assert pixel_kd_loss(s3, t, y, temperature=2.0, alpha=0.5, ignore_index=11).item() != pytest.approx(base.item())


def test_pixel_kd_equals_mean_of_per_pixel_kl():
    s, t = torch.randn(1, 3, 2, 2), torch.randn(1, 3, 2, 2)
    y = torch.tensor([[[0, 1], [2, 9]]])
    kl = []
    for i, j in [(0, 0), (0, 1), (1, 0)]:
        ps, pt = _softmax(s[0, :, i, j].tolist()), _softmax(t[0, :, i, j].tolist())
        kl.append(sum(b * math.log(b / a) for a, b in zip(ps, pt, strict=True)))
    got = pixel_kd_loss(s, t, y, temperature=1.0, alpha=1.0, ignore_index=9)
    assert got.item() == pytest.approx(sum(kl) / 3, rel=1e-5)
    assert pixel_kd_loss(s, s.clone(), y, alpha=1.0, ignore_index=9).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("suffix", [".pt", ".npz"])
def test_teacher_logit_cache_round_trip(tmp_path, suffix):
    cache = TeacherLogitCache(key="teacher-a")
    assert cache.get([0, 1]) is None
    logits = torch.randn(3, 4)
    cache.put([5, 6, 7], logits)
    assert torch.allclose(cache.get([7, 5]), logits[[2, 0]], atol=1e-2)
    assert cache.get([5, 8]) is None
    path = cache.save(tmp_path / f"c{suffix}")
    loaded = TeacherLogitCache.load(path, key="teacher-a")
    assert len(loaded) == 3 and torch.equal(loaded.get([6]), cache.get([6]))
    with pytest.raises(ValueError, match="teacher-a"):
        TeacherLogitCache.load(path, key="teacher-b")


def test_cached_teacher_runs_teacher_once_per_distinct_input_and_returns_its_logits():
    from robot_compress.compress.kd import CachedTeacher

    calls = []

    class Teacher(torch.nn.Module):
        def forward(self, x):
            calls.append(x.shape[0])
            return x.flatten(1)[:, :3] * 2.0

    cached = CachedTeacher(Teacher())
    x = torch.randn(4, 3, 2, 2)
    first = cached(x)
    assert torch.equal(first, x.flatten(1)[:, :3] * 2.0) and calls == [4]
    # Same items in another order plus one new item: only the new one reaches the teacher.
    y = torch.cat([x[[2, 0]], torch.randn(1, 3, 2, 2)])
    second = cached(y)
    assert calls == [4, 1] and len(cached) == 5
    assert torch.equal(second, y.flatten(1)[:, :3] * 2.0)
    assert cached.hits == 2 and cached.misses == 5


@pytest.mark.parametrize("alpha", [0.5, 1.0])
def test_pixel_kd_non_finite_logits_at_void_pixels_reach_neither_loss_nor_gradient(alpha):
    """Issue 13, finding 9: a NaN teacher logit or an inf student logit at a void pixel must leave the loss
    and the student's gradient finite (masking after the softmax would give nan * 0 = nan)."""
    torch.manual_seed(0)
    s = torch.randn(2, 4, 5, 6)
    t = torch.randn(2, 4, 5, 6)
    y = torch.randint(0, 4, (2, 5, 6))
    y[:, 0, :] = 11  # void row
    s[0, 2, 0, 3] = float("inf")
    s[1, 0, 0, 1] = float("-inf")
    t[0, 1, 0, 0] = float("nan")
    t[1, 3, 0, 5] = float("inf")
    s.requires_grad_(True)
    loss = pixel_kd_loss(s, t, y, temperature=2.0, alpha=alpha, ignore_index=11)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(s.grad).all()
    assert (s.grad[:, :, 0, :] == 0).all()  # void pixels get no gradient at all
    assert s.grad[:, :, 1:, :].abs().sum() > 0  # scored pixels still learn
