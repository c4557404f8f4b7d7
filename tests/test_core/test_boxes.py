"""Tests of ``mixplugins.core.boxes``: paste geometry of images, boxes and
masks, checked against hand-computed cases, ``F.interpolate`` on crops and
a rasterised reference."""
import pytest
import torch
import torch.nn.functional as F

from mixplugins.core.boxes import (box_area, occlude_boxes, occlude_masks,
                                   paste_boxes, paste_images, paste_masks)


def _reference_paste(inputs, sources, boxes, src_boxes, mode):
    """Per-image loop with F.interpolate on the cropped source."""
    out = inputs.clone()
    for n, ((x1, y1, x2, y2), (sx1, sy1, sx2,
                               sy2)) in enumerate(zip(boxes, src_boxes)):
        if x2 == x1 or y2 == y1:
            continue
        kw = dict(align_corners=True) if mode == 'bilinear' else {}
        crop = sources[n:n + 1, :, sy1:sy2, sx1:sx2]
        out[n, :, y1:y2, x1:x2] = F.interpolate(crop,
                                                size=(y2 - y1, x2 - x1),
                                                mode=mode,
                                                **kw)[0]
    return out


def _random_boxes(g, n, h, w, allow_empty=True):
    rows = []
    for _ in range(n):
        x1, x2 = sorted(torch.randint(0, w + 1, (2, ), generator=g).tolist())
        y1, y2 = sorted(torch.randint(0, h + 1, (2, ), generator=g).tolist())
        if not allow_empty:
            x2, y2 = max(x2, x1 + 1), max(y2, y1 + 1)
            if x2 > w:
                x1, x2 = w - 1, w
            if y2 > h:
                y1, y2 = h - 1, h
        rows.append([x1, y1, x2, y2])
    return rows


@pytest.mark.parametrize('mode', ['nearest', 'nearest-exact', 'bilinear'])
def test_paste_images_matches_interpolate_per_image(mode):
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        n = 4
        inputs = torch.randn(n, 3, 23, 31, generator=g)
        sources = torch.randn(n, 3, 17, 29, generator=g)
        boxes = _random_boxes(g, n, 23, 31)
        src_boxes = _random_boxes(g, n, 17, 29, allow_empty=False)
        out = paste_images(inputs, sources, boxes, src_boxes, mode)
        ref = _reference_paste(inputs, sources, boxes, src_boxes, mode)
        if mode == 'bilinear':
            torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
        else:
            assert torch.equal(out, ref)


def test_paste_images_whole_source_by_default_and_outside_kept():
    inputs = torch.arange(2 * 1 * 6 * 8.).view(2, 1, 6, 8)
    sources = -torch.arange(2 * 1 * 2 * 2.).view(2, 1, 2, 2) - 1
    out = paste_images(inputs, sources, [[0, 0, 4, 4], [6, 2, 8, 6]])
    # image 0: a 2x2 source doubled into a 4x4 box (nearest)
    assert out[0, 0, :4, :4].tolist() == [[-1, -1, -2, -2], [-1, -1, -2, -2],
                                          [-3, -3, -4, -4], [-3, -3, -4, -4]]
    # image 1: 2x2 -> 4 rows x 2 cols
    assert out[1, 0, 2:6, 6:8].tolist() == [[-5, -6], [-5, -6], [-7, -8],
                                            [-7, -8]]
    keep = torch.ones_like(inputs, dtype=torch.bool)
    keep[0, :, :4, :4] = False
    keep[1, :, 2:6, 6:8] = False
    assert torch.equal(out[keep], inputs[keep])


def test_paste_images_empty_box_is_identity_and_no_mutation():
    inputs = torch.randn(2, 3, 8, 8)
    before = inputs.clone()
    out = paste_images(inputs, torch.randn(2, 3, 5, 5),
                       [[3, 3, 3, 7], [0, 2, 8, 2]])
    assert torch.equal(out, before) and torch.equal(inputs, before)
    assert out is not inputs


@pytest.mark.parametrize(
    'dtype', [torch.float16, torch.bfloat16, torch.uint8, torch.int64])
def test_paste_images_keeps_dtype(dtype):
    inputs = torch.randint(0, 100, (2, 3, 8, 8)).to(dtype)
    sources = torch.randint(0, 100, (2, 3, 4, 4)).to(dtype)
    out = paste_images(inputs, sources, [[0, 0, 8, 8], [2, 2, 6, 6]])
    assert out.dtype == dtype
    assert torch.equal(
        out[0], sources[0].repeat_interleave(2, 1).repeat_interleave(2, 2))
    assert torch.equal(out[1, :, 2:6, 2:6], sources[1])


def test_paste_images_rejects_bad_arguments():
    x = torch.zeros(2, 3, 8, 8)
    with pytest.raises(ValueError, match='mode'):
        paste_images(x, x, [[0, 0, 1, 1]] * 2, mode='area')
    with pytest.raises(ValueError, match='boxes'):
        paste_images(x, x, [[0, 0, 9, 1]] * 2)
    with pytest.raises(ValueError, match='boxes'):
        paste_images(x, x, [[0, 0, 1, 1]])
    with pytest.raises(ValueError, match='src_boxes'):
        paste_images(x, x, [[0, 0, 2, 2]] * 2, [[1, 1, 1, 3]] * 2)
    with pytest.raises(ValueError, match='sources'):
        paste_images(x, torch.zeros(2, 1, 8, 8), [[0, 0, 1, 1]] * 2)
    with pytest.raises(TypeError, match='bilinear'):
        paste_images(x.long(), x.long(), [[0, 0, 1, 1]] * 2, mode='bilinear')


def test_paste_boxes_hand_computed():
    hist = torch.tensor([[10., 20., 30., 40.], [0., 0., 50., 100.],
                         [40., 90., 60., 120.]])
    # history valid area h=100, w=50 resized into a 25 x 50 (w x h) box
    out = paste_boxes(hist, (100, 50), (5, 10, 30, 60))
    assert out.tolist() == [[10., 20., 20., 30.], [5., 10., 30., 60.],
                            [25., 55., 30., 60.]]  # last one clipped
    # a source box (CutMix): identity scale, clipped to the paste box
    out = paste_boxes(hist, (100, 50), (10, 20, 30, 40),
                      src_box=(10, 20, 30, 40))
    assert out[0].tolist() == [10., 20., 30., 40.]
    assert out[1].tolist() == [10., 20., 30., 40.]
    assert box_area(out[2:]).tolist() == [0.]


def test_paste_boxes_keeps_dtype_and_empty():
    hist = torch.zeros(0, 4, dtype=torch.float64)
    out = paste_boxes(hist, (4, 4), (0, 0, 2, 2))
    assert out.shape == (0, 4) and out.dtype == torch.float64
    with pytest.raises(ValueError, match='hist_boxes'):
        paste_boxes(torch.zeros(3, 5), (4, 4), (0, 0, 2, 2))
    with pytest.raises(ValueError, match='hist_size'):
        paste_boxes(torch.zeros(1, 4), (0, 4), (0, 0, 2, 2))


def test_pasted_boxes_land_where_pasted_pixels_land():
    """Draw each history box as a filled rectangle of its own value, paste
    the image, and read each value's pixel extent back."""
    g = torch.Generator().manual_seed(3)
    for trial in range(40):
        hh, hw = torch.randint(12, 40, (2, ), generator=g).tolist()
        # non-overlapping boxes on a coarse grid of the history image
        boxes, img = [], torch.zeros(1, 1, hh + 5, hw + 3)  # +padding
        cell_h, cell_w = hh // 3, hw // 3
        for i in range(3):
            for j in range(3):
                y1 = i * cell_h + int(torch.randint(0, 2, (), generator=g))
                x1 = j * cell_w + int(torch.randint(0, 2, (), generator=g))
                y2 = (i + 1) * cell_h - int(
                    torch.randint(0, 2, (), generator=g))
                x2 = (j + 1) * cell_w - int(
                    torch.randint(0, 2, (), generator=g))
                if x2 > x1 and y2 > y1:
                    img[0, 0, y1:y2, x1:x2] = len(boxes) + 1
                    boxes.append([x1, y1, x2, y2])
        h, w = 50, 60
        x1, x2 = sorted(torch.randint(0, w + 1, (2, ), generator=g).tolist())
        y1, y2 = sorted(torch.randint(0, h + 1, (2, ), generator=g).tolist())
        if x2 == x1 or y2 == y1:
            continue
        mode = ('nearest', 'nearest-exact')[trial % 2]
        out = paste_images(torch.full((1, 1, h, w), -1.), img,
                           [[x1, y1, x2, y2]], [[0, 0, hw, hh]], mode)
        pasted = paste_boxes(torch.tensor(boxes, dtype=torch.float32),
                             (hh, hw), (x1, y1, x2, y2))
        for k, pb in enumerate(pasted.tolist()):
            ys, xs = torch.nonzero(out[0, 0] == k + 1, as_tuple=True)
            if len(ys) == 0:
                # too thin to survive the nearest subsampling
                assert min(pb[2] - pb[0], pb[3] - pb[1]) < 1.0
                continue
            pix = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            for a, b in zip(pix, pb):
                assert abs(float(a) - b) < 1.0, (trial, k, pix, pb)


def _raster(box, h, w):
    m = torch.zeros(h, w, dtype=torch.bool)
    x1, y1, x2, y2 = (int(v) for v in box)
    m[y1:y2, x1:x2] = True
    return m


def test_occlude_boxes_hand_computed():
    boxes = torch.tensor([
        [10., 10., 20., 20.],  # 0 fully covered
        [0., 10., 20., 20.],  # 1 left half covered -> shrunk to x 0..10
        [5., 5., 15., 15.],  # 2 corner: L-shaped visible part, kept whole
        [40., 40., 50., 50.],  # 3 no overlap
        [0., 12., 40., 16.],  # 4 band through the middle: kept whole
        [8., 0., 22., 40.],  # 5 hole-like notch from both sides? spans
    ])
    paste = (10, 10, 30, 30)
    out, keep = occlude_boxes(boxes, paste, min_visible=0.3)
    assert keep.tolist() == [False, True, True, True, True, True]
    assert out[1].tolist() == [0., 10., 10., 20.]
    assert out[2].tolist() == [5., 5., 15., 15.]
    assert out[3].tolist() == [40., 40., 50., 50.]
    assert out[4].tolist() == [0., 12., 40., 16.]
    assert out[5].tolist() == [8., 0., 22., 40.]
    # visible fraction 0.5 of box 1: kept at 0.5, dropped above
    _, keep = occlude_boxes(boxes[1:2], paste, min_visible=0.5)
    assert keep.tolist() == [True]
    _, keep = occlude_boxes(boxes[1:2], paste, min_visible=0.51)
    assert keep.tolist() == [False]
    # corner box: 25 of 100 covered
    _, keep = occlude_boxes(boxes[2:3], paste, min_visible=0.75)
    assert keep.tolist() == [True]
    _, keep = occlude_boxes(boxes[2:3], paste, min_visible=0.76)
    assert keep.tolist() == [False]
    # fully covered is dropped even with min_visible=0
    _, keep = occlude_boxes(boxes[:1], paste, min_visible=0.0)
    assert keep.tolist() == [False]


def test_occlude_boxes_top_and_bottom_strips():
    boxes = torch.tensor([[10., 0., 20., 20.], [10., 25., 20., 40.]])
    out, keep = occlude_boxes(boxes, (5, 15, 25, 30), min_visible=0.0)
    assert out.tolist() == [[10., 0., 20., 15.], [10., 30., 20., 40.]]
    assert keep.tolist() == [True, True]


def test_occlude_boxes_matches_raster_reference():
    g = torch.Generator().manual_seed(5)
    h = w = 24
    for _ in range(300):
        boxes = torch.tensor(_random_boxes(g, 6, h, w, allow_empty=False),
                             dtype=torch.float32)
        paste = _random_boxes(g, 1, h, w)[0]
        mv = float(torch.rand((), generator=g))
        out, keep = occlude_boxes(boxes, paste, min_visible=mv)
        pm = _raster(paste, h, w)
        for b, o, k in zip(boxes.tolist(), out.tolist(), keep.tolist()):
            vis = _raster(b, h, w) & ~pm
            area = (b[2] - b[0]) * (b[3] - b[1])
            frac = float(vis.sum()) / area
            assert k == (frac > 0 and frac >= mv - 1e-6), (b, paste, mv)
            if frac > 0:
                ys, xs = torch.nonzero(vis, as_tuple=True)
                tight = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
                assert [float(v) for v in tight] == o, (b, paste, o)


def test_occlude_boxes_empty_paste_and_no_boxes():
    boxes = torch.tensor([[0., 0., 5., 5.]], dtype=torch.float16)
    out, keep = occlude_boxes(boxes, (2, 2, 2, 8), 0.3)
    assert torch.equal(out, boxes) and keep.tolist() == [True]
    assert out.dtype == torch.float16
    out, keep = occlude_boxes(torch.zeros(0, 4), (0, 0, 3, 3), 0.3)
    assert out.shape == (0, 4) and keep.shape == (0, )
    with pytest.raises(ValueError, match='min_visible'):
        occlude_boxes(boxes, (0, 0, 3, 3), 1.5)


@pytest.mark.parametrize('mode', ['nearest', 'nearest-exact'])
def test_paste_masks_follow_the_image_paste(mode):
    g = torch.Generator().manual_seed(7)
    masks = torch.rand(3, 20, 26, generator=g) > 0.5  # padded history masks
    hist_size, box, out_size = (17, 23), (4, 6, 15, 30), (32, 30)
    out = paste_masks(masks, hist_size, box, out_size, mode=mode)
    assert out.shape == (3, 32, 30) and out.dtype == torch.bool
    ref = paste_images(torch.zeros(1, 3, *out_size), masks[None].float(),
                       [list(box)], [[0, 0, hist_size[1], hist_size[0]]],
                       mode)[0]
    assert torch.equal(out, ref.bool())
    assert not out[:, :6].any() and not out[:, :, :4].any()
    assert paste_masks(masks[:0], hist_size, box,
                       out_size).shape == (0, 32, 30)


def test_occlude_masks_zeroes_box_only():
    masks = torch.ones(2, 6, 7, dtype=torch.uint8)
    out = occlude_masks(masks, (2, 1, 9, 4))
    assert int(out.sum()) == 2 * (42 - 3 * 5)
    assert not out[:, 1:4, 2:].any() and masks.all()


