"""RMix through MixImageClassifier on a tiny ResNet: arguments, the
saliency pass, the mixed batch and its scores, the clean loss, the record
of a step (``last_params``: applying the core kernels to it reproduces the
augment's output bitwise) and ``saliency_scale``."""
import copy

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip('mmpretrain')
from mmengine.optim import OptimWrapper  # noqa: E402
from mmpretrain.registry import BATCH_AUGMENTS  # noqa: E402

import mixplugins  # noqa: E402,F401
from mixplugins.classification import RMix  # noqa: E402
from mixplugins.core.rmix import (DEFAULT_QUANTILE_LEVELS,  # noqa: E402
                                  RMixParams, cell_masks, input_saliency,
                                  mix_by_masks, saliency_size,
                                  upsample_masks)
from tests._helpers import (NUM_CLASSES, build_model, cls_model,  # noqa: E402
                            make_batch)

pytestmark = pytest.mark.usefixtures('epoch0')


def _model(**rmix):
    """One RMix; the data preprocessor left to mmpretrain's default."""
    return build_model(dict(type='RMix', **rmix), data_preprocessor=None)


# ----------------------------------------------------------------- RMix
class TestRMix:
    DEFAULT_ARGS = dict(type='RMix')

    @pytest.mark.parametrize('bad, name', [
        (dict(alpha=0), 'alpha'),
        (dict(alpha=-1.0), 'alpha'),
        (dict(grids=(0, 2)), 'grids'),
        (dict(grids=()), 'grids'),
        (dict(quantile_levels=(0.5, 1.5)), 'quantile_levels'),
        (dict(partner='roll'), 'partner'),
        (dict(saliency_bn='frozen'), 'saliency_bn'),
        (dict(clean_loss_weight=-1), 'clean_loss_weight'),
    ])
    def test_init_errors(self, bad, name):
        with pytest.raises(ValueError, match=name):
            BATCH_AUGMENTS.build({**self.DEFAULT_ARGS, **bad})

    def test_unbound_augment_names_the_classifier(self):
        aug = BATCH_AUGMENTS.build(self.DEFAULT_ARGS)
        with pytest.raises(RuntimeError, match='MixImageClassifier'):
            aug(torch.zeros(2, 3, 8, 8), torch.eye(2))

    def test_plain_image_classifier_is_refused(self):
        model = cls_model(
            self.DEFAULT_ARGS,
            type='ImageClassifier',
            head=dict(type='LinearClsHead', num_classes=5, in_channels=64))
        data, _ = make_batch()
        with pytest.raises(RuntimeError, match='MixImageClassifier'):
            model.data_preprocessor(data, True)

    def test_saliency_pass_leaves_grads_and_optimizer_untouched(self):
        model = build_model([self.DEFAULT_ARGS])
        optim = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        wrapper = OptimWrapper(optim)
        data, _ = make_batch()
        # one real step so that momentum buffers exist
        wrapper.update_params(
            model.parse_losses(
                model(**model.data_preprocessor(data, True),
                      mode='loss'))[0])
        state = copy.deepcopy(optim.state_dict())
        for p in model.parameters():
            p.grad = None
        model.data_preprocessor(make_batch(seed=1)[0], True)
        assert all(p.grad is None for p in model.parameters())
        after = optim.state_dict()
        for key, val in state['state'].items():
            for name, t in val.items():
                assert torch.equal(t, after['state'][key][name])

    def test_saliency_is_the_input_gradient_of_the_clean_batch(self):
        model = build_model([self.DEFAULT_ARGS])
        aug = model.data_preprocessor.batch_augments.augments[0]
        data, labels = make_batch()
        x = torch.stack(data['inputs']).float()
        expected = input_saliency(lambda t: model(t, mode='tensor'), x,
                                  labels)
        got = aug.clean_pass(x, labels)[0]
        torch.testing.assert_close(got, expected)
        # a reference computed from scratch with a full backward
        xr = x.clone().requires_grad_(True)
        F.cross_entropy(model(xr, mode='tensor'), labels).backward()
        ref = xr.grad.pow(2).mean(1).sqrt()
        torch.testing.assert_close(got, ref)

    def test_bn_mode(self):
        data, _ = make_batch()
        for mode, changes in (('train', True), ('eval', False)):
            model = build_model([{**self.DEFAULT_ARGS, 'saliency_bn': mode}])
            bn = model.backbone.norm1
            before = bn.running_mean.clone()
            model.data_preprocessor(copy.deepcopy(data), True)
            assert (not torch.equal(before, bn.running_mean)) == changes
            assert model.training and bn.training

    def test_mixed_batch_and_scores(self):
        model = build_model([self.DEFAULT_ARGS])
        data, labels = make_batch(n=6)
        x = torch.stack(data['inputs']).float()
        torch.manual_seed(3)
        out = model.data_preprocessor(data, True)
        mixed = out['inputs']
        scores = torch.stack([s.gt_score for s in out['data_samples']])
        assert mixed.shape == x.shape
        torch.testing.assert_close(scores.sum(1), torch.ones(6))
        # every pixel is a convex combination of its own and one partner:
        # its label mass stays on the own label and at most one other
        onehot = F.one_hot(labels, NUM_CLASSES).float()
        own = (scores * onehot).sum(1)
        assert (own > 0).all() or (scores.max(1).values > 0).all()
        assert not torch.equal(mixed, x)

    def test_clean_loss(self):
        model = build_model([{**self.DEFAULT_ARGS, 'clean_loss_weight': 0.5}])
        data, labels = make_batch()
        x = torch.stack(data['inputs']).float()
        with torch.no_grad():
            expected = 0.5 * F.cross_entropy(model(x, mode='tensor'), labels)
        losses = model(**model.data_preprocessor(data, True), mode='loss')
        torch.testing.assert_close(losses['loss_clean'].detach(), expected)
        assert set(losses) == {'loss', 'loss_clean'}
        # one backward reaches the parameters through both terms
        sum(losses.values()).backward()
        assert all(p.grad is not None for p in model.parameters())

    def test_no_clean_loss_on_cifar_recipe(self):
        model = build_model([self.DEFAULT_ARGS])
        losses = model(**model.data_preprocessor(make_batch()[0], True),
                       mode='loss')
        assert set(losses) == {'loss'}

    def test_multilabel_head_is_refused(self):
        with pytest.raises(ValueError, match='head'):
            build_model([self.DEFAULT_ARGS],
                        head=dict(
                            type='MultiLabelLinearClsHead',
                            num_classes=NUM_CLASSES,
                            in_channels=64))


# ----------------------------------------------------------- last_params
@pytest.mark.parametrize('rmix, size', [
    (dict(), 32),
    (dict(grids=(3, ), partner='flip', alpha=0.2), 30),
    (dict(clean_loss_weight=1.0, saliency_bn='eval'), 32),
    (dict(saliency_scale=0.5), 32),
    (dict(saliency_scale=0.25, grids=(2, 3)), 30),
])
def test_last_params_reproduce_the_output_bitwise(rmix, size):
    model = _model(**rmix)
    pre = model.data_preprocessor
    aug = pre.batch_augments.augments[0]
    assert isinstance(aug, RMix) and aug.last_params is None
    for seed in range(3):
        data, labels = make_batch(4, size, seed)
        x = pre(copy.deepcopy(data), False)['inputs']
        out = pre(data, True)
        p = aug.last_params
        assert isinstance(p, RMixParams)
        side = saliency_size(size, size, rmix.get('saliency_scale', 1.0))
        assert p.grid in aug.grids and p.saliency.shape == (4, *side)
        assert p.masks.dtype == torch.bool
        assert p.masks.shape == (4, p.grid, p.grid)
        assert set(p.quantiles.tolist()) <= set(
            torch.tensor(DEFAULT_QUANTILE_LEVELS).tolist())
        assert torch.equal(p.masks,
                           cell_masks(p.saliency, p.grid, p.quantiles))
        onehot = F.one_hot(labels, NUM_CLASSES).float()
        mixed, scores = mix_by_masks(x, onehot,
                                     upsample_masks(p.masks, size, size),
                                     p.index, p.lam)
        assert torch.equal(out['inputs'], mixed)
        got = torch.stack([s.gt_score for s in out['data_samples']])
        assert torch.equal(got, scores)
        if rmix.get('partner') == 'flip':
            assert p.index.tolist() == [3, 2, 1, 0]
    model.loss(out['inputs'], out['data_samples'])  # drop a pending loss


def test_the_running_saliency_pass_is_core_input_saliency(monkeypatch):
    """RMix runs :func:`mixplugins.core.rmix.input_saliency` (the tested
    kernel), once per step."""
    import mixplugins.classification.rmix as rmix_module
    calls = []
    real = rmix_module.input_saliency

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(rmix_module, 'input_saliency', counting)
    model = _model()
    model.data_preprocessor(make_batch(4, 32, 0)[0], True)
    assert len(calls) == 1


# ------------------------------------------------------------ saliency_scale
class TestSaliencyScale:
    DEFAULT_ARGS = dict(type='RMix')

    @pytest.mark.parametrize('bad', [0, -0.5, 1.5, float('nan'),
                                     float('inf'), '0.5', None, True])
    def test_init_errors_name_the_argument(self, bad):
        from mmpretrain.registry import BATCH_AUGMENTS
        with pytest.raises((ValueError, TypeError), match='saliency_scale'):
            BATCH_AUGMENTS.build({**self.DEFAULT_ARGS, 'saliency_scale': bad})

    def test_default_is_the_official_full_resolution(self):
        from mmpretrain.registry import BATCH_AUGMENTS
        assert BATCH_AUGMENTS.build(self.DEFAULT_ARGS).saliency_scale == 1.0
        aug = BATCH_AUGMENTS.build({**self.DEFAULT_ARGS,
                                    'saliency_scale': 1})
        assert aug.saliency_scale == 1.0 and type(aug.saliency_scale) is float

    def test_clean_pass_runs_on_the_resized_batch(self):
        """The record's saliency is ``input_saliency`` of the batch resized
        by the factor (16 px for 32 px images); the masks are its cells and
        mix the full-resolution images."""
        model = _model(saliency_scale=0.5)
        pre = model.data_preprocessor
        aug = pre.batch_augments.augments[0]
        data, labels = make_batch(4, 32, 0)
        x = pre(copy.deepcopy(data), False)['inputs']
        torch.manual_seed(0)
        out = pre(data, True)
        p = aug.last_params
        assert p.saliency.shape == (4, 16, 16)
        # train-mode BN: the clean pass is a function of the batch
        expected = input_saliency(lambda t: model(t, mode='tensor'), x,
                                  labels, scale_factor=0.5)
        assert torch.equal(p.saliency, expected)
        assert out['inputs'].shape == (4, 3, 32, 32)
        assert torch.equal(p.masks, cell_masks(p.saliency, p.grid,
                                               p.quantiles))

    def test_grid_larger_than_the_resized_images_is_refused_first(self):
        """32 px at 0.125 is 4 px: a grid of 8 no longer fits; refused
        before the clean pass, naming ``saliency_scale``."""
        model = _model(grids=(2, 8), saliency_scale=0.125)
        pre = model.data_preprocessor
        bn = {k: v.clone() for k, v in model.state_dict().items()
              if 'running' in k}
        with pytest.raises(ValueError,
                           match=r'`grids` \(2, 8\) must be <= '
                           r'min\(h, w\) = 4 .*saliency_scale=0.125'):
            pre(make_batch(4, 32, 0)[0], True)
        after = model.state_dict()
        assert all(torch.equal(v, after[k]) for k, v in bn.items())
        # the same grids fit at full resolution and at 0.25 (8 px)
        for scale in (1.0, 0.25):
            model = _model(grids=(2, 8), saliency_scale=scale)
            model.data_preprocessor(make_batch(4, 32, 0)[0], True)

    def test_clean_loss_needs_the_full_resolution(self):
        from mmpretrain.registry import BATCH_AUGMENTS
        with pytest.raises(ValueError,
                           match='saliency_scale.*clean_loss_weight'):
            BATCH_AUGMENTS.build({**self.DEFAULT_ARGS, 'saliency_scale': 0.5,
                                  'clean_loss_weight': 1.0})
        BATCH_AUGMENTS.build({**self.DEFAULT_ARGS, 'saliency_scale': 1.0,
                              'clean_loss_weight': 1.0})

    @pytest.mark.parametrize('scale', [1.0, 0.5])
    def test_resized_clean_pass_leaves_the_bn_running_stats(self, scale):
        """The official train-mode clean pass updates the BN running
        statistics with the clean batch; a resized one normalises with its
        batch statistics but does not update them (they must describe the
        full-resolution images)."""
        model = _model(saliency_scale=scale)
        aug = model.data_preprocessor.batch_augments.augments[0]
        data, labels = make_batch(4, 32, 0)
        x = model.data_preprocessor(data, False)['inputs']
        before = {k: v.clone() for k, v in model.state_dict().items()
                  if 'running' in k or 'num_batches' in k}
        sal, _ = aug.clean_pass(x, labels)
        after = model.state_dict()
        changed = [k for k, v in before.items()
                   if not torch.equal(v, after[k])]
        assert bool(changed) == (scale == 1.0)
        # batch statistics were used (not the running ones): the same map
        # as a train-mode pass whose updates are thrown away
        model.load_state_dict(after, strict=False)
        assert torch.equal(sal, input_saliency(
            lambda t: model(t, mode='tensor'), x, labels,
            scale_factor=scale))
        assert all(m.track_running_stats for m in model.modules()
                   if isinstance(m, torch.nn.BatchNorm2d))
