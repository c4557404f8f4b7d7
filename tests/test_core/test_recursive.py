"""Tests of the RecursiveMix kernels (``mixplugins.core.recursive``).

Expectations come from hand computations, closed forms (the expected box
area of the official ``rand_bbox``; bilinear sampling of linear feature
maps), the figures of the reference simulation (mean pasted area 0.18 at
224 px and 0.17 at 32 px, P(empty box) 0.8% at 32 px for ``alpha=0.5``) and
the invariant of the method (Yang et al., arXiv 2203.06844): an image pasted
k steps ago keeps exactly the label weight of its visible area.
"""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mixplugins.core import (consistency_loss, paste_history, roi_pool_box,
                             sample_box)


# ---------------------------------------------------------------- sample_box
def _expected_side(side: int, half: np.ndarray) -> np.ndarray:
    """E[clipped side | half-cut], centre uniform over the ``side`` pixels."""
    c = np.arange(side)[:, None]
    return (np.minimum(c + half, side) - np.maximum(c - half, 0)).mean(0)


def _expected_box_stats(height, width, alpha, n=20000):
    """Closed-form means of the official box for u ~ U(0, alpha).

    ratio = sqrt(u), cut = floor(side * ratio), box = centre +- cut // 2,
    clipped; x and y centres are independent given u. Midpoint rule over u.
    """
    ratio = np.sqrt((np.arange(n) + 0.5) / n * alpha)
    ew = _expected_side(width, np.floor(width * ratio).astype(int) // 2)
    eh = _expected_side(height, np.floor(height * ratio).astype(int) // 2)
    return ew.mean(), eh.mean(), (ew * eh).mean() / (height * width)


def _draw_boxes(height, width, alpha, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return np.array([sample_box(height, width, alpha, g) for _ in range(n)])


def test_sample_box_is_inside_the_image_and_not_transposed():
    h, w = 12, 40
    boxes = _draw_boxes(h, w, 1.0, 3000)
    x1, y1, x2, y2 = boxes.T
    assert ((0 <= x1) & (x1 <= x2) & (x2 <= w)).all()
    assert ((0 <= y1) & (y1 <= y2) & (y2 <= h)).all()
    # columns span the width, rows the height (no H/W swap)
    assert x2.max() > h and (x2 - x1).max() > h
    ew, eh, _ = _expected_box_stats(h, w, 1.0)
    n = len(boxes)
    assert abs((x2 - x1).mean() - ew) < 5 * (x2 - x1).std() / math.sqrt(n)
    assert abs((y2 - y1).mean() - eh) < 5 * (y2 - y1).std() / math.sqrt(n)


@pytest.mark.parametrize('side, published', [(32, 0.17), (224, 0.18)])
def test_sample_box_area_matches_closed_form_and_published_mean(
        side, published):
    n = 10000
    boxes = _draw_boxes(side, side, 0.5, n, seed=side)
    area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) /
            side**2)
    _, _, expected = _expected_box_stats(side, side, 0.5)
    assert abs(area.mean() - expected) < 5 * area.std() / math.sqrt(n)
    assert abs(area.mean() - published) < 0.01
    assert area.max() <= 0.5 + 1e-9  # the nominal fraction is at most alpha


def test_sample_box_empty_rate_at_32px():
    # Empty iff floor(32 * sqrt(u)) < 2, i.e. u < (2/32)^2 / 0.5 = 0.78%.
    boxes = _draw_boxes(32, 32, 0.5, 10000, seed=1)
    empty = ((boxes[:, 2] == boxes[:, 0]) | (boxes[:, 3] == boxes[:, 1]))
    assert abs(empty.mean() - 0.0078125) < 0.004


def test_sample_box_unclipped_sides_follow_the_image_sides():
    # Away from the borders both sides are 2 * (floor(side * ratio) // 2)
    # for the same ratio, so width / W and height / H agree to 2 / side.
    h, w = 50, 100
    boxes = _draw_boxes(h, w, 0.5, 2000, seed=2)
    x1, y1, x2, y2 = boxes.T
    inside = (x1 > 0) & (x2 < w) & (y1 > 0) & (y2 < h)
    assert inside.sum() > 500
    bw, bh = (x2 - x1)[inside], (y2 - y1)[inside]
    assert (bw % 2 == 0).all() and (bh % 2 == 0).all()
    assert np.abs(bw / w - bh / h).max() <= 2 / h + 1e-9


def test_sample_box_centre_is_uniform_over_all_pixels():
    # alpha = 1/4 on 8 px: cut = floor(8 sqrt(u)) <= 3, so a non-empty box
    # has half-cut 1 and its centre is recoverable: x1 + 1 for a 2-wide box,
    # and 0 or W - 1 for a 1-wide box clipped at the left or right.
    side, n = 8, 4000
    boxes = _draw_boxes(side, side, 0.25, n, seed=3)
    x1, y1, x2, y2 = boxes.T
    nonempty = (x2 > x1) & (y2 > y1)
    # empty iff cut < 2 iff u < 1/16: probability 1/4
    assert abs(nonempty.mean() - 0.75) < 0.03
    for lo, hi in ((x1, x2), (y1, y2)):
        lo, hi = lo[nonempty], hi[nonempty]
        assert ((hi - lo == 2) | (hi - lo == 1)).all()
        centre = np.where(hi - lo == 2, lo + 1, np.where(lo == 0, 0, side - 1))
        counts = np.bincount(centre, minlength=side)
        expected = nonempty.sum() / side  # ~375, sd ~18
        assert np.abs(counts - expected).max() < 0.25 * expected


def test_sample_box_is_deterministic_under_a_generator():
    a = _draw_boxes(32, 48, 0.5, 10, seed=7)
    b = _draw_boxes(32, 48, 0.5, 10, seed=7)
    c = _draw_boxes(32, 48, 0.5, 10, seed=8)
    assert (a == b).all()
    assert not (a == c).all()
    assert all(isinstance(v, int) for v in sample_box(8, 8, 0.5))
    state = torch.get_rng_state()
    _draw_boxes(32, 48, 0.5, 3)
    assert torch.equal(torch.get_rng_state(), state)  # global RNG untouched


def test_sample_box_rejects_bad_input():
    for alpha in (0, -0.5, 1.5):
        with pytest.raises(ValueError, match='alpha'):
            sample_box(8, 8, alpha)
    with pytest.raises(ValueError, match='height'):
        sample_box(0, 8, 0.5)
    with pytest.raises(ValueError, match='width'):
        sample_box(8, 2.5, 0.5)


# ------------------------------------------------------------- paste_history
def test_paste_history_square_box_by_hand():
    x = torch.zeros(1, 1, 4, 4)
    hist = torch.arange(16.).view(1, 1, 4, 4)
    t, ht = torch.tensor([[1., 0.]]), torch.tensor([[0., 1.]])
    mixed, mixed_t, lam = paste_history(x, t, hist, ht, (1, 1, 3, 3))
    # nearest 4 -> 2 keeps rows/cols 0 and 2: [[0, 2], [8, 10]]
    expected = torch.zeros(1, 1, 4, 4)
    expected[0, 0, 1:3, 1:3] = torch.tensor([[0., 2.], [8., 10.]])
    assert torch.equal(mixed, expected)
    assert lam == 0.75  # 1 - 4 / 16
    torch.testing.assert_close(mixed_t, torch.tensor([[0.75, 0.25]]))


def test_paste_history_box_is_x_columns_y_rows():
    x = torch.full((1, 1, 4, 6), -1.0)
    hist = torch.tensor([[1., 2.], [3., 4.]])[None, None]
    t = torch.tensor([[1., 0.]])
    # x1=0, y1=1, x2=4, y2=2: row 1, columns 0..3
    mixed, mixed_t, lam = paste_history(x, t, hist, t.flip(1), (0, 1, 4, 2))
    expected = x.clone()
    expected[0, 0, 1, :4] = torch.tensor([1., 1., 2., 2.])
    assert torch.equal(mixed, expected)
    assert lam == pytest.approx(1 - 4 / 24)
    torch.testing.assert_close(mixed_t, torch.tensor([[lam, 1 - lam]]))


def test_paste_history_bilinear_uses_align_corners():
    # hist value = 2 * row + col; 2 -> 4 with align_corners=True samples at
    # 0, 1/3, 2/3, 1, so the box holds (2 * r + c) / 3.
    x = torch.zeros(1, 1, 5, 5)
    hist = torch.tensor([[0., 1.], [2., 3.]])[None, None]
    t = torch.tensor([[1., 0.]])
    mixed, _, lam = paste_history(x, t, hist, t, (1, 0, 5, 4), mode='bilinear')
    r = torch.arange(4.)[:, None]
    expected = torch.zeros(5, 5)
    expected[0:4, 1:5] = (2 * r + r.T) / 3
    torch.testing.assert_close(mixed[0, 0], expected)
    assert lam == pytest.approx(1 - 16 / 25)


def test_paste_history_uses_first_b_history_images_of_any_size():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 8, 8, generator=g)
    hist = torch.randn(5, 3, 16, 12, generator=g)
    t = F.one_hot(torch.tensor([0, 1]), 4).float()
    ht = F.one_hot(torch.tensor([2, 3, 0, 0, 0]), 4).float()
    box = (2, 0, 8, 4)
    mixed, mixed_t, lam = paste_history(x, t, hist, ht, box)
    expected = x.clone()
    expected[:, :, 0:4, 2:8] = F.interpolate(hist[:2], size=(4, 6))
    assert torch.equal(mixed, expected)
    assert lam == pytest.approx(1 - 24 / 64)
    torch.testing.assert_close(mixed_t, lam * t + (1 - lam) * ht[:2])


def test_paste_history_is_out_of_place():
    g = torch.Generator().manual_seed(0)
    x, hist = torch.randn(2, 3, 8, 8, generator=g), torch.randn(2,
                                                                3,
                                                                8,
                                                                8,
                                                                generator=g)
    t, ht = torch.eye(2), torch.eye(2).flip(0)
    copies = [v.clone() for v in (x, t, hist, ht)]
    mixed, mixed_t, _ = paste_history(x, t, hist, ht, (1, 1, 5, 6))
    for v, v0 in zip((x, t, hist, ht), copies):
        assert torch.equal(v, v0)
    assert mixed.data_ptr() != x.data_ptr()
    assert mixed_t.data_ptr() != t.data_ptr()


@pytest.mark.parametrize('box', [(3, 3, 3, 7), (0, 2, 8, 2), (0, 0, 0, 0),
                                 (8, 8, 8, 8)])
def test_paste_history_zero_area_box_copies(box):
    g = torch.Generator().manual_seed(0)
    x, hist = torch.randn(2, 3, 8, 8, generator=g), torch.randn(2,
                                                                3,
                                                                8,
                                                                8,
                                                                generator=g)
    t, ht = torch.eye(2), torch.eye(2).flip(0)
    mixed, mixed_t, lam = paste_history(x, t, hist, ht, box)
    assert lam == 1.0
    assert torch.equal(mixed, x) and torch.equal(mixed_t, t)
    assert mixed.data_ptr() != x.data_ptr()  # a new tensor
    assert mixed_t.data_ptr() != t.data_ptr()


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_paste_history_keeps_dtype(dtype):
    x = torch.randn(2, 3, 8, 8).to(dtype)
    hist = torch.randn(2, 3, 8, 8)  # float32 history into a bf16 batch
    t, ht = torch.eye(2, dtype=dtype), torch.eye(2).flip(0)
    mixed, mixed_t, lam = paste_history(x, t, hist, ht, (0, 0, 4, 4))
    assert mixed.dtype == dtype and mixed_t.dtype == dtype
    torch.testing.assert_close(mixed[:, :, :4, :4],
                               F.interpolate(hist, size=(4, 4)).to(dtype))
    assert lam == 0.75


def test_one_step_lam_equals_visible_area_exactly():
    # Constant history images: any box, the label weights equal the pixel
    # fractions of each image's value.
    g = torch.Generator().manual_seed(0)
    b, h, w = 3, 20, 28
    x = torch.arange(1., b + 1)[:, None, None, None].expand(b, 1, h, w)
    hist = torch.arange(b + 1., 2 * b + 1)[:, None, None,
                                           None].expand(b, 1, 7, 9)
    t = F.one_hot(torch.arange(b), 2 * b).float()
    ht = F.one_hot(torch.arange(b, 2 * b), 2 * b).float()
    for _ in range(20):
        box = sample_box(h, w, 1.0, g)
        mixed, mixed_t, lam = paste_history(x, t, hist, ht, box)
        area = torch.stack([(mixed == v).float().mean((1, 2, 3))
                            for v in range(1, 2 * b + 1)], 1)
        torch.testing.assert_close(mixed_t, area)
        assert lam == pytest.approx(float((mixed[0] == 1).float().mean()))


def test_three_recursive_steps_keep_label_weight_equal_to_visible_area():
    # Four fresh batches (steps 0..3) of B constant images, value k + 1 for
    # source k = step * B + b, target one-hot(k). Boxes at even offsets with
    # half-size pastes: nearest resize keeps every nested area exactly.
    b, side = 3, 16
    n_src = 4 * b
    batches = [
        torch.arange(s * b + 1., s * b + b + 1)[:, None, None,
                                                None].expand(b, 2, side, side)
        for s in range(4)
    ]
    targets = [
        F.one_hot(torch.arange(s * b, s * b + b), n_src).float()
        for s in range(4)
    ]
    boxes = [(4, 4, 12, 12), (0, 8, 8, 16), (8, 0, 16, 8)]
    mixed, mixed_t = batches[0], targets[0]  # step 0: no history yet
    lams = []
    for step, box in enumerate(boxes, start=1):
        mixed, mixed_t, lam = paste_history(batches[step], targets[step],
                                            mixed, mixed_t, box)
        lams.append(lam)
        torch.testing.assert_close(mixed_t.sum(1), torch.ones(b))
    area = torch.stack([(mixed[:, 0] == k + 1).float().mean((1, 2))
                        for k in range(n_src)], 1)
    torch.testing.assert_close(mixed_t, area)
    # the oldest image survives at (1 - lam1)(1 - lam2)(1 - lam3) = 1 / 64
    assert lams == [0.75, 0.75, 0.75]
    for i in range(b):
        assert float(area[i, i]) == pytest.approx(1 / 64)
        assert float(mixed_t[i, i]) == pytest.approx(1 / 64)


def test_paste_history_rejects_bad_input():
    x, hist = torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 8, 8)
    t, ht = torch.eye(2), torch.eye(2)
    for box in ((-1, 0, 4, 4), (0, 0, 9, 4), (0, 0, 4, 9), (5, 0, 4, 4),
                (0, 5, 4, 4), (0, 0, 4), 'box'):
        with pytest.raises(ValueError, match='box'):
            paste_history(x, t, hist, ht, box)
    with pytest.raises(ValueError, match='hist_inputs'):
        paste_history(x, t, hist[:1], ht[:1], (0, 0, 4, 4))
    with pytest.raises(ValueError, match='hist_inputs'):
        paste_history(x, t, hist[:, :1], ht, (0, 0, 4, 4))
    with pytest.raises(ValueError, match='targets'):
        paste_history(x, t[:1], hist, ht, (0, 0, 4, 4))
    with pytest.raises(ValueError, match='targets'):
        paste_history(x, torch.tensor([0, 1]), hist, ht, (0, 0, 4, 4))
    with pytest.raises(ValueError, match='hist_targets'):
        paste_history(x, t, hist, torch.ones(2, 3), (0, 0, 4, 4))
    with pytest.raises(ValueError, match='hist_targets'):
        paste_history(x, t, hist, ht[:1], (0, 0, 4, 4))
    with pytest.raises(ValueError, match='mode'):
        paste_history(x, t, hist, ht, (0, 0, 4, 4), mode='linear')
    with pytest.raises(ValueError, match='inputs'):
        paste_history(x[0], t, hist, ht, (0, 0, 4, 4))


# ---------------------------------------------------------- consistency_loss
def test_consistency_loss_by_hand():
    # roi logits 0 -> log-softmax log(1/2); any target sums to 1 -> CE log 2
    loss = consistency_loss(torch.zeros(1, 2), torch.tensor([[3., -1.]]), 0.75,
                            0.5)
    assert float(loss) == pytest.approx(0.5 * 0.25 * math.log(2))
    # target softmax(0, log 3) = (1/4, 3/4); roi log-softmax log(1/2, 1/2)
    # and log(1/4, 3/4): CE = log 2 and the entropy H(1/4, 3/4).
    hist = torch.tensor([[0., math.log(3.)], [0., math.log(3.)]])
    roi = torch.tensor([[5., 5.], [0., math.log(3.)]])
    entropy = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    loss = consistency_loss(roi, hist, 0.5, 2.0)
    assert float(loss) == pytest.approx(2.0 * 0.5 * (math.log(2) + entropy) /
                                        2)


def test_consistency_loss_equals_soft_cross_entropy_and_detaches_target():
    g = torch.Generator().manual_seed(0)
    roi = torch.randn(5, 7, generator=g).requires_grad_(True)
    hist = torch.randn(5, 7, generator=g).requires_grad_(True)
    lam, omega = 0.6, 0.5
    loss = consistency_loss(roi, hist, torch.tensor(lam), omega)
    assert loss.shape == () and loss.dtype == torch.float32
    expected = omega * (1 - lam) * F.cross_entropy(roi.detach(),
                                                   F.softmax(hist.detach(), 1))
    torch.testing.assert_close(loss.detach(), expected)
    loss.backward()
    assert hist.grad is None  # the history softmax is a fixed target
    grad = omega * (1 - lam) * (F.softmax(roi.detach(), 1) -
                                F.softmax(hist.detach(), 1)) / 5
    torch.testing.assert_close(roi.grad, grad)


def test_consistency_loss_edge_cases():
    roi, hist = torch.randn(3, 4), torch.randn(3, 4)
    assert float(consistency_loss(roi, hist, 1.0, 0.5)) == 0.0  # no paste
    assert float(consistency_loss(roi, hist, 0.3, 0.0)) == 0.0
    bf = consistency_loss(roi.bfloat16(), hist.bfloat16(), 0.3, 0.5)
    assert bf.dtype == torch.float32
    torch.testing.assert_close(bf,
                               consistency_loss(roi, hist, 0.3, 0.5),
                               rtol=2e-2,
                               atol=2e-2)


def test_consistency_loss_rejects_bad_input():
    with pytest.raises(ValueError, match='omega'):
        consistency_loss(torch.zeros(2, 3), torch.zeros(2, 3), 0.5, -0.1)
    with pytest.raises(ValueError, match='hist_logits'):
        consistency_loss(torch.zeros(2, 3), torch.zeros(2, 4), 0.5, 0.5)
    with pytest.raises(ValueError, match='roi_logits'):
        consistency_loss(torch.zeros(2), torch.zeros(2), 0.5, 0.5)


# -------------------------------------------------------------- roi_pool_box
def test_roi_pool_box_over_whole_cells_is_their_mean():
    # aligned=True shifts by half a cell; a box of k cells per side then gets
    # ceil(k) samples per side exactly at the cell centres (sampling=-1).
    g = torch.Generator().manual_seed(0)
    feat = torch.randn(2, 3, 8, 8, generator=g)
    # input 32 px -> scale 1/4; box = cells rows 2..4, cols 1..3
    pooled = roi_pool_box(feat, (4, 8, 16, 20), (32, 32))
    assert pooled.shape == (2, 3)
    torch.testing.assert_close(pooled, feat[:, :, 2:5, 1:4].mean((2, 3)))
    # one cell: exactly its value; non-square 2 x 5 cells
    torch.testing.assert_close(roi_pool_box(feat, (20, 8, 24, 12), (32, 32)),
                               feat[:, :, 2, 5])
    torch.testing.assert_close(roi_pool_box(feat, (0, 24, 20, 32), (32, 32)),
                               feat[:, :, 6:8, 0:5].mean((2, 3)))


def test_roi_pool_box_of_a_linear_map_is_its_value_at_the_box_centre():
    # f(i, j) = a j + b i + c is reproduced exactly by bilinear sampling; the
    # sample grid is symmetric, so the mean is f at the box centre in cell
    # index coordinates: scale * (x1 + x2) / 2 - 0.5 (aligned=True).
    h, w = 6, 10
    a, b_, c = 0.5, -2.0, 3.0
    i = torch.arange(h, dtype=torch.float32)[:, None]
    j = torch.arange(w, dtype=torch.float32)[None]
    feat = (a * j + b_ * i + c).expand(1, 2, h, w).clone()
    feat[:, 1] *= -1
    input_size = (48, 80)  # scale 1/8 on both axes
    for box in [(11, 9, 53, 30), (8, 8, 17, 13), (30, 5, 70, 40)]:
        cx = (box[0] + box[2]) / 2 / 8 - 0.5
        cy = (box[1] + box[3]) / 2 / 8 - 0.5
        value = a * cx + b_ * cy + c
        torch.testing.assert_close(roi_pool_box(feat, box, input_size),
                                   torch.tensor([[value, -value]]))


def test_roi_pool_box_per_image_boxes_and_scale_from_width():
    g = torch.Generator().manual_seed(1)
    feat = torch.randn(3, 2, 4, 8, generator=g)
    # input (H, W) = (32, 64): scale = 8 / 64 = 1/8
    boxes = torch.tensor([[0, 0, 8, 8], [8, 16, 24, 32], [0, 0, 64, 32]])
    pooled = roi_pool_box(feat, boxes, (32, 64))
    torch.testing.assert_close(pooled[0], feat[0, :, 0, 0])
    torch.testing.assert_close(pooled[1], feat[1, :, 2:4, 1:3].mean((1, 2)))
    torch.testing.assert_close(pooled[2], feat[2].mean((1, 2)))
    # the scale is taken from the widths: features 4 x 8 of a 16 x 64 input
    # (scale 1/8, not 4/16): an 8 px box is one cell
    torch.testing.assert_close(roi_pool_box(feat, (8, 8, 16, 16), (16, 64)),
                               feat[:, :, 1, 1])
    # batch of one keeps its batch dimension
    assert roi_pool_box(feat[:1], (0, 0, 8, 8), (32, 64)).shape == (1, 2)


def test_roi_pool_box_constant_map_gradient_and_dtype():
    feat = torch.full((2, 3, 5, 5), 2.5, requires_grad=True)
    pooled = roi_pool_box(feat, (3, 1, 17, 12), (20, 20))
    torch.testing.assert_close(pooled.detach(), torch.full((2, 3), 2.5))
    pooled.sum().backward()  # bilinear weights of the average sum to 1
    torch.testing.assert_close(feat.grad.sum((2, 3)), torch.ones(2, 3))
    bf = roi_pool_box(feat.detach().bfloat16(), (3, 1, 17, 12), (20, 20))
    assert bf.dtype == torch.bfloat16
    torch.testing.assert_close(bf.float(), torch.full((2, 3), 2.5))


def test_roi_pool_box_rejects_bad_input():
    with pytest.raises(ValueError, match='features'):
        roi_pool_box(torch.zeros(3, 4, 4), (0, 0, 2, 2), (8, 8))
    with pytest.raises(ValueError, match='box'):
        roi_pool_box(torch.zeros(2, 3, 4, 4), (0, 0, 2), (8, 8))
    with pytest.raises(ValueError, match='box'):
        roi_pool_box(torch.zeros(2, 3, 4, 4), torch.zeros(3, 4), (8, 8))
