"""Tests of ``mixplugins.core.seg.paste_seg``: labels follow the pixels."""
import pytest
import torch

from mixplugins.core.boxes import paste_images
from mixplugins.core.seg import paste_seg


def _identity_batch(n, h, w, offset):
    """Images and maps whose value at each pixel is a unique pixel id."""
    ids = torch.arange(n * h * w, dtype=torch.int64).view(n, 1, h, w) + offset
    return ids.double(), ids


@pytest.mark.parametrize('mode', ['nearest', 'nearest-exact'])
def test_every_label_is_the_label_of_its_source_pixel(mode):
    g = torch.Generator().manual_seed(0)
    for _ in range(10):
        img, seg = _identity_batch(3, 21, 30, offset=0)
        h_img, h_seg = _identity_batch(3, 17, 13, offset=10**6)
        boxes, src = [], []
        for _ in range(3):
            x1, x2 = sorted(torch.randint(0, 31, (2, ), generator=g).tolist())
            y1, y2 = sorted(torch.randint(0, 22, (2, ), generator=g).tolist())
            boxes.append([x1, y1, x2, y2])
            # valid (unpadded) area of each history image
            src.append([
                0, 0,
                int(torch.randint(1, 14, (), generator=g)),
                int(torch.randint(1, 18, (), generator=g))
            ])
        out_img = paste_images(img, h_img, boxes, src, mode)
        out_seg = paste_seg(seg, h_seg, boxes, src, mode)
        assert out_seg.dtype == torch.int64 and out_seg.shape == seg.shape
        assert torch.equal(out_img.long(), out_seg)
        for n, ((x1, y1, x2, y2), (_, _, sw, sh)) in enumerate(zip(boxes,
                                                                   src)):
            region = out_seg[n, 0, y1:y2, x1:x2]
            if region.numel():
                # pasted labels come from the valid area of history n only
                rel = region - 10**6 - n * 17 * 13
                assert bool(((rel >= 0) & (rel // 13 < sh)
                             & (rel % 13 < sw)).all())
            outside = torch.ones(21, 30, dtype=torch.bool)
            outside[y1:y2, x1:x2] = False
            assert torch.equal(out_seg[n, 0][outside], seg[n, 0][outside])


def test_ignore_and_padding_values_are_copied_not_blended():
    seg = torch.full((2, 8, 8), 3, dtype=torch.uint8)
    hist = torch.full((2, 6, 6), 255, dtype=torch.uint8)
    hist[:, :2, :2] = 7
    out = paste_seg(seg, hist, [[0, 0, 8, 8], [2, 2, 5, 5]])
    assert set(out.unique().tolist()) == {3, 7, 255}
    assert out.dtype == torch.uint8
    assert bool((out[0, 3:, 3:] == 255).all())
    assert bool((out[1, :2] == 3).all())


def test_three_dim_maps_and_bad_mode():
    seg = torch.zeros(2, 5, 5, dtype=torch.long)
    hist = torch.ones(2, 3, 3, dtype=torch.long)
    out = paste_seg(seg, hist, [[0, 0, 3, 3], [0, 0, 0, 0]])
    assert out.shape == (2, 5, 5)
    assert int(out[0].sum()) == 9 and int(out[1].sum()) == 0
    with pytest.raises(ValueError, match='mode'):
        paste_seg(seg, hist, [[0, 0, 3, 3]] * 2, mode='bilinear')
    with pytest.raises(ValueError, match='seg'):
        paste_seg(torch.zeros(2, 3, 5, 5), torch.zeros(2, 3, 5, 5),
                  [[0, 0, 3, 3]] * 2)
