"""MixImageClassifier with RMix / RecursiveMix, through mmpretrain's own
data preprocessor and heads, on a tiny ResNet."""
import copy

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip('mmpretrain')
from mmengine.logging import MessageHub  # noqa: E402
from mmengine.optim import OptimWrapper  # noqa: E402
from mmpretrain.registry import BATCH_AUGMENTS, MODELS  # noqa: E402
from mmpretrain.structures import DataSample  # noqa: E402
from torchvision.ops import roi_align  # noqa: E402

import mixplugins  # noqa: E402,F401
from mixplugins.core.rmix import input_saliency  # noqa: E402

NUM_CLASSES = 5


def build_model(augments=None, probs=None, **kwargs):
    cfg = dict(
        type='MixImageClassifier',
        backbone=dict(
            type='ResNet', depth=18, stem_channels=8, base_channels=8),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(
            type='LinearClsHead',
            num_classes=NUM_CLASSES,
            in_channels=64,
            loss=dict(type='CrossEntropyLoss', use_soft=True)),
        data_preprocessor=dict(num_classes=NUM_CLASSES),
    )
    if augments is not None:
        cfg['train_cfg'] = dict(augments=augments, probs=probs)
    cfg.update(kwargs)
    model = MODELS.build(cfg)
    model.init_weights()
    return model


def make_batch(n=4, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    inputs = [
        torch.randint(0, 256, (3, size, size), generator=g,
                      dtype=torch.uint8) for _ in range(n)
    ]
    labels = torch.randint(0, NUM_CLASSES, (n, ), generator=g)
    samples = [DataSample().set_gt_label(int(y)) for y in labels]
    return dict(inputs=inputs, data_samples=samples), labels


def set_epoch(epoch):
    MessageHub.get_current_instance().update_info('epoch', epoch)


@pytest.fixture(autouse=True)
def _epoch0():
    set_epoch(0)
    yield


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
        cfg = dict(
            type='ImageClassifier',
            backbone=dict(
                type='ResNet', depth=18, stem_channels=8, base_channels=8),
            neck=dict(type='GlobalAveragePooling'),
            head=dict(type='LinearClsHead', num_classes=5, in_channels=64),
            data_preprocessor=dict(num_classes=5),
            train_cfg=dict(augments=[self.DEFAULT_ARGS]))
        model = MODELS.build(cfg)
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
        got = aug.saliency(x, labels)
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
        for key in ('inputs', 'targets', 'logits'):
            torch.testing.assert_close(
                getattr(fresh.rm_history, key),
                getattr(model.rm_history, key))
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


def test_drop_in_for_image_classifier():
    """Without a mixplugins augment the losses equal ImageClassifier's."""
    torch.manual_seed(0)
    mix = build_model([dict(type='CutMix', alpha=1.0)])
    cfg = dict(
        type='ImageClassifier',
        backbone=dict(type='ResNet', depth=18, stem_channels=8,
                      base_channels=8),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(
            type='LinearClsHead',
            num_classes=NUM_CLASSES,
            in_channels=64,
            loss=dict(type='CrossEntropyLoss', use_soft=True)),
        data_preprocessor=dict(num_classes=NUM_CLASSES),
        train_cfg=dict(augments=[dict(type='CutMix', alpha=1.0)]))
    plain = MODELS.build(cfg)
    plain.load_state_dict(mix.state_dict())
    data, _ = make_batch()
    losses = []
    for model in (mix, plain):
        import numpy as np
        np.random.seed(0)
        torch.manual_seed(0)
        out = model.data_preprocessor(copy.deepcopy(data), True)
        losses.append(model(**out, mode='loss')['loss'])
    torch.testing.assert_close(losses[0], losses[1])


def test_random_batch_augment_combination():
    model = build_model(
        [dict(type='RMix'), dict(type='RecursiveMix'),
         dict(type='CutMix', alpha=1.0)],
        probs=[0.4, 0.3, 0.3])
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01))
    for seed in range(4):
        losses = model.train_step(make_batch(seed=seed)[0], optim)
        assert all(torch.isfinite(v) for v in losses.values())
