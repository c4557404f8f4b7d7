"""Tests of the R-Mix kernels (``mixplugins.core.rmix``).

Expectations come from hand computations, plain per-sample reference loops
(``torch.quantile`` per row, explicit pooling bins, per-pixel case analysis)
and invariants of the method (Luu et al., arXiv 2212.04875): targets sum to
1, label weights equal the pixel fractions, about ``1 - q`` of the cells are
kept.
"""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mixplugins.core import (grid_masks, input_saliency, mix_by_masks,
                             sample_rmix_params, saliency_from_grad)
from mixplugins.core import saliency as saliency_module
from mixplugins.core.rmix import (DEFAULT_QUANTILE_LEVELS, _rowwise_quantile,
                                  cell_masks, saliency_size)

LEVELS = torch.linspace(0, 0.99, 10)  # the official q grid (num_action=10)
COUNTS_4X4 = [16, 14, 12, 11, 9, 7, 6, 4, 2, 1]
COUNTS_2X2 = [4, 3, 3, 3, 2, 2, 2, 1, 1, 1]


# ---------------------------------------------------------------- references
def _ref_cells(sal: torch.Tensor, grid: int) -> torch.Tensor:
    """Adaptive average pooling of one (H, W) map with explicit bins."""
    h, w = sal.shape
    cells = torch.empty(grid, grid, dtype=torch.float64)
    for i in range(grid):
        r0, r1 = i * h // grid, -(-(i + 1) * h // grid)
        for j in range(grid):
            c0, c1 = j * w // grid, -(-(j + 1) * w // grid)
            cells[i, j] = sal[r0:r1, c0:c1].double().mean()
    return cells.float()


def _ref_mask(sal: torch.Tensor, grid: int, q: float):
    """One image's mask by a plain loop; returns (mask (H, W), threshold)."""
    h, w = sal.shape
    cells = _ref_cells(sal, grid)
    thr = torch.quantile(cells.flatten(), torch.tensor(q, dtype=torch.float32))
    keep = cells >= thr
    mask = torch.zeros(h, w, dtype=torch.bool)
    for r in range(h):
        for c in range(w):
            mask[r, c] = keep[r * grid // h, c * grid // w]
    return mask, thr


def _ref_mix(x, t, m, perm, lam):
    """Per-sample, per-pixel case analysis of the R-Mix mixing rule."""
    b_, _, h, w = x.shape
    out, out_t = torch.empty_like(x), torch.empty_like(t)
    for b in range(b_):
        p = int(perm[b])
        n_eq = n_own = n_other = 0
        for i in range(h):
            for j in range(w):
                m1, m2 = bool(m[b, 0, i, j]), bool(m[p, 0, i, j])
                if m1 == m2:
                    out[b, :, i,
                        j] = lam * x[b, :, i, j] + (1 - lam) * x[p, :, i, j]
                    n_eq += 1
                elif m1:
                    out[b, :, i, j] = x[b, :, i, j]
                    n_own += 1
                else:
                    out[b, :, i, j] = x[p, :, i, j]
                    n_other += 1
        a = h * w
        out_t[b] = (n_eq / a * (lam * t[b] + (1 - lam) * t[p]) +
                    n_own / a * t[b] + n_other / a * t[p])
    return out, out_t


def _tiny_cnn(num_classes: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, num_classes))


# ------------------------------------------------------- saliency_from_grad
def test_saliency_from_grad_is_rms_over_channels():
    grad = torch.zeros(1, 2, 1, 3)
    grad[0, :, 0, 0] = torch.tensor([3., 4.])  # sqrt((9 + 16) / 2)
    grad[0, :, 0, 1] = torch.tensor([-2., 0.])  # sqrt(4 / 2)
    sal = saliency_from_grad(grad)
    assert sal.shape == (1, 1, 3)
    torch.testing.assert_close(
        sal, torch.tensor([[[math.sqrt(12.5),
                             math.sqrt(2.0), 0.0]]]))


def test_saliency_from_grad_rejects_non_4d():
    with pytest.raises(ValueError, match='grad'):
        saliency_from_grad(torch.zeros(2, 3, 4))


# ----------------------------------------------------------- input_saliency
def test_input_saliency_of_linear_model_by_hand():
    # logits = W x with x = 0, so softmax = (1/2, 1/2) and
    # dL/dx_b = (1/B) * sum_k (p_k - y_k) W_k with B = 2:
    #   b = 0 (y=0): (W1 - W0) / 4;  b = 1 (y=1): (W0 - W1) / 4.
    # W1 - W0 = [3, 0, 4, 2] -> grad [0.75, 0, 1, 0.5], flattened (C, H, W)
    # = (2, 1, 2): channel 0 = [0.75, 0], channel 1 = [1, 0.5].
    lin = nn.Linear(4, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1., 0., 0., 2.], [4., 0., 4., 4.]]))
    x = torch.zeros(2, 2, 1, 2)
    sal = input_saliency(lambda v: lin(v.flatten(1)), x, torch.tensor([0, 1]))
    pixel = torch.tensor([math.sqrt((0.75**2 + 1.0) / 2), math.sqrt(0.25 / 2)])
    torch.testing.assert_close(sal, pixel.expand(2, 1, 2))


def test_input_saliency_with_non_uniform_softmax_by_hand():
    # bias gives logits (0, log 2, 0) -> p = (1/4, 1/2, 1/4); label 2, B = 1:
    # grad = 1/4 W0 + 1/2 W1 - 3/4 W2 = [1, 0] + [0, 1] - [0, 3] = [1, -2].
    lin = nn.Linear(2, 3)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[4., 0.], [0., 2.], [0., 4.]]))
        lin.bias.copy_(torch.tensor([0., math.log(2.0), 0.]))
    x = torch.zeros(1, 2, 1, 1)
    sal = input_saliency(lambda v: lin(v.flatten(1)), x, torch.tensor([2]))
    torch.testing.assert_close(sal, torch.tensor([[[math.sqrt(2.5)]]]))


def test_input_saliency_matches_backward_on_a_leaf():
    model = _tiny_cnn()
    x = torch.randn(4, 3, 6, 5, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 2, 1, 2])
    sal, logits = input_saliency(model, x, y, return_logits=True)
    leaf = x.clone().requires_grad_(True)
    F.cross_entropy(model(leaf), y).backward()
    expected = leaf.grad.pow(2).mean(1).sqrt()
    torch.testing.assert_close(sal, expected)
    torch.testing.assert_close(logits, model(x).detach())
    assert not logits.requires_grad


def test_input_saliency_leaves_parameter_grads_alone():
    model = _tiny_cnn()
    fired = []
    for p in model.parameters():
        p.register_post_accumulate_grad_hook(lambda p: fired.append(p))
    x = torch.randn(2, 3, 5, 5)
    y = torch.tensor([1, 0])
    # None stays None
    input_saliency(model, x, y)
    assert all(p.grad is None for p in model.parameters())
    # pre-filled grads stay unchanged (and are not replaced)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    before = [(p.grad, p.grad.clone()) for p in model.parameters()]
    input_saliency(model, x, y)
    for p, (g, g0) in zip(model.parameters(), before):
        assert p.grad is g
        assert torch.equal(p.grad, g0)
    assert fired == []


def test_input_saliency_does_not_touch_inputs():
    model = _tiny_cnn()
    x = torch.randn(2, 3, 5, 5)
    x0 = x.clone()
    input_saliency(model, x, torch.tensor([1, 0]))
    assert torch.equal(x, x0)
    assert x.grad is None and not x.requires_grad
    leaf = torch.randn(2, 3, 5, 5, requires_grad=True)
    input_saliency(model, leaf, torch.tensor([1, 0]))
    assert leaf.grad is None


def test_input_saliency_works_under_no_grad():
    model = _tiny_cnn()
    x = torch.randn(2, 3, 5, 5)
    y = torch.tensor([1, 0])
    with torch.no_grad():
        sal = input_saliency(model, x, y)
    torch.testing.assert_close(sal, input_saliency(model, x, y))


@pytest.mark.parametrize('dtype, out_dtype',
                         [(torch.float32, torch.float32),
                          (torch.bfloat16, torch.bfloat16),
                          (torch.float16, torch.float32)])
def test_input_saliency_keeps_dtype(dtype, out_dtype):
    """The inputs' dtype, except float16, whose range would flush small
    saliencies to 0: float32 then."""
    model = _tiny_cnn()
    x = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([1, 2])
    ref = input_saliency(model, x, y)
    sal = input_saliency(model.to(dtype), x.to(dtype), y)
    assert sal.dtype == out_dtype and sal.shape == (2, 6, 6)
    torch.testing.assert_close(sal.float(),
                               ref,
                               rtol=0.1,
                               atol=0.1 * float(ref.max()))


# ------------------------------------------- input_saliency under float16
def _near_uniform_cnn(head_std: float = 3e-5) -> nn.Module:
    """A BN CNN whose head is tiny, so its logits are near uniform (as early
    in training) and the per-pixel input gradients of the mean loss are
    ~1e-7: below float16's smallest normal (6e-5)."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1, stride=2), nn.BatchNorm2d(32),
        nn.ReLU(), nn.Conv2d(32, 64, 3, padding=1, stride=2),
        nn.BatchNorm2d(64), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(64, 10))
    with torch.no_grad():
        model[-1].weight.normal_(0, head_std)
        model[-1].bias.zero_()
    return model


def _cell_agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fraction of equal cells of the grid masks of two saliencies, over
    grids 2 and 4 and the ten official quantile levels."""
    n = a.shape[0]
    agree = [(cell_masks(a, grid, torch.full((n, ), q)) == cell_masks(
        b, grid, torch.full((n, ), q))).float().mean()
             for grid in (2, 4) for q in DEFAULT_QUANTILE_LEVELS]
    return float(torch.stack(agree).mean())


def _fp16_case():
    model = _near_uniform_cnn()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, 16, 16, generator=g)
    y = torch.randint(0, 10, (64, ), generator=g)
    return model, x, y


def test_input_saliency_under_fp16_autocast_gives_the_fp32_masks():
    """The saliency of a float16 clean pass is the float32 one up to
    rounding: no underflow to 0 (a loss scale), masks equal on >= 98% of
    the cells. Measured: 0 zeros, 99.5% (bf16's rounding: 98.0%)."""
    model, x, y = _fp16_case()
    ref = input_saliency(model, x, y)
    assert float(ref.max()) < 1e-6  # the float16 subnormal range
    with torch.autocast('cpu', dtype=torch.float16):
        sal, logits = input_saliency(model, x, y, return_logits=True)
    assert logits.dtype == torch.float16  # the pass really ran in fp16
    assert sal.dtype == torch.float32 and sal.shape == ref.shape
    assert bool(torch.isfinite(sal).all())
    assert float((sal == 0).float().mean()) <= 0.01
    assert bool((sal.flatten(1).amax(1) > 0).all())  # no all-zero map
    # relative L2 error: measured 0.023 (0.84 unscaled)
    assert float((sal - ref).norm() / ref.norm()) < 0.05
    assert _cell_agreement(ref, sal) >= 0.98


def test_without_a_loss_scale_the_fp16_case_underflows(monkeypatch):
    """What the loss scale fixes: unscaled, the same float16 pass flushes
    a fifth of the pixels to exactly 0 and the masks agree on ~82% of the
    cells (the code before issue 12)."""
    model, x, y = _fp16_case()
    ref = input_saliency(model, x, y)
    monkeypatch.setattr(saliency_module, 'FP16_LOSS_SCALES', (1.0, ))
    with torch.autocast('cpu', dtype=torch.float16):
        sal = input_saliency(model, x, y)
    assert float((sal == 0).float().mean()) > 0.1
    assert float((sal - ref).norm() / ref.norm()) > 0.5
    assert _cell_agreement(ref, sal) < 0.9


def _counting_linear(weight: torch.Tensor, passes: list):
    """``logits = W x`` (no bias) that records the dtype of every backward
    reaching the logits."""
    lin = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    with torch.no_grad():
        lin.weight.copy_(weight)

    def forward(v):
        out = lin(v.flatten(1))
        if out.requires_grad:
            out.register_hook(lambda g: passes.append(g.dtype))
        return out

    return forward


def test_input_saliency_fp16_retries_smaller_loss_scales_on_overflow():
    # the by-hand linear case times 1000: dL/dx = [750, 0, 1000, 500] for
    # image 0, which overflows float16 (max 65504) when scaled by 2**16
    # and by 2**8, not by 1: three backwards, the last one kept
    weight = torch.tensor([[1., 0., 0., 2.], [4., 0., 4., 4.]]) * 1000
    x = torch.zeros(2, 2, 1, 2)
    y = torch.tensor([0, 1])
    passes = []
    forward = _counting_linear(weight, passes)
    ref = input_saliency(forward, x, y)
    assert passes == [torch.float32]
    passes.clear()
    with torch.autocast('cpu', dtype=torch.float16):
        sal, loss = input_saliency(forward, x, y, return_loss=True)
    assert passes == [torch.float16] * 3
    torch.testing.assert_close(sal, ref)
    pixel = 1000 * torch.tensor(
        [math.sqrt((0.75**2 + 1.0) / 2), math.sqrt(0.25 / 2)])
    torch.testing.assert_close(sal, pixel.expand(2, 1, 2))
    # the returned loss is not scaled and its graph is kept
    assert loss.requires_grad
    torch.testing.assert_close(loss, torch.tensor(math.log(2.0)))


def test_input_saliency_fp16_takes_one_backward_when_the_first_scale_fits():
    passes = []
    # dL/dx <= 0.1: 6554 at 2**16
    forward = _counting_linear(
        torch.tensor([[1., 0., 0., 2.], [4., 0., 4., 4.]]) / 10, passes)
    with torch.autocast('cpu', dtype=torch.float16):
        input_saliency(forward, torch.zeros(2, 2, 1, 2), torch.tensor([0, 1]))
    assert passes == [torch.float16]


@pytest.mark.parametrize('dtype', [None, torch.bfloat16])
def test_input_saliency_is_unscaled_in_fp32_and_bf16(dtype, monkeypatch):
    """float32 and bfloat16 (float32's exponent range) take one unscaled
    backward: the same saliency as before the loss scale existed."""
    calls = []
    real = torch.autograd.grad

    def grad(*args, **kwargs):
        calls.append(kwargs.get('grad_outputs'))
        return real(*args, **kwargs)

    model = _tiny_cnn()
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([0, 1, 2, 0])
    monkeypatch.setattr(torch.autograd, 'grad', grad)
    with torch.autocast('cpu', dtype=dtype or torch.float32,
                        enabled=dtype is not None):
        sal = input_saliency(model, x, y)
        leaf = x.clone().requires_grad_(True)
        loss = F.cross_entropy(model(leaf).float(), y)
    assert calls == [None]
    (g, ) = real(loss, leaf)
    assert torch.equal(sal, saliency_from_grad(g))


@pytest.mark.parametrize('dtype', [None, torch.float16])
def test_input_saliency_never_returns_nan_or_inf(dtype):
    """A diverged model (NaN logits) gives an all-zero saliency (all cells
    kept: plain mixup), never NaN; float16 does not retry a NaN loss."""
    passes = []
    lin = _counting_linear(torch.ones(2, 4), passes)
    x = torch.zeros(2, 2, 1, 2)
    with torch.autocast('cpu', dtype=dtype or torch.float32,
                        enabled=dtype is not None):
        sal = input_saliency(lambda v: lin(v) * float('nan'), x,
                             torch.tensor([0, 1]))
    assert len(passes) == 1
    assert torch.equal(sal, torch.zeros(2, 1, 2))
    assert bool(grid_masks(sal, 1, torch.tensor([0.5, 0.99])).all())


# ------------------------------------------------- input_saliency, resized
@pytest.mark.parametrize('h, w, scale, size', [
    (32, 32, 1.0, (32, 32)),
    (32, 32, 0.5, (16, 16)),
    (224, 224, 0.25, (56, 56)),
    (30, 45, 0.25, (8, 11)),  # 7.5 rounds up, 11.25 down
    (5, 5, 0.01, (1, 1)),
])
def test_saliency_size(h, w, scale, size):
    assert saliency_size(h, w, scale) == size


@pytest.mark.parametrize('scale', [0, -0.5, 1.5, float('nan'), '0.5'])
def test_saliency_size_rejects_bad_scale(scale):
    with pytest.raises((ValueError, TypeError), match='scale_factor'):
        saliency_size(32, 32, scale)
    with pytest.raises((ValueError, TypeError), match='scale_factor'):
        input_saliency(_tiny_cnn(), torch.zeros(1, 3, 4, 4),
                       torch.tensor([0]), scale_factor=scale)


def test_input_saliency_scale_factor_runs_on_the_resized_batch():
    model = _tiny_cnn()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 3, 16, 12, generator=g)
    y = torch.tensor([0, 1, 2, 0])
    sal = input_saliency(model, x, y, scale_factor=0.5)
    assert sal.shape == (4, 8, 6)
    small = F.interpolate(x, size=(8, 6), mode='bilinear',
                          align_corners=False, antialias=True)
    assert torch.equal(sal, input_saliency(model, small, y))
    # 1 is the images as they are
    assert torch.equal(input_saliency(model, x, y, scale_factor=1.0),
                       input_saliency(model, x, y))
    # bfloat16 images are resized in float32 and come back in bfloat16
    sal16 = input_saliency(model.to(torch.bfloat16), x.to(torch.bfloat16),
                           y, scale_factor=0.5)
    assert sal16.dtype == torch.bfloat16 and sal16.shape == (4, 8, 6)


def test_input_saliency_rejects_bad_input():
    model = _tiny_cnn()
    x = torch.randn(2, 3, 5, 5)
    with pytest.raises(ValueError, match='labels'):
        input_saliency(model, x, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match='labels'):
        input_saliency(model, x, torch.tensor([[0], [1]]))
    with pytest.raises(ValueError, match='labels'):
        input_saliency(model, x, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match='inputs'):
        input_saliency(model, x[0], torch.tensor([0]))


# --------------------------------------------------------------- grid_masks
def _block_map():
    # 4x4 map whose 2x2 cell means are 1 (TL), 4 (TR), 2 (BL), 3 (BR).
    # yapf: disable
    return torch.tensor([[0., 2., 8., 0.],
                         [2., 0., 0., 8.],
                         [1., 3., 3., 3.],
                         [3., 1., 3., 3.]])
    # yapf: enable


@pytest.mark.parametrize(
    'q, kept',
    [
        # sorted cells [1, 2, 3, 4], rank q * 3, linear interpolation:
        (0.0, 'TL TR BL BR'),  # thr 1
        (0.33, 'TR BL BR'),  # rank 0.99 -> thr 1.99
        (0.5, 'TR BR'),  # rank 1.5 -> thr 2.5
        (0.99, 'TR'),  # rank 2.97 -> thr 3.97
        (1.0, 'TR'),  # thr 4
    ])
def test_grid_masks_2x2_on_4x4_by_hand(q, kept):
    quadrant = {
        'TL': (slice(0, 2), slice(0, 2)),
        'TR': (slice(0, 2), slice(2, 4)),
        'BL': (slice(2, 4), slice(0, 2)),
        'BR': (slice(2, 4), slice(2, 4))
    }
    expected = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    for name in kept.split():
        expected[(0, 0) + quadrant[name]] = True
    mask = grid_masks(_block_map()[None], 2, torch.tensor([q]))
    assert mask.dtype == torch.bool and mask.shape == (1, 1, 4, 4)
    assert torch.equal(mask, expected)


def test_grid_masks_per_sample_quantiles_and_ties():
    sal = torch.stack([_block_map(), _block_map(), torch.ones(4, 4)])
    mask = grid_masks(sal, 2, torch.tensor([0.0, 0.5, 0.99]))
    assert mask[0].all()  # q = 0 keeps every cell
    assert mask[1].sum() == 8  # TR + BR
    assert mask[2].all()  # all cells tie with the threshold: all kept


def test_grid_masks_non_divisible_size_by_hand():
    # H = 5, W = 3, grid 2: adaptive bins rows [0, 3), [2, 5); cols [0, 2),
    # [1, 3). Pixel row i -> cell row i * 2 // 5: rows 0-2 -> 0, rows 3-4 ->
    # 1; cols 0-1 -> 0, col 2 -> 1.
    sal = torch.zeros(1, 5, 3)
    sal[0, 4, 2] = 12.0  # only in cell (1, 1), whose bin has 3 * 2 pixels
    mask = grid_masks(sal, 2, torch.tensor([0.9]))
    expected = torch.zeros(1, 1, 5, 3, dtype=torch.bool)
    expected[0, 0, 3:, 2] = True
    assert torch.equal(mask, expected)


@pytest.mark.parametrize('grid, counts', [(4, COUNTS_4X4), (2, COUNTS_2X2)])
@pytest.mark.parametrize(
    'levels', [LEVELS, torch.tensor(DEFAULT_QUANTILE_LEVELS)],
    ids=['linspace', 'default'])
def test_grid_masks_keep_about_one_minus_q_of_the_cells(grid, counts, levels):
    # Distinct cell values: the kept count is exact for each level.
    g = torch.Generator().manual_seed(0)
    side = 8 * grid
    cells = torch.randperm(grid * grid, generator=g).float().view(grid, grid)
    sal = cells.repeat_interleave(8, 0).repeat_interleave(8, 1)
    sal = sal[None].expand(len(levels), side, side)
    masks = grid_masks(sal, grid, levels)
    assert (masks.flatten(1).sum(1) // 64).tolist() == counts


def test_default_quantile_levels_are_the_official_linspace():
    torch.testing.assert_close(torch.tensor(DEFAULT_QUANTILE_LEVELS),
                               torch.linspace(0, 0.99, 10))


@pytest.mark.parametrize('h, w, grid', [(16, 16, 4), (9, 13, 2), (7, 5, 3),
                                        (12, 12, 1), (10, 6, 6)])
def test_grid_masks_equal_a_per_sample_loop(h, w, grid):
    g = torch.Generator().manual_seed(h * 100 + w + grid)
    b = 6
    sal = torch.rand(b, h, w, generator=g)
    q = torch.cat([
        LEVELS[torch.randint(10, (3, ), generator=g)],
        torch.rand(b - 3, generator=g)
    ])
    sal0 = sal.clone()
    masks = grid_masks(sal, grid, q)
    assert torch.equal(sal, sal0)  # not mutated
    for i in range(b):
        ref, _ = _ref_mask(sal[i], grid, float(q[i]))
        assert torch.equal(masks[i, 0], ref), f'sample {i}'


def test_rowwise_quantile_equals_torch_quantile_per_row():
    g = torch.Generator().manual_seed(0)
    for n in (1, 2, 4, 16, 37):
        values = torch.randn(64, n, generator=g)
        values[:8] = values[:8].round()  # ties
        q = torch.rand(64, generator=g)
        q[:10] = LEVELS
        q[10], q[11] = 0.0, 1.0
        thr = _rowwise_quantile(values, q)
        ref = torch.stack([torch.quantile(values[i], q[i]) for i in range(64)])
        torch.testing.assert_close(thr, ref)


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_grid_masks_accept_both_dtypes(dtype):
    sal = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0))
    sal = sal.to(dtype)
    q = torch.tensor([0.2, 0.5, 0.9])
    masks = grid_masks(sal, 4, q)
    assert masks.dtype == torch.bool
    for i in range(3):
        assert torch.equal(masks[i, 0],
                           _ref_mask(sal[i].float(), 4, float(q[i]))[0])


def test_grid_masks_reject_bad_input():
    sal = torch.rand(2, 8, 8)
    q = torch.tensor([0.5, 0.5])
    for grid in (0, -1, 9, 2.0, True):
        with pytest.raises(ValueError, match='grid'):
            grid_masks(sal, grid, q)
    for bad in ([-0.1, 0.5], [0.5, 1.01], [float('nan'), 0.5]):
        with pytest.raises(ValueError, match='quantiles'):
            grid_masks(sal, 2, torch.tensor(bad))
    with pytest.raises(ValueError, match='quantiles'):
        grid_masks(sal, 2, torch.tensor([0.5]))  # one level per image
    with pytest.raises(ValueError, match='saliency'):
        grid_masks(sal[:, None], 2, q)


# ------------------------------------------------------------- mix_by_masks
def test_mix_by_masks_by_hand():
    # One row of 4 pixels, 2 channels (channel 1 = -channel 0), lam = 1/4.
    # m0 = [1, 1, 0, 0], m1 = [1, 0, 1, 0], perm = [1, 0]:
    # pixel: agree | own only | partner only | agree -> a = (1/2, 1/4, 1/4).
    x0 = torch.tensor([4., 8., 12., 16.])
    x1 = torch.tensor([0., 4., 8., 40.])
    x = torch.stack([torch.stack([x0, -x0]),
                     torch.stack([x1, -x1])])[:, :, None]
    masks = torch.tensor([[1, 1, 0, 0], [1, 0, 1, 0]]).bool()[:, None, None]
    targets = torch.tensor([[1., 0.], [0., 1.]])
    mixed, mixed_t = mix_by_masks(x, targets, masks, torch.tensor([1, 0]),
                                  0.25)
    # sample 0: [.25*4 + .75*0, 8, 8, .25*16 + .75*40]
    # sample 1: [.25*0 + .75*4, 8, 8, .25*40 + .75*16]
    row = torch.tensor([[1., 8., 8., 34.], [3., 8., 8., 22.]])
    torch.testing.assert_close(mixed[:, 0, 0], row)
    torch.testing.assert_close(mixed[:, 1, 0], -row)
    # t0 = .5 * (.25 t0 + .75 t1) + .25 t0 + .25 t1 = [.375, .625]
    torch.testing.assert_close(mixed_t,
                               torch.tensor([[.375, .625], [.625, .375]]))


def _random_case(b=5, c=2, h=6, w=7, k=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, c, h, w, generator=g)
    t = torch.rand(b, k, generator=g)
    t = t / t.sum(1, keepdim=True)  # soft targets
    masks = torch.rand(b, 1, h, w, generator=g) > 0.5
    perm = torch.randperm(b, generator=g)
    lam = float(torch.rand((), generator=g))
    return x, t, masks, perm, lam


@pytest.mark.parametrize('seed', range(4))
def test_mix_by_masks_equals_a_per_pixel_loop(seed):
    x, t, masks, perm, lam = _random_case(seed=seed)
    if seed == 3:
        perm = torch.arange(4, -1, -1)  # flip partner
    x0, t0, m0 = x.clone(), t.clone(), masks.clone()
    mixed, mixed_t = mix_by_masks(x, t, masks, perm, lam)
    ref, ref_t = _ref_mix(x, t, masks, perm, lam)
    torch.testing.assert_close(mixed, ref)
    torch.testing.assert_close(mixed_t, ref_t)
    torch.testing.assert_close(mixed_t.sum(1), torch.ones(5))
    # inputs untouched
    assert torch.equal(x, x0) and torch.equal(t, t0) and torch.equal(masks, m0)
    # lam as a 0-d tensor gives the same result
    mixed2, mixed_t2 = mix_by_masks(x, t, masks, perm, torch.tensor(lam))
    torch.testing.assert_close(mixed2, mixed)
    torch.testing.assert_close(mixed_t2, mixed_t)


def test_label_weights_equal_pixel_fractions():
    # Image b is the indicator of channel b, its target the one-hot of class
    # b: each output channel is then the pixel-wise weight of one source, so
    # the mixed targets must equal the spatial mean of the mixed image.
    b, h, w = 6, 12, 10
    g = torch.Generator().manual_seed(0)
    x = torch.eye(b)[:, :, None, None].expand(b, b, h, w).contiguous()
    t = torch.eye(b)
    sal = torch.rand(b, h, w, generator=g)
    for trial in range(6):
        params = sample_rmix_params(b, grids=(2, 3, 4), generator=g)
        masks = grid_masks(sal, params.grid, params.quantiles)
        mixed, mixed_t = mix_by_masks(x, t, masks, params.index, params.lam)
        torch.testing.assert_close(mixed_t, mixed.mean((2, 3)))
        torch.testing.assert_close(mixed_t.sum(1), torch.ones(b))


def test_area_fractions_recovered_from_the_output_sum_to_one():
    b, h, w, lam = 6, 8, 8, 0.3
    g = torch.Generator().manual_seed(1)
    x = torch.eye(b)[:, :, None, None].expand(b, b, h, w).contiguous()
    t = torch.eye(b)
    masks = grid_masks(torch.rand(b, h, w, generator=g), 4,
                       LEVELS[torch.randint(10, (b, ), generator=g)])
    perm = torch.roll(torch.arange(b), 1)  # no image pairs with itself
    mixed, mixed_t = mix_by_masks(x, t, masks, perm, lam)
    for i in range(b):
        p = int(perm[i])
        own, other = mixed[i, i], mixed[i, p]
        is_own = torch.isclose(own, torch.tensor(1.0)) & (other == 0)
        is_other = (own == 0) & torch.isclose(other, torch.tensor(1.0))
        is_eq = torch.isclose(own, torch.tensor(lam)) & torch.isclose(
            other, torch.tensor(1 - lam))
        a1, a2, a_eq = (float(v.float().mean())
                        for v in (is_own, is_other, is_eq))
        # every pixel is in exactly one case
        assert int((is_own.int() + is_other.int() + is_eq.int() != 1).sum()) \
            == 0
        assert a1 + a2 + a_eq == pytest.approx(1.0)
        # ... the cases are those of the masks ...
        m1, m2 = masks[i, 0], masks[p, 0]
        assert a1 == pytest.approx(float((m1 & ~m2).float().mean()))
        assert a2 == pytest.approx(float((~m1 & m2).float().mean()))
        # ... and the targets follow the formula with these fractions
        expected = a_eq * (lam * t[i] +
                           (1 - lam) * t[p]) + a1 * t[i] + a2 * t[p]
        torch.testing.assert_close(mixed_t[i], expected)


def test_mix_by_masks_special_cases():
    x, t, masks, perm, lam = _random_case(seed=7)
    # every image paired with itself: a copy
    ident = torch.arange(5)
    mixed, mixed_t = mix_by_masks(x, t, masks, ident, lam)
    torch.testing.assert_close(mixed, x)
    torch.testing.assert_close(mixed_t, t)
    # all-ones masks: plain Mixup
    ones = torch.ones_like(masks)
    mixed, mixed_t = mix_by_masks(x, t, ones, perm, lam)
    torch.testing.assert_close(mixed, lam * x + (1 - lam) * x[perm])
    torch.testing.assert_close(mixed_t, lam * t + (1 - lam) * t[perm])


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_mix_by_masks_keeps_dtype(dtype):
    x, t, masks, perm, lam = _random_case(seed=2)
    mixed, mixed_t = mix_by_masks(x.to(dtype), t.to(dtype), masks, perm,
                                  torch.tensor(lam))
    assert mixed.dtype == dtype and mixed_t.dtype == dtype
    ref, ref_t = _ref_mix(x, t, masks, perm, lam)
    tol = dict(rtol=2e-2, atol=2e-2) if dtype == torch.bfloat16 else {}
    torch.testing.assert_close(mixed.float(), ref, **tol)
    torch.testing.assert_close(mixed_t.float(), ref_t, **tol)


def test_mix_by_masks_rejects_bad_input():
    x, t, masks, perm, lam = _random_case()
    with pytest.raises(ValueError, match='targets'):
        mix_by_masks(x, t.argmax(1), masks, perm, lam)  # (B,) integer labels
    with pytest.raises(ValueError, match='targets'):
        mix_by_masks(x, t[:, None], masks, perm, lam)
    with pytest.raises(ValueError, match='targets'):
        mix_by_masks(x, t[:4], masks, perm, lam)
    with pytest.raises(ValueError, match='masks'):
        mix_by_masks(x, t, masks.float(), perm, lam)
    with pytest.raises(ValueError, match='masks'):
        mix_by_masks(x, t, masks[:4], perm, lam)
    with pytest.raises(ValueError, match='perm'):
        mix_by_masks(x, t, masks, perm[:4], lam)
    with pytest.raises(ValueError, match='perm'):
        mix_by_masks(x, t, masks, perm.float(), lam)
    for bad in (-0.1, 1.5, torch.tensor([0.2, 0.3])):
        with pytest.raises(ValueError, match='lam'):
            mix_by_masks(x, t, masks, perm, bad)
    with pytest.raises(ValueError, match='inputs'):
        mix_by_masks(x[0], t, masks, perm, lam)


# ------------------------------------------------------- sample_rmix_params
def test_sample_rmix_params_types_and_ranges():
    g = torch.Generator().manual_seed(0)
    grids_seen, levels_seen = set(), set()
    for _ in range(50):
        p = sample_rmix_params(8, generator=g)
        assert p.grid in (2, 4)
        grids_seen.add(p.grid)
        assert p.quantiles.shape == (8, )
        assert p.quantiles.dtype == torch.float32
        levels_seen.update(round(v, 4) for v in p.quantiles.tolist())
        assert p.index.dtype == torch.int64
        assert torch.equal(p.index.sort().values, torch.arange(8))
        assert p.lam.shape == () and p.lam.dtype == torch.float32
        assert 0.0 <= float(p.lam) <= 1.0
    assert grids_seen == {2, 4}
    assert levels_seen == {round(v, 4) for v in LEVELS.tolist()}


def test_sample_rmix_params_quantiles_are_uniform_per_sample():
    n = 5000
    p = sample_rmix_params(n, generator=torch.Generator().manual_seed(0))
    idx = (p.quantiles[:, None] - LEVELS[None]).abs().argmin(1)
    torch.testing.assert_close(p.quantiles, LEVELS[idx])
    freq = torch.bincount(idx, minlength=10).double() / n
    # sd of each frequency = sqrt(.1 * .9 / n) = 0.0042
    assert float((freq - 0.1).abs().max()) < 0.02


@pytest.mark.parametrize('alpha', [0.2, 1.0])
def test_sample_rmix_params_lam_is_one_beta_draw_per_batch(alpha):
    g = torch.Generator().manual_seed(0)
    lam = torch.stack([
        sample_rmix_params(4, alpha=alpha, generator=g).lam
        for _ in range(3000)
    ]).double()
    var = 1 / (4 * (2 * alpha + 1))  # Beta(a, a)
    assert abs(float(lam.mean()) - 0.5) < 5 * math.sqrt(var / 3000)
    assert float(lam.var()) == pytest.approx(var, rel=0.1)


def test_sample_rmix_params_partner_and_options():
    g = torch.Generator().manual_seed(0)
    p = sample_rmix_params(5, partner='flip', generator=g)
    assert p.index.tolist() == [4, 3, 2, 1, 0]
    p = sample_rmix_params(6,
                           grids=(3, ),
                           quantile_levels=(0.25, 0.75),
                           generator=g)
    assert p.grid == 3
    assert set(p.quantiles.tolist()) <= {0.25, 0.75}
    p = sample_rmix_params(3, generator=g, device='cpu')
    assert p.index.device.type == 'cpu'


def test_sample_rmix_params_is_deterministic_under_a_generator():

    def draw(seed):
        g = torch.Generator().manual_seed(seed)
        return [sample_rmix_params(16, generator=g) for _ in range(3)]

    a, b, c = draw(3), draw(3), draw(4)
    for pa, pb in zip(a, b):
        assert pa.grid == pb.grid
        assert torch.equal(pa.quantiles, pb.quantiles)
        assert torch.equal(pa.index, pb.index)
        assert torch.equal(pa.lam, pb.lam)
    assert any(not torch.equal(pa.quantiles, pc.quantiles)
               for pa, pc in zip(a, c))
    assert any(not torch.equal(pa.lam, pc.lam) for pa, pc in zip(a, c))
    state = torch.get_rng_state()
    draw(5)
    assert torch.equal(torch.get_rng_state(), state)  # global RNG untouched


def test_sample_rmix_params_rejects_bad_input():
    for alpha in (0, -1.0):
        with pytest.raises(ValueError, match='alpha'):
            sample_rmix_params(4, alpha=alpha)
    for grids in ((), (0, 2), (2, -4), 0):
        with pytest.raises(ValueError, match='grids'):
            sample_rmix_params(4, grids=grids)
    for levels in ((), (0.5, 1.2), (-0.01, )):
        with pytest.raises(ValueError, match='quantile_levels'):
            sample_rmix_params(4, quantile_levels=levels)
    with pytest.raises(ValueError, match='partner'):
        sample_rmix_params(4, partner='roll')
    for bs in (0, -2, 2.0):
        with pytest.raises(ValueError, match='batch_size'):
            sample_rmix_params(bs)


# ------------------------------------------------------------- one R-Mix step
def test_one_rmix_step_end_to_end():
    model = _tiny_cnn(num_classes=4)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 8, 8, generator=g)
    y = torch.tensor([0, 1, 2, 3])
    sal = input_saliency(model, x, y)
    params = sample_rmix_params(4, generator=g)
    masks = grid_masks(sal, params.grid, params.quantiles)
    t = F.one_hot(y, 4).float()
    mixed, mixed_t = mix_by_masks(x, t, masks, params.index, params.lam)
    ref, ref_t = _ref_mix(x, t, masks, params.index, float(params.lam))
    torch.testing.assert_close(mixed, ref)
    torch.testing.assert_close(mixed_t, ref_t)
    for i in range(4):
        ref_mask, _ = _ref_mask(sal[i], params.grid,
                                float(params.quantiles[i]))
        assert torch.equal(masks[i, 0], ref_mask)
