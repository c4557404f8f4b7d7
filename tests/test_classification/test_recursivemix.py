"""Classification RecursiveMix through MixImageClassifier on a tiny ResNet:
arguments, ``fc_roi``, two hand-checked steps, the history (per epoch,
saved, smaller and larger batches) and the record of a step
(``last_params``: applying the core kernel to it reproduces the augment's
output bitwise)."""
import copy

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip('mmpretrain')
from mmpretrain.registry import BATCH_AUGMENTS  # noqa: E402
from torchvision.ops import roi_align  # noqa: E402

import mixplugins  # noqa: E402,F401
from mixplugins.classification import RecursiveMix  # noqa: E402
from mixplugins.core.recursive import (RecursiveMixParams,  # noqa: E402
                                       paste_history)
from tests._helpers import (NUM_CLASSES, build_model,  # noqa: E402
                            make_batch, set_epoch)

pytestmark = pytest.mark.usefixtures('epoch0')


def _model(**kwargs):
    """One RecursiveMix (alpha 1); the data preprocessor left to
    mmpretrain's default."""
    return build_model(dict(type='RecursiveMix', alpha=1.0, **kwargs),
                       data_preprocessor=None)


# ---------------------------------------------------------- RecursiveMix
class TestRecursiveMix:
    DEFAULT_ARGS = dict(type='RecursiveMix', alpha=0.5, omega=0.5)

    @pytest.mark.parametrize('bad, name', [
        (dict(alpha=0), 'alpha'),
        (dict(alpha=1.5), 'alpha'),
        (dict(omega=-0.1), 'omega'),
        (dict(interpolation='lanczos'), 'interpolation'),
    ])
    def test_init_errors(self, bad, name):
        with pytest.raises(ValueError, match=name):
            BATCH_AUGMENTS.build({**self.DEFAULT_ARGS, **bad})

    def test_builds_fc_roi_from_backbone_and_head(self):
        model = build_model([self.DEFAULT_ARGS])
        assert model.fc_roi.in_features == 64
        assert model.fc_roi.out_features == NUM_CLASSES
        plain = build_model([dict(type='CutMix', alpha=1.0)])
        assert plain.fc_roi is None and plain.rm_history is None

    def test_vit_backbone_is_refused(self):
        with pytest.raises(ValueError, match='backbone'):
            build_model([self.DEFAULT_ARGS],
                        backbone=dict(
                            type='VisionTransformer',
                            arch=dict(
                                embed_dims=16,
                                num_layers=1,
                                num_heads=2,
                                feedforward_channels=32),
                            img_size=64,
                            patch_size=16),
                        head=dict(
                            type='LinearClsHead',
                            num_classes=NUM_CLASSES,
                            in_channels=16))

    def _step(self, model, data):
        out = model.data_preprocessor(data, True)
        step = model._recursive_step
        losses = model(**out, mode='loss')
        return out, step, losses

    def test_first_step_is_unmixed_and_fc_roi_is_used(self):
        model = build_model([self.DEFAULT_ARGS])
        data, _ = make_batch()
        x = torch.stack(data['inputs']).float()
        out, step, losses = self._step(model, data)
        assert step is None
        assert torch.equal(out['inputs'], x)
        assert losses['loss_consistency'].item() == 0
        sum(losses.values()).backward()
        assert model.fc_roi.weight.grad is not None
        assert len(model.rm_history) == 4

    def test_two_steps_hand_checked(self):
        model = build_model([self.DEFAULT_ARGS])
        data1, _ = make_batch(seed=1)
        out1, _, _ = self._step(model, data1)
        mixed1 = out1['inputs']
        t1 = torch.stack([s.gt_score for s in out1['data_samples']])
        with torch.no_grad():  # train-mode BN: a deterministic function
            logits1 = model(mixed1, mode='tensor')

        data2, labels2 = make_batch(seed=2)
        x2 = torch.stack(data2['inputs']).float()
        torch.manual_seed(5)
        out2 = model.data_preprocessor(data2, True)
        step = model._recursive_step
        assert step is not None
        x1b, y1b, x2b, y2b = step.box
        h, w = y2b - y1b, x2b - x1b
        lam = 1 - h * w / (32 * 32)
        assert step.lam == pytest.approx(lam)
        expected = x2.clone()
        if h > 0 and w > 0:
            expected[:, :, y1b:y2b, x1b:x2b] = F.interpolate(
                mixed1, size=(h, w), mode='nearest')
        torch.testing.assert_close(out2['inputs'], expected)
        t2 = torch.stack([s.gt_score for s in out2['data_samples']])
        onehot2 = F.one_hot(labels2, NUM_CLASSES).float()
        torch.testing.assert_close(t2, lam * onehot2 + (1 - lam) * t1)

        losses = model(**out2, mode='loss')
        with torch.no_grad():
            feat = model.backbone(out2['inputs'])[-1]
            rois = torch.tensor([[i, x1b, y1b, x2b, y2b] for i in range(4)],
                                dtype=torch.float32)
            pooled = roi_align(
                feat, rois, 1, spatial_scale=feat.shape[-1] / 32,
                sampling_ratio=-1, aligned=True).flatten(1)
            roi_logits = model.fc_roi(pooled)
            target = logits1.softmax(-1)
            ce = -(target * roi_logits.log_softmax(-1)).sum(-1).mean()
        torch.testing.assert_close(losses['loss_consistency'].detach(),
                                   0.5 * (1 - lam) * ce)

    def test_history_resets_each_epoch_unless_carried(self):
        for carry, resets in ((False, True), (True, False)):
            model = build_model([{**self.DEFAULT_ARGS,
                                  'carry_history': carry}])
            self._step(model, make_batch(seed=1)[0])
            set_epoch(1)
            data, _ = make_batch(seed=2)
            x = torch.stack(data['inputs']).float()
            torch.manual_seed(0)
            out, step, _ = self._step(model, data)
            assert (step is None) == resets
            if resets:
                assert torch.equal(out['inputs'], x)

    def test_history_is_saved_and_restored(self):
        model = build_model([self.DEFAULT_ARGS])
        self._step(model, make_batch(seed=1)[0])
        state = model.state_dict()
        assert 'rm_history._extra_state' in state
        fresh = build_model([self.DEFAULT_ARGS])
        fresh.load_state_dict(state)
        torch.testing.assert_close(fresh.rm_history.inputs,
                                   model.rm_history.inputs)
        for key in ('targets', 'logits'):
            torch.testing.assert_close(fresh.rm_history[key],
                                       model.rm_history[key])
        # and it continues exactly as the original would
        data, _ = make_batch(seed=2)
        torch.manual_seed(9)
        a = model.data_preprocessor(copy.deepcopy(data), True)['inputs']
        torch.manual_seed(9)
        b = fresh.data_preprocessor(copy.deepcopy(data), True)['inputs']
        torch.testing.assert_close(a, b)

    def test_smaller_batch_uses_the_history_prefix_and_larger_cycles(self):
        model = build_model([{**self.DEFAULT_ARGS, 'carry_history': True}])
        self._step(model, make_batch(n=4, seed=1)[0])
        for n in (2, 6):
            torch.manual_seed(1)
            out, step, losses = self._step(model, make_batch(n=n, seed=n)[0])
            assert out['inputs'].shape[0] == n
            assert torch.isfinite(losses['loss_consistency'])


# ----------------------------------------------------------- last_params
@pytest.mark.parametrize('interpolation', ['nearest', 'bilinear'])
def test_last_params_reproduce_the_output_bitwise(interpolation):
    set_epoch(0)
    model = _model(interpolation=interpolation)
    pre = model.data_preprocessor
    aug = pre.batch_augments.augments[0]
    assert isinstance(aug, RecursiveMix) and aug.history is model.rm_history
    pasted = 0
    for step, n in enumerate((4, 4, 3, 4)):
        data, labels = make_batch(n, seed=step)
        x = pre(copy.deepcopy(data), False)['inputs']
        hist = aug.history
        hist_inputs = hist.inputs
        hist_targets = None if hist_inputs is None else hist['targets']
        out = pre(data, True)
        p = aug.last_params
        assert isinstance(p, RecursiveMixParams)
        assert p.boxes.shape == (n, 4) and p.lam.shape == (n, )
        onehot = F.one_hot(labels, NUM_CLASSES).float()
        if hist_inputs is None:  # first step: nothing pasted
            assert not p.boxes.any() and bool((p.lam == 1).all())
            assert torch.equal(out['inputs'], x)
        else:
            box = p.boxes[0].tolist()
            assert (p.boxes == p.boxes[0]).all()  # one box per batch
            rows = p.index
            assert rows.tolist() == [i % len(hist_inputs) for i in range(n)]
            assert (p.src_boxes[:, 2:] == torch.tensor([32, 32])).all()
            mixed, scores, lam = paste_history(x, onehot, hist_inputs[rows],
                                               hist_targets[rows], box,
                                               interpolation)
            assert torch.equal(out['inputs'], mixed)
            got = torch.stack([s.gt_score for s in out['data_samples']])
            assert torch.equal(got, scores)
            torch.testing.assert_close(p.lam, torch.full((n, ), lam))
            pasted += int(lam < 1)
        model.loss(out['inputs'], out['data_samples'])  # stores the history
    assert pasted > 0
