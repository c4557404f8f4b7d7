"""Tests of ``mixplugins.detection.RecursiveMix`` through mmdet's real
``DetDataPreprocessor``.

Every instance is drawn into its image as a filled rectangle whose pixel
value is its label (a unique id), so after mixing each output box and mask
can be compared with the pixels that carry its id.
"""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmdet.structures.bbox import HorizontalBoxes
from mmdet.structures.mask import BitmapMasks, PolygonMasks
from mmengine.logging import MessageHub
from mmengine.structures import InstanceData

from mixplugins.detection import RecursiveMix

DEFAULT_ARGS = dict(type='RecursiveMix', alpha=1.0, min_visible=0.3)


def _preprocessor(aug=None, **kwargs):
    aug = DEFAULT_ARGS if aug is None else aug
    cfg = dict(type='DetDataPreprocessor',
               pad_size_divisor=32,
               batch_augments=[aug],
               **kwargs)
    pre = MODELS.build(cfg)
    pre.train()
    return pre


class Batch:
    """A batch of raw images whose instances are id-valued rectangles."""

    def __init__(self,
                 sizes,
                 first_id,
                 seed,
                 box_type='tensor',
                 masks=False,
                 ignored=False,
                 empty=()):
        g = torch.Generator().manual_seed(seed)
        self.images, self.samples = [], []
        next_id = first_id
        for i, (h, w) in enumerate(sizes):
            img = torch.zeros(3, h, w, dtype=torch.int64)
            boxes, labels = [], []
            for cy in range(2):
                for cx in range(2):
                    if i in empty:
                        continue
                    ch, cw = h // 2, w // 2
                    r = torch.randint(0,
                                      max(1,
                                          min(ch, cw) // 4), (4, ),
                                      generator=g).tolist()
                    x1, y1 = cx * cw + r[0], cy * ch + r[1]
                    x2, y2 = (cx + 1) * cw - r[2], (cy + 1) * ch - r[3]
                    img[:, y1:y2, x1:x2] = next_id
                    boxes.append([x1, y1, x2, y2])
                    labels.append(next_id)
                    next_id += 1
            sample = DetDataSample(
                metainfo=dict(img_shape=(h, w), ori_shape=(h, w)))
            groups = dict(gt_instances=(boxes, labels))
            if ignored and boxes:
                # the last rectangle is an ignored region
                groups = dict(gt_instances=(boxes[:-1], labels[:-1]),
                              ignored_instances=(boxes[-1:], labels[-1:]))
            for name, (b, lab) in groups.items():
                inst = InstanceData()
                t = torch.tensor(b, dtype=torch.float32).view(-1, 4)
                inst.bboxes = HorizontalBoxes(t) if box_type == 'hbox' else t
                inst.labels = torch.tensor(lab, dtype=torch.long)
                if masks:
                    m = np.zeros((len(b), h, w), dtype=np.uint8)
                    for k, (x1, y1, x2, y2) in enumerate(b):
                        m[k, y1:y2, x1:x2] = 1
                    inst.masks = BitmapMasks(m, h, w)
                setattr(sample, name, inst)
            self.images.append(img)
            self.samples.append(sample)
        self.ids = set(range(first_id, next_id))

    def data(self):
        return dict(inputs=[x.clone() for x in self.images],
                    data_samples=copy.deepcopy(self.samples))

    def padded(self):
        h = max(x.shape[1] for x in self.images)
        w = max(x.shape[2] for x in self.images)
        h, w = -(-h // 32) * 32, -(-w // 32) * 32
        return torch.stack([
            F.pad(x.float(), (0, w - x.shape[2], 0, h - x.shape[1]))
            for x in self.images
        ])


def _boxes(pre):
    """Paste boxes of the last call, read from the augment's record
    (``last_params``); [] when nothing was pasted."""
    aug = pre if isinstance(pre, RecursiveMix) else pre.batch_augments[0]
    params = aug.last_params
    if not params.boxes.any():
        assert bool((params.lam == 1).all())
        return []
    return params.boxes.tolist()


def _assert_inside_valid_areas(boxes, samples):
    for (x1, y1, x2, y2), s in zip(boxes, samples):
        ih, iw = s.metainfo['img_shape'][:2]
        assert 0 <= x1 <= x2 <= iw and 0 <= y1 <= y2 <= ih


def _instances(sample, group):
    inst = getattr(sample, group, None)
    if inst is None:
        return []
    boxes = inst.bboxes
    boxes = boxes.tensor if isinstance(boxes, HorizontalBoxes) else boxes
    masks = inst.masks.masks if 'masks' in inst else [None] * len(boxes)
    return list(zip(inst.labels.tolist(), boxes.tolist(), masks))


def _check_step(before, prev, out, samples, boxes, min_visible):
    """Check one mixed batch against its inputs and the previous batch.

    Args:
        before (Tensor): (N, 3, H, W) padded inputs before mixing.
        prev (tuple): ``(images, samples)`` the previous step returned.
        out (Tensor): This step's mixed images.
        samples (list): This step's mixed samples; metainfo ``_before``
            holds each sample as it was before mixing.
        boxes (list): The N paste boxes drawn.
        min_visible (float): The augment's threshold.

    Returns:
        dict: How many instances were pasted, clipped and dropped.
    """
    prev_out, prev_samples = prev
    n_prev = prev_out.shape[0]
    stats = dict(pasted=0, clipped=0, dropped=0)
    for i, sample in enumerate(samples):
        j = i % n_prev
        ph, pw = prev_samples[j].metainfo['img_shape']
        x1, y1, x2, y2 = boxes[i]
        ih, iw = sample.metainfo['img_shape']
        assert 0 <= x1 <= x2 <= iw and 0 <= y1 <= y2 <= ih
        expect = before[i].clone()
        if x2 > x1 and y2 > y1:
            expect[:, y1:y2,
                   x1:x2] = F.interpolate(prev_out[j:j + 1, :, :ph, :pw],
                                          size=(y2 - y1, x2 - x1),
                                          mode='nearest')[0]
        assert torch.equal(out[i], expect)
        pix = out[i, 0]
        for group in ('gt_instances', 'ignored_instances'):
            cur_ids = _ids(sample.metainfo['_before'], group)
            prev_ids = _ids(prev_samples[j], group)
            prev_boxes = {
                lab: box
                for lab, box, _ in _instances(prev_samples[j], group)
            }
            kept = set()
            for lab, box, mask in _instances(sample, group):
                kept.add(lab)
                ys, xs = torch.nonzero(pix == lab, as_tuple=True)
                if lab in prev_ids:
                    stats['pasted'] += 1
                    pb = prev_boxes[lab]
                    rx, ry = (x2 - x1) / pw, (y2 - y1) / ph
                    expect_box = [
                        min(max(x1 + pb[0] * rx, x1), x2),
                        min(max(y1 + pb[1] * ry, y1), y2),
                        min(max(x1 + pb[2] * rx, x1), x2),
                        min(max(y1 + pb[3] * ry, y1), y2)
                    ]
                    assert box == pytest.approx(expect_box, abs=1e-3)
                    assert min(box[2] - box[0], box[3] - box[1]) >= 1.0
                    pys, pxs = torch.nonzero(prev_out[j, 0] == lab,
                                             as_tuple=True)
                    prev_tight = [
                        float(pxs.min()),
                        float(pys.min()),
                        float(pxs.max() + 1),
                        float(pys.max() + 1)
                    ] if len(pys) else None
                    full = float((pb[2] - pb[0]) * (pb[3] - pb[1]))
                    if prev_tight == [float(v) for v in pb] and len(
                            pys) == full:
                        # the history instance was a whole pixel-exact
                        # rectangle (one occluded in its middle keeps its
                        # box, and the nearest resize may skip its
                        # remaining pixels): its pasted pixels lie within
                        # 1 px of the pasted box
                        tight = [
                            xs.min(),
                            ys.min(),
                            xs.max() +
                            1, ys.max() + 1
                        ] if len(ys) else None
                        if tight is None:  # float edge of nearest
                            assert min(box[2] - box[0], box[3] - box[1]) < 1.01
                        else:
                            assert all(
                                abs(float(a) - b) <= 1.0 + 1e-4
                                for a, b in zip(tight, box)), (tight, box)
                else:
                    assert lab in cur_ids, (group, lab)
                    area = float((before[i, 0] == lab).sum())
                    tight = [
                        float(xs.min()),
                        float(ys.min()),
                        float(xs.max() + 1),
                        float(ys.max() + 1)
                    ]
                    assert tight == box, (group, lab, tight, box)
                    assert len(ys) / area >= min_visible - 1e-6
                    stats['clipped'] += int(len(ys) < area)
                if mask is not None:
                    mh, mw = mask.shape
                    assert np.array_equal(mask.astype(bool),
                                          (pix[:mh, :mw] == lab).numpy())
            # every current instance that vanished was (mostly) hidden
            for lab in cur_ids - kept:
                area = float((before[i, 0] == lab).sum())
                visible = float((pix == lab).sum())
                assert visible / area < min_visible + 1e-6
                stats['dropped'] += 1
    return stats


def _ids(sample, group):
    return {lab for lab, _, _ in _instances(sample, group)}


def _run(pre, batch):
    data = batch.data()
    for s, orig in zip(data['data_samples'], batch.samples):
        s.set_metainfo(dict(_before=orig))
    out = pre(data, training=True)
    return out['inputs'], out['data_samples']


class TestRecursiveMix:

    def test_init_errors(self):
        for kwargs, match in [(dict(alpha=0), 'alpha'),
                              (dict(alpha=1.5), 'alpha'),
                              (dict(min_visible=1.2), 'min_visible'),
                              (dict(interpolation='area'), 'interpolation')]:
            with pytest.raises(ValueError, match=match):
                MODELS.build({**DEFAULT_ARGS, **kwargs})
        with pytest.raises(TypeError, match='carry_history'):
            MODELS.build({**DEFAULT_ARGS, 'carry_history': 1})
        aug = MODELS.build({**DEFAULT_ARGS, 'alpha': 1})
        assert isinstance(aug, RecursiveMix) and aug.alpha == 1.0

    @pytest.mark.parametrize('box_type,masks,pad_mask', [
        ('tensor', False, False),
        ('hbox', True, False),
        ('tensor', True, True),
    ])
    def test_pixels_boxes_and_masks_agree_over_steps(self, box_type, masks,
                                                     pad_mask):
        torch.manual_seed(0)
        pre = _preprocessor(boxtype2tensor=(box_type == 'tensor'),
                            pad_mask=pad_mask)
        # batch sizes 3 -> 2 -> 4 -> 2 -> 4 ..., different image sizes;
        # fresh ids at every step
        sizes = [[(40, 56), (64, 48), (30, 70)], [(72, 50), (44, 44)],
                 [(50, 60), (96, 40), (33, 33), (64, 64)]]
        batches = [
            Batch(sizes[0 if k == 0 else 1 + (k - 1) % 2],
                  1000 * (k + 1),
                  k,
                  box_type,
                  masks,
                  ignored=True) for k in range(7)
        ]
        out, samples = _run(pre, batches[0])
        assert torch.equal(out, batches[0].padded())  # first step: no paste
        assert _boxes(pre) == []
        totals = dict(pasted=0, clipped=0, dropped=0)
        prev = (out, samples)
        box_cls = HorizontalBoxes if box_type == 'hbox' else torch.Tensor
        for step in range(6):
            batch = batches[1 + step]
            out, samples = _run(pre, batch)
            _assert_inside_valid_areas(_boxes(pre), batch.samples)
            for s in samples:
                assert isinstance(s.gt_instances.bboxes, box_cls)
                assert isinstance(s.ignored_instances.bboxes, box_cls)
            stats = _check_step(batch.padded(), prev, out, samples,
                                _boxes(pre), 0.3)
            for k in totals:
                totals[k] += stats[k]
            prev = (out, samples)
        # the draws exercised every branch
        assert totals['pasted'] > 0 and totals['clipped'] > 0
        assert totals['dropped'] > 0

    def test_box_type_is_kept(self):
        for box_type, b2t in (('hbox', False), ('tensor', True)):
            pre = _preprocessor(boxtype2tensor=b2t)
            for seed in range(2):
                _, samples = _run(
                    pre, Batch([(40, 40)], 1000 * (seed + 1), seed, box_type))
                bx = samples[0].gt_instances.bboxes
                assert (type(bx) is HorizontalBoxes) == (box_type == 'hbox')

    def test_no_gt_boxes_and_mostly_padding(self):
        torch.manual_seed(1)
        pre = _preprocessor()
        prev = _run(pre, Batch([(64, 96), (64, 96)], 1000, 0))
        # image 0 has no boxes; image 1 is an 8x8 image in a 64x96 batch
        pasted = 0
        for k in range(5):
            cur = Batch([(64, 96), (8, 8)], 2000 + 100 * k, k, empty=(0, ))
            assert len(cur.samples[0].gt_instances) == 0
            out, samples = _run(pre, cur)
            stats = _check_step(cur.padded(), prev, out, samples,
                                _boxes(pre), 0.3)
            pasted += stats['pasted']
            # nothing is written into the padding of the small image
            assert not out[1, :, 8:, :].any() and not out[1, :, :, 8:].any()
            _assert_inside_valid_areas(_boxes(pre), cur.samples)
            prev = (out, samples)
        assert pasted > 0

    def test_history_of_other_batch_size_and_shape_is_cycled(self):
        torch.manual_seed(2)
        aug = MODELS.build(DEFAULT_ARGS)
        small = torch.arange(2 * 3 * 8 * 8.).view(2, 3, 8, 8)
        s_small = [
            DetDataSample(metainfo=dict(img_shape=(8, 8))) for _ in range(2)
        ]
        for s in s_small:
            s.gt_instances = InstanceData(bboxes=torch.zeros(0, 4),
                                          labels=torch.zeros(0).long())
        aug(small, s_small)
        big = torch.zeros(5, 3, 32, 64)
        s_big = []
        for _ in range(5):
            s = DetDataSample(metainfo=dict(img_shape=(32, 64)))
            s.gt_instances = InstanceData(bboxes=torch.zeros(0, 4),
                                          labels=torch.zeros(0).long())
            s_big.append(s)
        out, _ = aug(big, s_big)
        assert aug.last_params.index.tolist() == [0, 1, 0, 1, 0]
        for i, (x1, y1, x2, y2) in enumerate(_boxes(aug)):
            ref = F.interpolate(small[i % 2:i % 2 + 1],
                                size=(y2 - y1, x2 - x1))
            assert torch.equal(out[i, :, y1:y2, x1:x2], ref[0])

    def test_polygon_masks_are_refused(self):
        aug = MODELS.build(DEFAULT_ARGS)
        s = DetDataSample(metainfo=dict(img_shape=(8, 8)))
        s.gt_instances = InstanceData(
            bboxes=torch.tensor([[0., 0., 4., 4.]]),
            labels=torch.tensor([1]),
            masks=PolygonMasks([[np.array([0., 0., 4., 0., 4., 4.])]], 8, 8))
        with pytest.raises(ValueError, match='masks'):
            aug(torch.zeros(1, 3, 8, 8), [s])

    def test_inputs_not_mutated_and_unsupported_fields(self):
        torch.manual_seed(3)
        aug = MODELS.build(DEFAULT_ARGS)
        x = torch.randn(2, 3, 16, 16)
        samples = [
            DetDataSample(metainfo=dict(img_shape=(16, 16))) for _ in range(2)
        ]
        for s in samples:
            s.gt_instances = InstanceData(bboxes=torch.tensor(
                [[0., 0., 8., 8.]]),
                                          labels=torch.tensor([1]))
        aug(x, samples)
        for _ in range(3):
            x2 = torch.randn(2, 3, 16, 16)
            before = x2.clone()
            out, _ = aug(x2, samples)
            assert torch.equal(x2, before) and out.shape == x2.shape
        samples[0].gt_instances.scores = torch.ones(
            len(samples[0].gt_instances))
        with pytest.raises(ValueError, match='scores'):
            aug(torch.randn(2, 3, 16, 16), samples)

    def _step(self, aug, seed):
        g = torch.Generator().manual_seed(seed)
        x = torch.rand(2, 3, 16, 16, generator=g)
        samples = [
            DetDataSample(metainfo=dict(img_shape=(16, 16))) for _ in range(2)
        ]
        for s in samples:
            s.gt_instances = InstanceData(bboxes=torch.tensor(
                [[2., 2., 9., 9.]]),
                                          labels=torch.tensor([seed]))
        return aug(x, samples)

    def test_epoch_reset_and_carry(self):
        hub = MessageHub.get_instance('mixplugins-test-det-epoch')
        hub.update_info('epoch', 0)
        for carry, mixed_after_reset in ((False, False), (True, True)):
            aug = MODELS.build({**DEFAULT_ARGS, 'carry_history': carry})
            self._step(aug, 1)
            hub.update_info('epoch', hub.get_info('epoch') + 1)
            torch.manual_seed(0)
            x = torch.rand(2, 3, 16, 16)
            out, samples = aug(x.clone(), [
                DetDataSample(metainfo=dict(img_shape=(16, 16)))
                for _ in range(2)
            ])
            # at least one of the two boxes is non-empty for this seed
            assert (not torch.equal(out, x)) == mixed_after_reset

    def test_history_goes_through_state_dict(self):
        torch.manual_seed(4)
        pre = _preprocessor()
        _run(pre, Batch([(40, 56), (64, 48)], 1000, 1, masks=True))
        state = pre.state_dict()
        key = 'batch_augments.0.history._extra_state'
        assert key in state and state[key]['inputs'].shape == (2, 3, 64, 64)
        fresh = _preprocessor()
        fresh.load_state_dict(state)
        nxt = Batch([(50, 50), (30, 60)], 2000, 2, masks=True)
        torch.manual_seed(9)
        a = _run(pre, nxt)
        torch.manual_seed(9)
        b = _run(fresh, nxt)
        assert torch.equal(a[0], b[0])
        for sa, sb in zip(a[1], b[1]):
            assert torch.equal(sa.gt_instances.bboxes, sb.gt_instances.bboxes)
            assert np.array_equal(sa.gt_instances.masks.masks,
                                  sb.gt_instances.masks.masks)
        # a fresh module without the loaded history would not paste
        torch.manual_seed(9)
        c = _run(_preprocessor(), nxt)
        assert torch.equal(c[0], nxt.padded())


@pytest.mark.parametrize('interpolation', ['nearest', 'bilinear'])
def test_last_params_reproduce_the_output_bitwise(interpolation):
    """``paste_images`` on the record (boxes, history rows, source boxes)
    gives the augment's images; lam is the visible fraction of each valid
    area."""
    from mixplugins.core.boxes import paste_images
    MessageHub.get_current_instance().update_info('epoch', 0)
    torch.manual_seed(3)
    pre = _preprocessor({**DEFAULT_ARGS, 'interpolation': interpolation})
    aug = pre.batch_augments[0]
    sizes = [[(40, 56), (64, 48), (30, 70)], [(72, 50), (44, 44)]]
    pasted = 0
    for step in range(5):
        batch = Batch(sizes[step % 2], 1000 * (step + 1), step)
        x = pre(batch.data(), training=False)['inputs']
        hist = aug.history.inputs
        out, samples = _run(pre, batch)
        p = aug.last_params
        n = len(samples)
        assert p.boxes.shape == (n, 4) and p.src_boxes.shape == (n, 4)
        if hist is None:
            assert torch.equal(out, x) and not p.boxes.any()
            continue
        expected = paste_images(x, hist[p.index], p.boxes, p.src_boxes,
                                interpolation)
        assert torch.equal(out, expected)
        shapes = torch.tensor([s.metainfo['img_shape'] for s in samples])
        area = (p.boxes[:, 2:] - p.boxes[:, :2]).prod(1)
        torch.testing.assert_close(p.lam.double(),
                                   1 - area.double() / shapes.prod(1))
        pasted += int((area > 0).sum())
    assert pasted > 0
