"""Tests of ``mixplugins.core.sampling``: the generator-driven draws."""
import math

import pytest
import torch

from mixplugins.core.checks import check_positive
from mixplugins.core.sampling import (rand_bbox, sample_beta, sample_choice,
                                      sample_randint, sample_uniform)


def _ks_statistic(samples: torch.Tensor, cdf) -> float:
    """Kolmogorov-Smirnov distance between samples and a closed-form CDF."""
    x = samples.double().sort().values
    n = x.numel()
    f = cdf(x)
    i = torch.arange(1, n + 1, dtype=torch.float64)
    return float(torch.maximum(i / n - f, f - (i - 1) / n).max())


# Closed-form CDFs of the symmetric Beta(a, a) for three values of a.
BETA_CDFS = {
    0.5: lambda x: 2 / math.pi * torch.asin(x.sqrt()),
    1.0: lambda x: x,
    2.0: lambda x: 3 * x**2 - 2 * x**3,
}


@pytest.mark.parametrize('alpha', sorted(BETA_CDFS))
def test_sample_beta_matches_closed_form_cdf(alpha):
    n = 4000
    g = torch.Generator().manual_seed(1)
    lam = sample_beta(alpha, n, generator=g)
    assert lam.shape == (n, ) and lam.dtype == torch.float32
    assert bool(((lam >= 0) & (lam <= 1)).all())
    # KS critical value at the 0.1% level is 1.95 / sqrt(n).
    assert _ks_statistic(lam, BETA_CDFS[alpha]) < 1.95 / math.sqrt(n)


@pytest.mark.parametrize('alpha', [0.2, 1.0, 4.0])
def test_sample_beta_moments(alpha):
    lam = sample_beta(alpha, 20000,
                      generator=torch.Generator().manual_seed(2)).double()
    var = 1 / (4 * (2 * alpha + 1))  # variance of Beta(a, a)
    se_mean = math.sqrt(var / lam.numel())
    assert abs(float(lam.mean()) - 0.5) < 5 * se_mean
    assert float(lam.var()) == pytest.approx(var, rel=0.05)


@pytest.mark.parametrize('alpha', [1e-3, 1e-4, 1e-8])
def test_sample_beta_tiny_alpha_is_symmetric_without_nan(alpha):
    # Both Gamma draws can underflow; Beta(a, a) tends to {0, 1} w.p. 1/2
    # each as a -> 0, and lam, 1 - lam have the same law for every a.
    n = 4000
    lam = sample_beta(alpha, n, generator=torch.Generator().manual_seed(3))
    assert not bool(lam.isnan().any())
    near_ends = (lam < 1e-3) | (lam > 1 - 1e-3)
    assert float(near_ends.float().mean()) > 0.98
    # mean and P(lam > 1/2) are 1/2 (sd of each estimate <= 0.5/sqrt(n)).
    assert abs(float(lam.double().mean()) - 0.5) < 5 * 0.5 / math.sqrt(n)
    assert abs(float((lam > 0.5).double().mean()) -
               0.5) < 5 * 0.5 / math.sqrt(n)


def test_sample_beta_shapes():
    g = torch.Generator().manual_seed(0)
    assert sample_beta(1.0, generator=g).shape == ()
    assert sample_beta(1.0, 3, generator=g).shape == (3, )
    assert sample_beta(1.0, (2, 5), generator=g).shape == (2, 5)
    assert sample_beta(1, generator=g).dtype == torch.float32  # int alpha


def test_sample_beta_is_deterministic_under_a_generator():
    a = sample_beta(0.7, 8, generator=torch.Generator().manual_seed(5))
    b = sample_beta(0.7, 8, generator=torch.Generator().manual_seed(5))
    c = sample_beta(0.7, 8, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_draws_with_a_generator_leave_the_global_rng_alone():
    state = torch.get_rng_state()
    g = torch.Generator().manual_seed(0)
    sample_beta(1e-4, 64, generator=g)
    sample_uniform(0.0, 1.0, 4, generator=g)
    sample_randint(5, 4, generator=g)
    sample_choice([1, 2, 3], generator=g)
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize('alpha', [0, 0.0, -1.0, float('nan')])
def test_sample_beta_rejects_non_positive_alpha(alpha):
    with pytest.raises(ValueError, match='alpha'):
        sample_beta(alpha)


@pytest.mark.parametrize('alpha', [True, '1.0', None])
def test_sample_beta_rejects_non_numbers(alpha):
    with pytest.raises(TypeError, match='alpha'):
        sample_beta(alpha)


def test_check_positive_returns_float():
    assert check_positive('omega', 2) == 2.0
    assert isinstance(check_positive('omega', 2), float)
    with pytest.raises(ValueError, match='omega'):
        check_positive('omega', -0.5)


def test_sample_uniform_range_and_mean():
    g = torch.Generator().manual_seed(0)
    u = sample_uniform(-2.0, 3.0, 20000, generator=g)
    assert u.dtype == torch.float64
    assert float(u.min()) >= -2.0 and float(u.max()) < 3.0
    # U(-2, 3): mean 0.5, sd 5 / sqrt(12).
    assert abs(float(u.mean()) -
               0.5) < 5 * (5 / math.sqrt(12)) / math.sqrt(u.numel())


def test_sample_randint_and_choice_cover_their_range():
    g = torch.Generator().manual_seed(0)
    r = sample_randint(7, 2000, generator=g)
    assert r.dtype == torch.int64
    assert set(r.tolist()) == set(range(7))
    choices = ('a', 'b', 'c')
    picks = [sample_choice(choices, generator=g) for _ in range(300)]
    assert set(picks) == set(choices)
    counts = [picks.count(c) for c in choices]
    assert min(counts) > 60  # about 100 each


# ----------------------------------------------------------------- rand_bbox
def _official_box(height, width, area, cy, cx):
    """CutMix's rand_bbox for a given centre (mmpretrain / timm, numpy)."""
    ratio = math.sqrt(area)
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    y1, y2 = min(max(cy - cut_h // 2, 0), height), min(cy + cut_h // 2, height)
    x1, x2 = min(max(cx - cut_w // 2, 0), width), min(cx + cut_w // 2, width)
    return [x1, y1, x2, y2]


def test_rand_bbox_equals_the_official_rule_for_its_centre():
    g = torch.Generator().manual_seed(3)
    for area in (0.0, 0.1, 0.37, 0.5, 1.0):
        for _ in range(40):
            state = g.get_state()
            box = rand_bbox(17, 23, area, generator=g)
            g2 = torch.Generator()
            g2.set_state(state)
            u = torch.rand((2, 1), generator=g2, dtype=torch.float64)
            cy, cx = int(u[0, 0] * 17), int(u[1, 0] * 23)
            assert box.tolist() == _official_box(17, 23, area, cy, cx)


def test_rand_bbox_count_equals_a_loop_over_boxes():
    g = torch.Generator().manual_seed(5)
    heights = torch.tensor([5, 17, 32, 1])
    widths = torch.tensor([9, 23, 32, 4])
    area = torch.tensor([0.2, 0.5, 0.9, 1.0], dtype=torch.float64)
    state = g.get_state()
    boxes = rand_bbox(heights, widths, area, count=4, generator=g)
    g.set_state(state)
    u = torch.rand((2, 4), generator=g, dtype=torch.float64)
    for i in range(4):
        h, w = int(heights[i]), int(widths[i])
        cy, cx = int(u[0, i] * h), int(u[1, i] * w)
        expected = _official_box(h, w, float(area[i]), cy, cx)
        assert boxes[i].tolist() == expected
    assert boxes.dtype == torch.int64 and boxes.shape == (4, 4)


def test_rand_bbox_bounds_and_seed():
    g1 = torch.Generator().manual_seed(11)
    g2 = torch.Generator().manual_seed(11)
    b1 = rand_bbox(17, 23, torch.rand(500, dtype=torch.float64), count=500,
                   generator=g1)
    b2 = rand_bbox(17, 23, b1.new_zeros(500).double() + 0.5, count=500,
                   generator=g2)
    x1, y1, x2, y2 = b1.unbind(1)
    assert ((0 <= x1) & (x1 <= x2) & (x2 <= 23)).all()
    assert ((0 <= y1) & (y1 <= y2) & (y2 <= 17)).all()
    assert not torch.equal(b1, b2)  # the area matters
    empty = rand_bbox(8, 8, 0.0)
    assert empty[2:].tolist() == empty[:2].tolist()  # zero area: empty box


@pytest.mark.parametrize('kwargs, match', [
    (dict(height=8, width=8, area=1.5), 'area'),
    (dict(height=0, width=8, area=0.5), 'height'),
    (dict(height=8, width=True, area=0.5), 'width'),
    (dict(height=8, width=8, area=0.5, count=0), 'count'),
    (dict(height=torch.tensor([4, 4]), width=8, area=0.5, count=3), 'height'),
])
def test_rand_bbox_refuses_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        rand_bbox(**kwargs)
