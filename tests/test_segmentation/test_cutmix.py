"""Tests of ``mixplugins.segmentation.SegCutMix`` (also registered as
``CutMix`` in mmseg's MODELS) through ``MixSegDataPreProcessor``."""
import pytest
import torch
from mmseg.registry import MODELS

from mixplugins.segmentation import SegCutMix

from ._helpers import IdBatch, seg_of

SIZE = (48, 48)


def _preprocessor(**kwargs):
    pre = MODELS.build(
        dict(type='MixSegDataPreProcessor',
             size=SIZE,
             pad_val=0,
             seg_pad_val=255,
             batch_augments=[dict(type='CutMix', alpha=1.0, **kwargs)]))
    pre.train()
    return pre


def test_registered_names_and_init_errors():
    assert MODELS.get('CutMix') is SegCutMix
    assert MODELS.get('SegCutMix') is SegCutMix
    for alpha in (0, -1.0):
        with pytest.raises(ValueError, match='alpha'):
            MODELS.build(dict(type='CutMix', alpha=alpha))
    with pytest.raises(TypeError, match='alpha'):
        MODELS.build(dict(type='CutMix', alpha='1'))


def test_one_box_from_a_permuted_partner_labels_follow_pixels():
    torch.manual_seed(0)
    pre = _preprocessor()
    # one padded image only, so that every region identifies its image
    batch = IdBatch([(48, 48), (40, 30), (48, 48), (48, 48)], 1000)
    before = batch.padded(SIZE)
    seg_before = batch.padded(SIZE, pad_val=255).long()
    seg_before[batch.padded(SIZE, pad_val=-1) < 0] = 255
    seg_before = seg_before[:, :1]
    n = len(batch.images)
    areas = []
    for _ in range(20):
        res = pre(batch.data(), training=True)
        out, seg = res['inputs'], seg_of(res['data_samples'])
        assert out.shape == before.shape and seg.shape == seg_before.shape
        changed = (out != before).any(1) | (seg != seg_before)[:, 0]
        union = changed.any(0)
        if not union.any():
            continue  # empty box, or the identity permutation
        ys, xs = torch.nonzero(union, as_tuple=True)
        y1, y2, x1, x2 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        areas.append(float((y2 - y1) * (x2 - x1)) / (48 * 48))
        partners = []
        for i in range(n):
            # the changed pixels lie in one box shared by the batch, and
            # the box holds one other image's pixels and labels unchanged
            matches = [
                j for j in range(n)
                if torch.equal(out[i, :, y1:y2, x1:x2], before[j, :, y1:y2,
                                                               x1:x2])
                and torch.equal(seg[i, :, y1:y2,
                                    x1:x2], seg_before[j, :, y1:y2, x1:x2])
            ]
            assert matches, i
            partners.append(matches[0])
            outside = torch.ones(48, 48, dtype=torch.bool)
            outside[y1:y2, x1:x2] = False
            assert torch.equal(out[i][:, outside], before[i][:, outside])
            assert torch.equal(seg[i][:, outside], seg_before[i][:, outside])
            # labels equal their pixels' ids; pasted padding is ignored
            valid = seg[i, 0] != 255
            assert torch.equal(seg[i, 0][valid], out[i, 0][valid].long())
            assert not out[i][:, ~valid].any()
        assert sorted(partners) == list(range(n))
    assert len(areas) > 5
    # Beta(1, 1): nominal pasted fraction 1 - lam ~ U(0, 1), clipped at the
    # borders, so the mean is well inside (0, 1)
    assert 0.05 < sum(areas) / len(areas) < 0.8


def test_last_params_reproduce_the_output_bitwise():
    from mixplugins.core.boxes import CutMixParams, paste_images
    from mixplugins.core.seg import paste_seg
    torch.manual_seed(5)
    pre = _preprocessor()
    aug = pre.batch_augments[0]
    batch = IdBatch([SIZE] * 4, 1000)  # test mode needs equal sizes
    for _ in range(5):
        ref = pre(batch.data(), training=False)
        x, seg = ref['inputs'], seg_of(ref['data_samples'])
        res = pre(batch.data(), training=True)
        p = aug.last_params
        assert isinstance(p, CutMixParams) and p.boxes.shape == (4, 4)
        assert (p.boxes == p.boxes[0]).all() and (p.lam == p.lam[0]).all()
        x1, y1, x2, y2 = p.boxes[0].tolist()
        assert float(p.lam[0]) == pytest.approx(1 - (x2 - x1) * (y2 - y1) /
                                                (48 * 48))
        assert sorted(p.index.tolist()) == [0, 1, 2, 3]
        assert torch.equal(res['inputs'],
                           paste_images(x, x[p.index], p.boxes, p.boxes))
        assert torch.equal(seg_of(res['data_samples']),
                           paste_seg(seg, seg[p.index], p.boxes, p.boxes))
