"""The classification configs carry the official recipes value by value.

Expected values come from the reference code (minhlong94/Random-Mixup,
implus/RecursiveMix-pytorch; see reference/*_spec.md of the project notes),
written out here by hand. Schedules are checked by building the configs'
schedulers/hooks and comparing them with the reference formulas.
"""
import ast
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from mmcv.transforms import Compose
from mmengine.config import Config
from mmengine.optim import OptimWrapper
from mmengine.registry import HOOKS, PARAM_SCHEDULERS, DefaultScope

import mixplugins.engine.hooks  # noqa: F401  (registers)
import mixplugins.engine.schedulers  # noqa: F401
import mixplugins.classification.transforms  # noqa: F401

CFG_DIR = Path(__file__).resolve().parents[2] / 'configs' / 'classification'

RMIX_AUG = dict(
    type='RMix',
    alpha=1.0,
    grids=(2, 4),
    partner='randperm',
    clean_loss_weight=0.0)
CUTMIX_PLUS = dict(augments=[dict(type='CutMix', alpha=1.0)], probs=[0.5])
CIFAR100 = {
    # name: (number, backbone, head in_channels, train_cfg)
    'preactresnet18_rmix_cifar100':
    (81.45, dict(type='PreActResNet',
                 depth=18), 512, dict(augments=[RMIX_AUG])),
    'wrn16-8_rmix_cifar100':
    (82.32, dict(type='WideResNet', depth=16,
                 widen_factor=8), 512, dict(augments=[RMIX_AUG])),
    'wrn28-10_rmix_cifar100':
    (84.95, dict(type='WideResNet', depth=28,
                 widen_factor=10), 640, dict(augments=[RMIX_AUG])),
    'resnext29-4x24_rmix_cifar100':
    (83.02, dict(type='CifarResNeXt', depth=29, cardinality=4,
                 base_width=24), 1024, dict(augments=[RMIX_AUG])),
    'preactresnet18_cutmix_cifar100': (81.62,
                                       dict(type='PreActResNet',
                                            depth=18), 512, CUTMIX_PLUS),
    'wrn28-10_cutmix_cifar100':
    (83.53, dict(type='WideResNet', depth=28,
                 widen_factor=10), 640, CUTMIX_PLUS),
}
IMAGENET_RM = {
    'r50_in1k': (76.32, None),
    'r50_mixup_in1k': (77.42, dict(augments=[dict(type='Mixup', alpha=0.2)])),
    'r50_cutmix_in1k':
    (78.60, dict(augments=[dict(type='CutMix', alpha=1.0)])),
    'r50_rm_in1k': (79.20,
                    dict(augments=[
                        dict(
                            type='RecursiveMix',
                            alpha=0.5,
                            omega=0.5,
                            interpolation='nearest')
                    ])),
}
OTHERS = {
    'pyramidnet200_rm_cifar10': (97.65, '2 x 32', 64),
    'r50_rmix_in1k': (77.39, '4 x 256', 1024),
    # recipe checked against the R-Mix rows in test_rlmix.py
    'preactresnet18_rlmix_cifar100': (80.75, '1 x 100', 100),
    'wrn28-10_rlmix_cifar100': (84.90, '1 x 100', 100),
}
ALL = {
    **{
        k: (v[0], '1 x 100', 100)
        for k, v in CIFAR100.items()
    },
    **{
        k: (v[0], '8 x 64', 512)
        for k, v in IMAGENET_RM.items()
    },
    **OTHERS,
}

IMAGENET_MEAN = [123.675, 116.28, 103.53]
IMAGENET_STD = [58.395, 57.12, 57.375]
PCA_EIGVEC = ((-0.5675, 0.7192, 0.4009), (-0.5808, -0.0045, -0.8140),
              (-0.5836, -0.6948, 0.4203))


def load(name):
    return Config.fromfile(
        str(CFG_DIR / f'{name}.py'), import_custom_modules=False)


def _wrapper(cfg):
    opt = dict(cfg.optim_wrapper.optimizer)
    opt.pop('type')
    params = [torch.nn.Parameter(torch.zeros(2))]
    return OptimWrapper(torch.optim.SGD(params, **opt))


def _build_schedulers(cfg, wrapper, epoch_length=None):
    out = []
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        for sched in cfg.param_scheduler:
            default_args = dict(optimizer=wrapper)
            if epoch_length is not None:
                default_args['epoch_length'] = epoch_length
            out.append(
                PARAM_SCHEDULERS.build(dict(sched), default_args=default_args))
    return out


def _by_epoch_lrs(cfg, epochs):
    wrapper = _wrapper(cfg)
    schedulers = _build_schedulers(cfg, wrapper)
    lrs = []
    for _ in range(epochs):
        lrs.append(wrapper.param_groups[0]['lr'])
        wrapper.step()
        for s in schedulers:
            s.step()
    return lrs


def _pipelines(cfg):
    yield cfg.train_dataloader.dataset.pipeline
    yield cfg.val_dataloader.dataset.pipeline
    yield cfg.test_dataloader.dataset.pipeline
    for hook in cfg.get('custom_hooks', []):
        for phase in hook.get('phases', []):
            pipeline = phase.get('dataloader', {}).get('dataset',
                                                       {}).get('pipeline')
            if pipeline is not None:
                yield pipeline


def _by_type(pipeline, type_name):
    found = [t for t in pipeline if t['type'] == type_name]
    assert len(found) == 1, (type_name, pipeline)
    return found[0]


# ------------------------------------------------------------ all configs


@pytest.mark.parametrize('name', sorted(ALL))
def test_common_fields_and_header(name):
    number, gpus, total = ALL[name]
    cfg = load(name)
    assert cfg.default_scope == 'mmpretrain'
    assert cfg.custom_imports == dict(
        imports=['mixplugins'], allow_failed_imports=False)
    assert cfg.auto_scale_lr == dict(enable=False, base_batch_size=total)
    text = (CFG_DIR / f'{name}.py').read_text()
    header = text.split('_base_ =')[0]
    assert f'Reproduces: {number:.2f}' in header
    assert f'GPUs x per-GPU batch: {gpus}' in header
    assert re.search(rf'Run: .*configs/classification/{re.escape(name)}\.py',
                     header)
    # relative _base_ files of this folder only
    bases = ast.literal_eval(text.split('_base_ =')[1].split(']')[0] + ']')
    assert bases and all(b.startswith('_base_/') for b in bases)
    assert all((CFG_DIR / b).is_file() for b in bases)
    world = int(gpus.split(' x ')[0])
    per_gpu = int(gpus.split(' x ')[1])
    assert cfg.train_dataloader.batch_size == per_gpu
    assert world * per_gpu == total
    assert cfg.val_evaluator == dict(type='Accuracy', topk=(1, 5))


@pytest.mark.parametrize('name', sorted(ALL))
def test_pipelines_build_in_mmpretrain(name):
    cfg = load(name)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        for pipeline in _pipelines(cfg):
            Compose([dict(t) for t in pipeline])


@pytest.mark.parametrize('name', sorted(ALL))
def test_metafile_and_readme_list_every_config(name):
    meta = yaml.safe_load((CFG_DIR / 'metafile.yml').read_text())
    models = {m['Name']: m for m in meta['Models']}
    model = models[name]
    assert model['Config'] == f'configs/classification/{name}.py'
    result = model['Results'][0]
    assert result['Task'] == 'Image Classification'
    assert result['Metrics']['Top 1 Accuracy'] == pytest.approx(ALL[name][0])
    assert model['Paper']['URL'].startswith('https://arxiv.org/abs/')
    assert model['Code'].startswith('https://github.com/')
    readme = (CFG_DIR / 'README.md').read_text()
    row = next(line for line in readme.splitlines() if f'`{name}.py`' in line)
    assert f'{ALL[name][0]:.2f}' in row


def test_metafile_has_no_extra_models():
    meta = yaml.safe_load((CFG_DIR / 'metafile.yml').read_text())
    assert {m['Name'] for m in meta['Models']} == set(ALL)


# ---------------------------------------------------- R-Mix, CIFAR-100


@pytest.mark.parametrize('name', sorted(CIFAR100))
def test_rmix_cifar100_recipe(name):
    _, backbone, in_channels, train_cfg = CIFAR100[name]
    cfg = load(name)
    model = cfg.model
    assert model.type == 'MixImageClassifier'
    assert model.backbone == backbone
    assert model.neck == dict(type='GlobalAveragePooling')
    assert model.head.type == 'LinearClsHead'
    assert model.head.num_classes == 100
    assert model.head.in_channels == in_channels
    assert model.head.loss == dict(
        type='CrossEntropyLoss', use_soft=True, loss_weight=1.0)
    assert model.head.cal_acc is False
    assert model.train_cfg == train_cfg
    # data
    assert cfg.train_cfg == dict(by_epoch=True, max_epochs=300, val_interval=1)
    loader = cfg.train_dataloader
    assert loader.batch_size == 100 and loader.drop_last is True
    assert loader.sampler == dict(type='DefaultSampler', shuffle=True)
    assert loader.dataset.type == 'CIFAR100'
    assert loader.dataset.data_root == 'data/cifar100'
    assert loader.dataset.split == 'train'
    assert cfg.val_dataloader.dataset.split == 'test'
    crop = _by_type(loader.dataset.pipeline, 'RandomCrop')
    assert (crop.crop_size, crop.padding, crop.pad_val) == (32, 2, 0)
    assert crop.get('padding_mode', 'constant') == 'constant'
    flip = _by_type(loader.dataset.pipeline, 'RandomFlip')
    assert (flip.prob, flip.direction) == (0.5, 'horizontal')
    assert [t['type']
            for t in cfg.val_dataloader.dataset.pipeline] == ['PackInputs']
    pre = cfg.data_preprocessor
    assert pre.mean == [129.3, 124.1, 112.4]
    assert pre.std == [68.2, 65.4, 70.4]
    assert pre.to_rgb is False and pre.num_classes == 100
    # optimizer
    assert cfg.optim_wrapper.type == 'OptimWrapper'
    opt = cfg.optim_wrapper.optimizer
    assert (opt.type, opt.momentum, opt.nesterov,
            opt.weight_decay) == ('SGD', 0.9, True, 1e-4)
    assert 'paramwise_cfg' not in cfg.optim_wrapper  # wd on all params


def test_rmix_cifar100_schedule_equals_torch_onecycle():
    """The configured schedulers, converted per iteration, equal torch's
    OneCycleLR(max_lr=0.29947526988779305, div_factor=100, pct_start=0.3,
    final_div_factor=1e4, epochs=300, steps_per_epoch=L) with its default
    cycle_momentum=True (base 0.85, max 0.95), step by step."""
    cfg = load('preactresnet18_rmix_cifar100')
    types = [s['type'] for s in cfg.param_scheduler]
    assert types == ['SafeOneCycleLR', 'OneCycleMomentum']
    assert cfg.param_scheduler[0]['eta_max'] == 0.29947526988779305
    epoch_length = 3  # 500 in the real run; shorter keeps the test fast
    wrapper = _wrapper(cfg)
    schedulers = _build_schedulers(cfg, wrapper, epoch_length)
    ref_params = [torch.nn.Parameter(torch.zeros(2))]
    ref_opt = torch.optim.SGD(
        ref_params, lr=0.2, momentum=0.9, nesterov=True, weight_decay=1e-4)
    ref = torch.optim.lr_scheduler.OneCycleLR(
        ref_opt,
        max_lr=0.29947526988779305,
        div_factor=100,
        pct_start=0.3,
        final_div_factor=1e4,
        epochs=300,
        steps_per_epoch=epoch_length)
    for step in range(300 * epoch_length):
        got, exp = wrapper.param_groups[0], ref_opt.param_groups[0]
        assert math.isclose(got['lr'], exp['lr'], rel_tol=1e-12), step
        assert math.isclose(
            got['momentum'], exp['momentum'], rel_tol=1e-12), step
        wrapper.step()
        ref_opt.step()
        for s in schedulers:
            s.step()
        ref.step()


# ------------------------------------------------ RecursiveMix, CIFAR-10


def _rm_reference_lr(epoch_1based,
                     base,
                     warmup,
                     scheduler,
                     milestones=(),
                     total=300):
    """utils.adjust_learning_rate of RecursiveMix."""
    if epoch_1based <= warmup:
        return base * epoch_1based / (warmup + 1)
    if scheduler == 'step':
        return base * 0.1**sum(epoch_1based > m for m in milestones)
    return base * 0.5 * (1 + np.cos((epoch_1based - 1) * np.pi / total))


def test_rm_cifar10_recipe():
    cfg = load('pyramidnet200_rm_cifar10')
    assert cfg.model.type == 'MixImageClassifier'
    assert cfg.model.backbone == dict(type='PyramidNet', depth=200, alpha=240)
    assert cfg.model.head.num_classes == 10
    assert cfg.model.head.in_channels == 1024
    assert cfg.model.head.loss.use_soft is True
    assert cfg.model.head.cal_acc is False
    assert cfg.model.train_cfg == dict(augments=[
        dict(
            type='RecursiveMix', alpha=0.5, omega=0.1, interpolation='nearest')
    ])
    assert 'find_unused_parameters' not in cfg  # fc_roi is in every forward
    assert cfg.randomness.seed == 27
    assert cfg.train_cfg.max_epochs == 300
    loader = cfg.train_dataloader
    assert loader.batch_size == 32 and loader.drop_last is False
    assert loader.dataset.type == 'CIFAR10'
    assert loader.dataset.data_root == 'data/cifar10'
    crop = _by_type(loader.dataset.pipeline, 'RandomCrop')
    assert (crop.crop_size, crop.padding) == (32, 4)
    assert _by_type(loader.dataset.pipeline, 'RandomFlip').prob == 0.5
    pre = cfg.data_preprocessor
    np.testing.assert_allclose(
        pre.mean, np.array([0.4914, 0.4822, 0.4465]) * 255, rtol=1e-12)
    np.testing.assert_allclose(
        pre.std, np.array([0.2023, 0.1994, 0.2010]) * 255, rtol=1e-12)
    assert pre.to_rgb is False
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    opt = cfg.optim_wrapper.optimizer
    assert (opt.type, opt.lr, opt.momentum, opt.nesterov,
            opt.weight_decay) == ('SGD', 0.25, 0.9, True, 1e-4)
    assert all(s['by_epoch'] for s in cfg.param_scheduler)


def test_rm_cifar10_lr_per_epoch_equals_reference():
    cfg = load('pyramidnet200_rm_cifar10')
    lrs = _by_epoch_lrs(cfg, 300)
    for k, lr in enumerate(lrs):
        expected = _rm_reference_lr(k + 1, 0.25, 5, 'step', (150, 225))
        assert math.isclose(lr, expected, rel_tol=1e-12), (k, lr, expected)
    assert lrs[0] == pytest.approx(0.25 / 6)  # 0.041667 in the logs


# ------------------------------------------------ RecursiveMix, ImageNet


@pytest.mark.parametrize('name', sorted(IMAGENET_RM))
def test_rm_imagenet_recipe(name):
    _, train_cfg = IMAGENET_RM[name]
    cfg = load(name)
    model = cfg.model
    assert model.backbone.type == 'ResNet' and model.backbone.depth == 50
    assert model.backbone.zero_init_residual is False
    assert model.head.num_classes == 1000 and model.head.in_channels == 2048
    assert model.head.init_cfg is None  # PyTorch-default fc init
    if train_cfg is None:  # baseline: hard-label CE
        assert 'train_cfg' not in model
        assert model.head.loss.use_soft is False
    else:
        assert model.train_cfg == train_cfg
        assert model.head.loss.use_soft is True
        assert model.head.cal_acc is False
    assert cfg.randomness.seed == 27
    assert cfg.train_cfg.max_epochs == 300
    # optimizer: SGD 0.2, momentum 0.9, no Nesterov, wd 1e-4 on all, AMP
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert cfg.optim_wrapper.loss_scale == 'dynamic'
    assert 'paramwise_cfg' not in cfg.optim_wrapper
    opt = cfg.optim_wrapper.optimizer
    assert (opt.type, opt.lr, opt.momentum, opt.nesterov,
            opt.weight_decay) == ('SGD', 0.2, 0.9, False, 1e-4)
    # data: aug_plus pipeline in the reference order
    loader = cfg.train_dataloader
    assert loader.batch_size == 64 and loader.drop_last is False
    assert loader.dataset.type == 'ImageNet'
    assert loader.dataset.data_root == 'data/imagenet'
    pipeline = loader.dataset.pipeline
    assert [t['type'] for t in pipeline] == [
        'LoadImageFromFile', 'RandomResizedCrop', 'RandomFlip',
        'LerpColorJitter', 'PCALighting', 'PackInputs'
    ]
    rrc = pipeline[1]
    assert (rrc.scale, tuple(rrc.crop_ratio_range)) == (224, (0.08, 1.0))
    assert rrc.backend == 'pillow' and rrc.interpolation == 'bilinear'
    jitter, lighting = pipeline[3], pipeline[4]
    assert (jitter.brightness, jitter.contrast,
            jitter.saturation) == (0.4, 0.4, 0.4)
    assert jitter.channel_order == lighting.channel_order == 'bgr'
    assert lighting.alphastd == 0.1 and lighting.value_scale == 255.0
    assert tuple(lighting.eigval) == (0.2175, 0.0188, 0.0045)
    assert tuple(map(tuple, lighting.eigvec)) == PCA_EIGVEC
    val = cfg.val_dataloader.dataset.pipeline
    assert [t['type'] for t in val] == [
        'LoadImageFromFile', 'ResizeEdge', 'CenterCrop', 'PackInputs'
    ]
    assert (val[1].scale, val[1].edge) == (256, 'short')
    assert val[2].crop_size == 224
    assert cfg.data_preprocessor.mean == IMAGENET_MEAN
    assert cfg.data_preprocessor.std == IMAGENET_STD
    assert cfg.data_preprocessor.to_rgb is True


def test_rm_imagenet_lr_per_epoch_against_reference():
    cfg = load('r50_rm_in1k')
    lrs = _by_epoch_lrs(cfg, 300)
    for k, lr in enumerate(lrs):
        expected = _rm_reference_lr(k + 1, 0.2, 5, 'cos')
        if k >= 5:  # exact after the warmup
            assert math.isclose(lr, expected, rel_tol=1e-9), (k, lr)
        else:  # documented residual: the cosine factor in the warmup
            ratio = lr / expected
            assert 0.99956 <= ratio <= 1.0, (k, ratio)
            assert ratio == pytest.approx(
                0.5 * (1 + math.cos(math.pi * k / 300)), rel=1e-9)
    assert lrs[5] == pytest.approx(0.199863, abs=5e-7)  # the log's epoch 6


# -------------------------------------------------- R-Mix, ImageNet


def _rmix_reference_lr(t):
    """lr_schedule of main_fast_ddp.py with the three phase ymls."""
    if t <= 15:  # phase 1 runs epochs 0-14, t in (0, 15]
        return np.interp([t], (0, 8, 15), (0.5, 1.0, 0.125))[0]
    if t <= 40:
        return np.interp([t], (15, 40), (0.2, 0.02))[0]
    return np.interp([t], (40, 65, 90, 100), (0.02, 0.002, 0.0002, 0.00002))[0]


def test_rmix_imagenet_recipe():
    cfg = load('r50_rmix_in1k')
    model = cfg.model
    assert model.type == 'MixImageClassifier'
    assert model.backbone.type == 'ResNet' and model.backbone.depth == 50
    assert model.backbone.zero_init_residual is False
    assert model.head.init_cfg == dict(type='Normal', layer='Linear', std=0.01)
    assert model.head.loss.use_soft is True
    assert model.train_cfg == dict(augments=[
        dict(
            type='RMix',
            alpha=0.2,
            grids=(2, 4),
            partner='flip',
            clean_loss_weight=1.0)
    ])
    assert cfg.train_cfg.max_epochs == 100
    assert 'param_scheduler' not in cfg
    wrapper = cfg.optim_wrapper
    assert wrapper.type == 'AmpOptimWrapper' and wrapper.loss_scale == 1024.
    assert wrapper.paramwise_cfg == dict(norm_decay_mult=0.0)
    opt = wrapper.optimizer
    assert (opt.type, opt.momentum, opt.nesterov,
            opt.weight_decay) == ('SGD', 0.9, True, 1e-4)
    # phase 1 data
    loader = cfg.train_dataloader
    assert loader.batch_size == 256 and loader.drop_last is False
    assert loader.dataset.data_root == 'data/imagenet/size160'
    assert [t['type'] for t in loader.dataset.pipeline] == [
        'LoadImageFromFile', 'RandomResizedCrop', 'RandomFlip', 'PackInputs'
    ]
    rrc = loader.dataset.pipeline[1]
    assert (rrc.scale, tuple(rrc.crop_ratio_range)) == (128, (0.08, 1.0))
    assert cfg.val_dataloader.dataset.data_root == 'data/imagenet/size352'
    val = cfg.val_dataloader.dataset.pipeline
    assert (val[1].scale, val[2].crop_size) == (256, 224)
    # phases 2-3 data, switched at epoch 15
    hooks = {h['type']: h for h in cfg.custom_hooks}
    (phase, ) = hooks['DataloaderSwitchHook'].phases
    assert phase.epoch == 15
    assert phase.dataloader.batch_size == 112
    assert phase.dataloader.dataset.data_root == 'data/imagenet/size352'
    pipeline = phase.dataloader.dataset.pipeline
    assert [t['type'] for t in pipeline] == [
        'LoadImageFromFile', 'RandomResizedCrop', 'RandomFlip', 'PackInputs'
    ]
    assert (pipeline[1].scale,
            tuple(pipeline[1].crop_ratio_range)) == (224, (0.087, 1.0))
    assert cfg.data_preprocessor.mean == IMAGENET_MEAN
    assert cfg.data_preprocessor.std == IMAGENET_STD


def test_rmix_imagenet_lr_per_iteration_equals_reference():
    cfg = load('r50_rmix_in1k')
    hook_cfg = next(h for h in cfg.custom_hooks
                    if h['type'] == 'PiecewiseLinearLRHook')
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        hook = HOOKS.build(dict(hook_cfg))
    # iterations per epoch and process: ceil(ceil(1281167 / 4) / batch)
    per_rank = math.ceil(1281167 / 4)
    for epoch in range(100):
        num_iters = math.ceil(per_rank / (256 if epoch < 15 else 112))
        for i in list(range(0, num_iters, 97)) + [num_iters - 1]:
            t = epoch + (i + 1) / num_iters
            got = hook.lr_at(epoch, (i + 1) / num_iters)
            assert math.isclose(
                got, _rmix_reference_lr(t), rel_tol=1e-12,
                abs_tol=1e-15), (epoch, i)
    assert hook.lr_at(14, 1.0) == pytest.approx(0.125)
    assert hook.lr_at(15, 1 / 2860) == pytest.approx(0.2, rel=1e-4)


# ----------------------------------------- pipelines on real image files


def _fake_imagenet(root, size=(40, 30)):
    from PIL import Image
    rng = np.random.default_rng(0)
    for split in ('train', 'val'):
        for wnid in ('n01440764', 'n01443537'):
            folder = root / split / wnid
            folder.mkdir(parents=True)
            for i in range(2):
                pixels = rng.integers(0, 256, (*size[::-1], 3), np.uint8)
                Image.fromarray(pixels).save(folder / f'{wnid}_{i}.JPEG')
    return str(root)


def _first_sample(dataset_cfg, data_root):
    from mmpretrain.registry import DATASETS
    cfg = dict(dataset_cfg)
    cfg['data_root'] = data_root
    cfg['metainfo'] = dict(classes=('n01440764', 'n01443537'))  # 2 of 1000
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        dataset = DATASETS.build(cfg)
    assert len(dataset) == 4
    return dataset[0]['inputs']


def test_augplus_pipeline_on_image_files(tmp_path):
    root = _fake_imagenet(tmp_path)
    cfg = load('r50_rm_in1k')
    train = _first_sample(cfg.train_dataloader.dataset, root)
    assert train.dtype == torch.float32  # aug_plus output is not clipped
    assert train.shape == (3, 224, 224)
    val = _first_sample(cfg.val_dataloader.dataset, root)
    assert val.dtype == torch.uint8 and val.shape == (3, 224, 224)


def test_rmix_phase_dataloaders_on_image_files(tmp_path):
    root = _fake_imagenet(tmp_path)
    cfg = load('r50_rmix_in1k')
    switch_cfg = next(h for h in cfg.custom_hooks
                      if h['type'] == 'DataloaderSwitchHook')
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        switch = HOOKS.build(dict(switch_cfg))
    switch._base_cfg = dict(cfg.train_dataloader)
    assert [switch.phase_index(e) for e in (0, 14, 15, 99)] == [0, 0, 1, 1]
    phase1, phase2 = switch.dataloader_cfg(0), switch.dataloader_cfg(1)
    assert phase2['batch_size'] == 112
    assert phase2['sampler'] == phase1['sampler']
    assert phase2['drop_last'] is False
    assert phase2['dataset']['split'] == 'train'
    assert phase2['dataset']['data_root'] == 'data/imagenet/size352'
    assert _first_sample(phase1['dataset'], root).shape == (3, 128, 128)
    assert _first_sample(phase2['dataset'], root).shape == (3, 224, 224)
