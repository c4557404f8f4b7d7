"""End to end through a real mmengine ``Runner`` on the CPU.

1. Every recipe config of ``configs/classification`` (the demo_digits ones
   are tested with ``tools/demo.py``) builds -- model, dataloaders, hooks,
   parameter schedulers -- and runs 2 training and 1 validation iterations,
   shrunk (small backbone, batch 4) and with its dataset replaced by
   generated data in the real on-disk format read by the real mmpretrain
   dataset class (:mod:`mixplugins.datasets.fake_classification`).
2. A stock mmpretrain config plus the README's diff trains with each method
   (in a fresh interpreter, so that ``custom_imports`` alone registers
   mixplugins).
3. Features mmpretrain users expect: gradient accumulation, ``EMAHook``,
   multi-label heads.

mmpretrain's ``CIFAR10`` / ``CIFAR100`` compare the md5 of every file with
the real release and try to download it otherwise; the generated files
cannot match, so every test here patches
``mmpretrain.datasets.cifar.check_md5`` to accept them (the ``_no_md5``
fixture, and the script of the README test).
"""
import copy
import glob
import json
import math
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip('mmpretrain')
import mmpretrain  # noqa: E402
import mmpretrain.datasets.cifar as mmpretrain_cifar  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.hooks import Hook  # noqa: E402
from mmengine.registry import DefaultScope  # noqa: E402
from mmengine.runner import Runner  # noqa: E402
from mmpretrain.registry import MODELS  # noqa: E402
from torchvision.ops import roi_align  # noqa: E402

from mixplugins.classification import (MixImageClassifier,  # noqa: E402
                                       ModelBoundAugment, RecursiveMix, RMix)
from mixplugins.datasets.fake_classification import (  # noqa: E402
    write_cifar, write_imagenet)

pytestmark = pytest.mark.slow

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CFG_DIR = osp.join(REPO, 'configs', 'classification')
RECIPES = sorted(
    osp.splitext(osp.basename(p))[0]
    for p in glob.glob(osp.join(CFG_DIR, '*.py'))
    if not osp.basename(p).startswith('demo_digits'))
STOCK_CONFIG = osp.join(
    osp.dirname(mmpretrain.__file__), '.mim', 'configs', 'resnet',
    'resnet18_8xb16_cifar10.py')

BATCH = 4
#: Backbone type -> overrides that make it small (head ``in_channels`` is
#: then read from the built backbone).
SHRINK = {
    'PreActResNet': dict(depth=18, base_channels=8),
    'WideResNet': dict(depth=10, widen_factor=1),
    'CifarResNeXt': dict(depth=11, cardinality=2, base_width=4),
    'PyramidNet': dict(depth=11, alpha=12),
    'ResNet': dict(depth=18, stem_channels=8, base_channels=8),
    'ResNet_CIFAR': dict(depth=18, stem_channels=8, base_channels=8),
}
SWITCH_HOOKS = ('DataloaderSwitchHook', 'PiecewiseLinearLRHook')


# --------------------------------------------------------------- fixtures
@pytest.fixture(scope='module')
def data_roots(tmp_path_factory):
    """Generated data for every ``data_root`` the recipes name."""
    tmp = tmp_path_factory.mktemp('data')
    cifar10, cifar100 = str(tmp / 'cifar10'), str(tmp / 'cifar100')
    # train: exactly 2 batches of 4; test: 1 batch
    write_cifar(cifar10, 'cifar10', dict(train=2 * BATCH, test=BATCH))
    write_cifar(cifar100, 'cifar100', dict(train=2 * BATCH, test=BATCH))
    # mmpretrain's ImageNet scans 1000 class folders (1 image each) and
    # takes the first images through `indices`; the same set serves the
    # 224 px recipes and the size352 copy of the progressive recipe.
    imagenet = str(tmp / 'imagenet')
    write_imagenet(imagenet, 1000, 1, (40, 52), seed=1)
    size160 = str(tmp / 'size160')
    write_imagenet(size160, 1000, 1, (24, 30), splits=('train', ), seed=2)
    return {
        'data/cifar10': cifar10,
        'data/cifar10/': cifar10,
        'data/cifar100': cifar100,
        'data/imagenet': imagenet,
        'data/imagenet/size352': imagenet,
        'data/imagenet/size160': size160,
    }


@pytest.fixture(autouse=True)
def _no_md5(monkeypatch):
    # The generated CIFAR files cannot match the md5 sums of the real
    # release, which mmpretrain's CIFAR10/CIFAR100 check before reading.
    monkeypatch.setattr(mmpretrain_cifar, 'check_md5',
                        lambda *args, **kwargs: True)


# ---------------------------------------------------------------- helpers
def _last_channels(backbone_cfg):
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        backbone = MODELS.build(copy.deepcopy(backbone_cfg))
    backbone.eval()
    with torch.no_grad():
        outs = backbone(torch.zeros(1, 3, 32, 32))
    last = outs[-1] if isinstance(outs, (tuple, list)) else outs
    return last.shape[1]


def shrink_model(cfg):
    """Small backbone (same type), head ``in_channels`` to match."""
    backbone = cfg.model.backbone
    assert backbone.type in SHRINK, f'no shrink rule for {backbone.type}'
    backbone.update(SHRINK[backbone.type])
    cfg.model.head.in_channels = _last_channels(backbone)


def _shrink_loader(loader, data_roots, n_images):
    loader.update(batch_size=BATCH, num_workers=0, persistent_workers=False)
    dataset = loader.dataset
    assert dataset.data_root in data_roots, \
        f'no generated data for data_root={dataset.data_root!r}'
    dataset.data_root = data_roots[dataset.data_root]
    if dataset.type == 'ImageNet':
        dataset.indices = n_images
    else:
        assert dataset.type in ('CIFAR10', 'CIFAR100'), dataset.type


def shrink_runtime(cfg, work_dir, name):
    """CPU runtime: plain OptimWrapper, 1 epoch, log every iteration."""
    if cfg.optim_wrapper.get('type') == 'AmpOptimWrapper':
        cfg.optim_wrapper.type = 'OptimWrapper'  # AMP needs a GPU
        cfg.optim_wrapper.pop('loss_scale', None)
    cfg.train_cfg.update(by_epoch=True, max_epochs=1, val_interval=1)
    cfg.default_hooks.logger.interval = 1
    cfg.work_dir = str(work_dir)
    cfg.experiment_name = name
    cfg.randomness = dict(seed=0)
    cfg.env_cfg.cudnn_benchmark = False


def shrink_switch_hooks(cfg, data_roots):
    """Make the training phases one epoch of one iteration each.

    Epoch ``e`` of the recipe becomes ``e / s``, ``s`` the first switch
    epoch; the switched loaders read the generated data with batch 4.
    Returns the number of phases (= epochs).
    """
    hooks = {h.type: h for h in cfg.custom_hooks if h.type in SWITCH_HOOKS}
    switch = hooks['DataloaderSwitchHook']
    scale = switch.phases[0].epoch
    for phase in switch.phases:
        assert phase.epoch % scale == 0
        phase.epoch //= scale
        loader = phase.dataloader
        loader.update(batch_size=BATCH, num_workers=0)
        if 'dataset' in loader and 'data_root' in loader.dataset:
            loader.dataset.data_root = data_roots[loader.dataset.data_root]
    if 'PiecewiseLinearLRHook' in hooks:
        for phase in hooks['PiecewiseLinearLRHook'].phases:
            phase.epochs = tuple(e / scale for e in phase.epochs)
    num_phases = len(switch.phases) + 1
    cfg.train_cfg.update(max_epochs=num_phases, val_interval=num_phases)
    return num_phases


def load_recipe(name, data_roots, work_dir):
    """A recipe config shrunk to 2 train + 1 val iterations of batch 4."""
    cfg = Config.fromfile(osp.join(CFG_DIR, name + '.py'))
    shrink_model(cfg)
    shrink_runtime(cfg, work_dir, name)
    switching = any(
        h.type in SWITCH_HOOKS for h in cfg.get('custom_hooks', []))
    _shrink_loader(cfg.train_dataloader, data_roots,
                   BATCH if switching else 2 * BATCH)
    _shrink_loader(cfg.val_dataloader, data_roots, BATCH)
    cfg.test_dataloader = cfg.val_dataloader
    if switching:
        shrink_switch_hooks(cfg, data_roots)
    return cfg


class Probe(Hook):
    """Records what the tests check, without changing anything."""

    priority = 'LOWEST'

    def __init__(self):
        self.losses, self.lrs, self.val_metrics = [], [], {}
        self.params = []

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        self.losses.append({k: float(v.detach()) for k, v in outputs.items()})
        self.lrs.append(runner.optim_wrapper.param_groups[0]['lr'])
        self.params.append({
            n: p.detach().clone()
            for n, p in runner.model.named_parameters()
        })

    def after_val_epoch(self, runner, metrics=None):
        self.val_metrics.update(metrics or {})


class Counted:
    """Wraps a batch augment and records its calls."""

    def __init__(self, aug, calls):
        self.aug, self.calls = aug, calls

    def __call__(self, inputs, scores):
        self.calls.append(type(self.aug).__name__)
        return self.aug(inputs, scores)


def instrument(runner):
    """Record the training batches leaving the data preprocessor (inputs,
    scores, whether RecursiveMix pasted) and every batch-augment call."""
    model = runner.model
    record = dict(batches=[], calls=[])
    augment = model.data_preprocessor.batch_augments
    if augment is not None:
        augment.augments = [
            None if a is None else Counted(a, record['calls'])
            for a in augment.augments
        ]

    def hook(module, args, kwargs, output):
        training = args[1] if len(args) > 1 else kwargs.get('training')
        if not training:
            return
        samples = output['data_samples']
        step = getattr(model, '_recursive_step', None)
        record['batches'].append(
            dict(
                inputs=output['inputs'].detach().clone(),
                scores=(torch.stack([s.gt_score for s in samples]).clone()
                        if 'gt_score' in samples[0] else None),
                labels=[s.gt_label.clone() for s in samples],
                step=None if step is None else step._replace(
                    hist_logits=step.hist_logits.clone())))

    model.data_preprocessor.register_forward_hook(hook, with_kwargs=True)
    return record


def build_runner(cfg):
    runner = Runner.from_cfg(cfg)
    probe = Probe()
    runner.register_hook(probe)
    return runner, probe, instrument(runner)


def augment_types(cfg):
    train_cfg = cfg.model.get('train_cfg') or {}
    return [a['type'] for a in train_cfg.get('augments', [])]


# -------------------------------------------------- 1. every recipe config
def _check_rmix_in1k(cfg, runner, probe, record):
    # phase 1 crops 128 px from the size160 copy, phase 2 (switched in at
    # epoch 15 of the recipe, epoch 1 here) 224 px from the size352 copy
    assert [b['inputs'].shape[-1] for b in record['batches']] == [128, 224]
    assert len(runner.train_loop.dataloader) == 1
    assert 'size160' not in runner.train_loop.dataloader.dataset.data_root
    # LR before iteration i of epoch e: interp(e + (i + 1) / 1) on the
    # recipe's tables with epochs / 15.
    # iter 0: epoch 0 -> 1.0 = 15 / 15, end of (0, 8, 15) -> 0.125
    # iter 1: epoch 1 -> 2.0 in (1, 40 / 15) -> (0.2, 0.02):
    #         0.2 - 0.18 * (2 - 1) / (40 / 15 - 1) = 0.2 - 0.18 * 0.6
    assert probe.lrs == pytest.approx([0.125, 0.092])
    # the clean pass is a training term (weight 1)
    assert all('loss_clean' in losses for losses in probe.losses)


EXTRA_CHECKS = {'r50_rmix_in1k': _check_rmix_in1k}


def test_recipe_list_is_complete():
    assert len(RECIPES) >= 14
    assert 'r50_rmix_in1k' in RECIPES and 'pyramidnet200_rm_cifar10' in \
        RECIPES


@pytest.mark.parametrize('name', RECIPES)
def test_recipe_trains_and_validates(name, data_roots, tmp_path):
    cfg = load_recipe(name, data_roots, tmp_path / 'work')
    types = augment_types(cfg)
    if 'RLMix' in types:  # the optional `rl` extra
        pytest.importorskip('stable_baselines3')
    runner, probe, record = build_runner(cfg)
    model = runner.model
    assert isinstance(model, MixImageClassifier)
    # every mixplugins augment is bound to this very model
    bound = [
        a.aug for a in (model.data_preprocessor.batch_augments.augments
                        if types else []) if isinstance(
                            getattr(a, 'aug', None), ModelBoundAugment)
    ]
    assert all(a.model is model for a in bound)
    assert len(bound) == sum(
        t in ('RMix', 'RLMix', 'RecursiveMix') for t in types)

    runner.train()

    assert runner.iter == 2 and len(probe.losses) == 2
    for losses in probe.losses:
        assert losses and all(math.isfinite(v) for v in losses.values())
    assert 'accuracy/top1' in probe.val_metrics
    batches = record['batches']
    assert len(batches) == 2
    assert all(b['inputs'].shape[0] == BATCH for b in batches)
    probs = (cfg.model.get('train_cfg') or {}).get('probs')
    if not types:  # baseline: no batch augment, hard labels
        assert model.data_preprocessor.batch_augments is None
        assert all(b['scores'] is None for b in batches)
    else:
        for b in batches:  # soft targets: (B, K), rows summing to 1
            assert b['scores'].shape == (BATCH, model.head.num_classes)
            torch.testing.assert_close(b['scores'].sum(1),
                                       torch.ones(BATCH))
        if probs is None:  # one augment applied to every batch
            assert record['calls'] == [types[0]] * 2
        else:
            assert set(record['calls']) <= set(types)
    if 'RecursiveMix' in types:
        # the first batch of an epoch has no history, the second is pasted
        assert [b['step'] is not None for b in batches] == [False, True]
        assert [('loss_consistency' in losses) for losses in probe.losses] \
            == [True, True]
        assert probe.losses[0]['loss_consistency'] == 0
        assert len(model.rm_history) == BATCH
    if 'RLMix' in types:
        assert model.rl_agent is not None
    if name in EXTRA_CHECKS:
        EXTRA_CHECKS[name](cfg, runner, probe, record)


# ------------------------------------ 2. stock mmpretrain config + README
README_SCRIPT = r'''
import json, sys
import torch
torch.set_num_threads(2)
args = json.loads(sys.argv[1])
assert 'mixplugins' not in sys.modules
# generated CIFAR files: accept them despite their md5 (see the test module)
import mmpretrain.datasets.cifar as mmpretrain_cifar
mmpretrain_cifar.check_md5 = lambda *a, **k: True
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.runner import Runner
cfg = Config.fromfile(args['config'])
assert 'mixplugins' in sys.modules, 'custom_imports did not import mixplugins'
cfg.model.backbone.update(stem_channels=8, base_channels=8)
cfg.model.head.in_channels = 64
for loader in (cfg.train_dataloader, cfg.val_dataloader):
    loader.update(batch_size=4, num_workers=0, persistent_workers=False)
    loader.dataset.data_root = args['data_root']
cfg.train_cfg.update(max_epochs=1, val_interval=1)
cfg.work_dir = args['work_dir']
cfg.randomness = dict(seed=0)
runner = Runner.from_cfg(cfg)
calls, losses, val_metrics = [], [], {}
batch_augments = runner.model.data_preprocessor.batch_augments
augs = list(batch_augments.augments)
def counted(aug):
    def call(inputs, scores):
        calls.append(type(aug).__name__)
        return aug(inputs, scores)
    return call
batch_augments.augments = [counted(a) for a in augs]
class Grab(Hook):
    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        losses.append({k: float(v) for k, v in outputs.items()})
    def after_val_epoch(self, runner, metrics=None):
        val_metrics.update(metrics or {})
runner.register_hook(Grab())
runner.train()
print('RESULT ' + json.dumps(dict(
    model=type(runner.model).__module__ + '.' + type(runner.model).__name__,
    augments=[type(a).__name__ for a in augs],
    bound=[getattr(a, '_model_ref', None) is not None and
           a._model_ref() is runner.model for a in augs],
    loss_cfg=cfg.model.head.loss.to_dict(),
    calls=calls, iters=runner.iter, losses=losses,
    val=sorted(val_metrics))))
'''

README_DIFF = '''
_base_ = [{stock!r}]
# the README's "Add a method to an existing mmpretrain config" diff
custom_imports = dict(imports=['mixplugins'], allow_failed_imports=False)
model = dict(
    type='MixImageClassifier',
    head=dict(loss=dict(_delete_=True, type='CrossEntropyLoss',
                        use_soft=True)),
    train_cfg=dict(augments=[{augment}]),
)
'''


def test_readme_snippet_matches_this_test():
    with open(osp.join(REPO, 'README.md')) as f:
        readme = f.read()
    section = readme.split('## Add a method to an existing mmpretrain '
                           'config')[1].split('\n## ')[0]
    for line in ("+custom_imports = dict(imports=['mixplugins'], "
                 'allow_failed_imports=False)',
                 "+    type='MixImageClassifier',",
                 "+        loss=dict(type='CrossEntropyLoss', "
                 'use_soft=True)),',
                 "+    train_cfg=dict(augments=[dict(type='RecursiveMix', "
                 'alpha=0.5, omega=0.5)]),',
                 "R-Mix is `dict(type='RMix', alpha=1.0, grids=(2, 4))`"):
        assert line in section, line


@pytest.mark.parametrize('augment, keys', [
    ("dict(type='RecursiveMix', alpha=0.5, omega=0.5)",
     {'loss', 'loss_consistency'}),
    ("dict(type='RMix', alpha=1.0, grids=(2, 4))", {'loss'}),
])
def test_stock_config_plus_readme_diff_trains(augment, keys, tmp_path):
    assert osp.isfile(STOCK_CONFIG)
    data_root = str(tmp_path / 'cifar10')
    write_cifar(data_root, 'cifar10', dict(train=2 * BATCH, test=BATCH))
    config = tmp_path / 'resnet18_mix_cifar10.py'
    config.write_text(README_DIFF.format(stock=STOCK_CONFIG,
                                         augment=augment))
    args = dict(config=str(config), data_root=data_root,
                work_dir=str(tmp_path / 'work'))
    env = dict(os.environ, OMP_NUM_THREADS='2', MKL_NUM_THREADS='2')
    proc = subprocess.run(
        [sys.executable, '-c', README_SCRIPT, json.dumps(args)],
        cwd=str(tmp_path), capture_output=True, text=True, timeout=600,
        env=env)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    line = [x for x in proc.stdout.splitlines() if x.startswith('RESULT ')]
    res = json.loads(line[-1][len('RESULT '):])
    assert res['model'] == \
        'mixplugins.classification.classifier.MixImageClassifier'
    assert res['augments'] == [augment.split("'")[1]]
    assert res['bound'] == [True]
    assert res['loss_cfg'] == dict(type='CrossEntropyLoss', use_soft=True)
    assert res['iters'] == 2 and res['calls'] == res['augments'] * 2
    assert [set(x) for x in res['losses']] == [keys, keys]
    assert all(math.isfinite(v) for x in res['losses'] for v in x.values())
    assert 'accuracy/top1' in res['val']


# ------------------------------------ 3. what mmpretrain users expect too
#: method -> (recipe, augment type)
METHODS = {
    'RMix': ('wrn16-8_rmix_cifar100', RMix),
    'RecursiveMix': ('pyramidnet200_rm_cifar10', RecursiveMix),
}


def _soft_ce(logits, targets):
    return -(targets * F.log_softmax(logits, -1)).sum(-1).mean()


def _expected_loss(model, batch):
    """The training loss of one recorded (mixed) batch, from scratch."""
    x, targets, step = batch['inputs'], batch['scores'], batch['step']
    maps = model.backbone(x)
    logits = model.head.fc(model.neck(maps)[-1])
    loss = _soft_ce(logits, targets)
    if step is not None:  # RecursiveMix consistency on the paste box
        last = maps[-1]
        x1, y1, x2, y2 = step.box
        rois = torch.tensor([[i, x1, y1, x2, y2] for i in range(len(x))],
                            dtype=torch.float32)
        pooled = roi_align(last, rois, 1,
                           spatial_scale=last.shape[-1] / x.shape[-1],
                           sampling_ratio=-1, aligned=True).flatten(1)
        loss = loss + step.omega * (1 - step.lam) * _soft_ce(
            model.fc_roi(pooled), step.hist_logits.softmax(-1))
    return loss, logits


@pytest.mark.parametrize('method', sorted(METHODS))
def test_gradient_accumulation(method, data_roots, tmp_path):
    """``accumulative_counts=2``: the two micro-steps' gradients add up
    (each scaled by 1/2) before the one optimizer step; R-Mix's saliency
    pass of the second micro-step leaves the first one's gradients alone."""
    recipe, aug_type = METHODS[method]
    cfg = load_recipe(recipe, data_roots, tmp_path / 'work')
    cfg.optim_wrapper.accumulative_counts = 2
    runner, probe, record = build_runner(cfg)
    model = runner.model
    assert isinstance(model.data_preprocessor.batch_augments.augments[0].aug,
                      aug_type)
    snapshots = {}

    class Grads(Hook):
        priority = 'LOWEST'

        def before_train(self, runner):  # the optimizer exists now
            snapshots['init'] = copy.deepcopy(model.state_dict())
            runner.optim_wrapper.optimizer.register_step_pre_hook(
                before_step)

        def after_train_iter(self, runner, batch_idx, data_batch=None,
                             outputs=None):
            if batch_idx == 0:
                snapshots['micro1'] = {
                    n: p.grad.clone()
                    for n, p in model.named_parameters()
                }

    steps = []

    def before_step(optimizer, args, kwargs):
        steps.append({n: p.grad.clone() for n, p in model.named_parameters()})

    runner.register_hook(Grads())
    runner.train()
    assert runner.iter == 2 and len(steps) == 1  # one optimizer step

    # the same losses from scratch, at the initial weights (no step was
    # taken before the accumulated one; train-mode BN uses batch stats)
    ref = copy.deepcopy(model)
    ref.load_state_dict(snapshots['init'])
    ref.train()
    b1, b2 = record['batches']
    assert b1['step'] is None
    loss1, logits1 = _expected_loss(ref, b1)
    if method == 'RecursiveMix':
        # the pasted history holds batch 1's logits at these weights
        assert b2['step'] is not None
        torch.testing.assert_close(b2['step'].hist_logits,
                                   logits1.detach(), rtol=1e-4, atol=1e-5)
    loss2, _ = _expected_loss(ref, b2)
    names = [n for n, _ in ref.named_parameters()]
    params = [p for _, p in ref.named_parameters()]
    g1 = torch.autograd.grad(loss1 / 2, params, allow_unused=True)
    g2 = torch.autograd.grad(loss2 / 2, params, allow_unused=True)
    for name, p, a, b in zip(names, params, g1, g2):
        a = torch.zeros_like(p) if a is None else a
        b = torch.zeros_like(p) if b is None else b
        torch.testing.assert_close(
            snapshots['micro1'][name], a, rtol=1e-4, atol=1e-6, msg=name)
        torch.testing.assert_close(
            steps[0][name], a + b, rtol=1e-4, atol=1e-6, msg=name)
    assert probe.losses[0]['loss'] == pytest.approx(
        float(_soft_ce(logits1, b1['scores']).detach()), rel=1e-4)


@pytest.mark.parametrize('method', sorted(METHODS))
def test_ema_hook(method, data_roots, tmp_path):
    """mmengine's ``EMAHook``: the averaged weights are
    ``(1 - m) * w_1 + m * w_2`` after two steps (the first update copies),
    validation runs with them and training resumes with the raw ones."""
    recipe, _ = METHODS[method]
    cfg = load_recipe(recipe, data_roots, tmp_path / 'work')
    momentum = 0.25
    cfg.custom_hooks = list(cfg.get('custom_hooks', [])) + [
        dict(type='EMAHook', momentum=momentum, priority='ABOVE_NORMAL')
    ]
    runner, probe, record = build_runner(cfg)
    model = runner.model
    at_val = {}

    class AtVal(Hook):
        priority = 'LOWEST'

        def before_val_epoch(self, runner):
            at_val.update({
                n: p.detach().clone()
                for n, p in model.named_parameters()
            })

    runner.register_hook(AtVal())
    runner.train()
    assert runner.iter == 2 and 'accuracy/top1' in probe.val_metrics
    w1, w2 = probe.params
    assert set(at_val) == set(w1)
    changed = 0
    for name, value in at_val.items():
        expected = (1 - momentum) * w1[name] + momentum * w2[name]
        torch.testing.assert_close(value, expected, msg=name)
        changed += not torch.equal(w1[name], w2[name])
    assert changed > 0
    for name, p in model.named_parameters():  # swapped back after val
        torch.testing.assert_close(p.detach(), w2[name], msg=name)


def _multilabel_data(root, n_classes):
    """Images and an OpenMMLab-format annotation file per split, each image
    with two labels."""
    info = write_imagenet(root, n_classes, 1, 32, splits=('images', ))
    files = {}
    for split, n in (('train', 2 * BATCH), ('val', BATCH)):
        data_list = [
            dict(img_path=f'images/{c}/{c}_0.JPEG',
                 gt_label=[k, (k + 3) % n_classes])
            for k, c in enumerate(info['classes'][:n])
        ]
        files[split] = osp.join(root, f'{split}.json')
        with open(files[split], 'w') as f:
            json.dump(
                dict(metainfo=dict(classes=info['classes']),
                     data_list=data_list), f)
    return files


def _multilabel_cfg(recipe, data_roots, tmp_path, n_classes=10):
    cfg = load_recipe(recipe, data_roots, tmp_path / 'work')
    files = _multilabel_data(str(tmp_path / 'ml'), n_classes)
    cfg.model.head = dict(
        type='MultiLabelLinearClsHead',
        num_classes=n_classes,
        in_channels=cfg.model.head.in_channels)
    cfg.model.data_preprocessor = dict(cfg.data_preprocessor,
                                       num_classes=n_classes)
    for split, loader in (('train', cfg.train_dataloader),
                          ('val', cfg.val_dataloader)):
        pipeline = [dict(type='LoadImageFromFile')] + list(
            loader.dataset.pipeline)
        loader.dataset = dict(
            type='MultiLabelDataset',
            data_root=str(tmp_path / 'ml'),
            ann_file=files[split],
            pipeline=pipeline)
    cfg.val_evaluator = dict(type='AveragePrecision')
    cfg.default_hooks.checkpoint.save_best = 'multi-label/mAP'
    return cfg


def test_recursivemix_with_multilabel_head(data_roots, tmp_path):
    """RecursiveMix mixes multi-hot targets (lam y + (1 - lam) y_hist) and
    trains a sigmoid multi-label head."""
    cfg = _multilabel_cfg('pyramidnet200_rm_cifar10', data_roots, tmp_path)
    runner, probe, record = build_runner(cfg)
    runner.train()
    assert runner.iter == 2
    assert 'multi-label/mAP' in probe.val_metrics
    for losses in probe.losses:
        assert set(losses) == {'loss', 'loss_consistency'}
        assert all(math.isfinite(v) for v in losses.values())
    b1, b2 = record['batches']
    # batch 1: unmixed multi-hot targets (two labels per image)
    hot = torch.stack([
        F.one_hot(y, 10).sum(0).float() for y in b1['labels']
    ])
    torch.testing.assert_close(b1['scores'], hot)
    # batch 2: lam * own + (1 - lam) * batch 1's targets
    lam = b2['step'].lam
    own = torch.stack([
        F.one_hot(y, 10).sum(0).float() for y in b2['labels']
    ])
    torch.testing.assert_close(b2['scores'], lam * own + (1 - lam) * hot)


def test_rmix_with_multilabel_head_is_refused_at_build(data_roots, tmp_path):
    cfg = _multilabel_cfg('wrn16-8_rmix_cifar100', data_roots, tmp_path)
    with pytest.raises(ValueError, match='head'):
        Runner.from_cfg(cfg)


def test_fake_cifar_matches_the_dataset_reading(tmp_path):
    """The generated pickles read back through mmpretrain's CIFAR classes
    give the written labels and images."""
    from mmpretrain.datasets import CIFAR10, CIFAR100
    for variant, cls, n in (('cifar10', CIFAR10, 7), ('cifar100', CIFAR100,
                                                      5)):
        root = str(tmp_path / variant)
        info = write_cifar(root, variant, dict(train=n, test=3), seed=4)
        for split in ('train', 'test'):
            ds = cls(data_root=root, split=split)
            assert [ds.get_data_info(i)['gt_label'] for i in range(len(ds))
                    ] == info['labels'][split]
            img = ds.get_data_info(0)['img']
            assert img.shape == (32, 32, 3) and img.dtype == np.uint8
