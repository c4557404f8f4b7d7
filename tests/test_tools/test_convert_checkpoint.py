"""Tests of tools/convert_checkpoint.py, tools/publish_model.py and
mixplugins.utils.convert.

The source checkpoints are built here with the official key layouts and
containers:

* RecursiveMix (implus/RecursiveMix-pytorch ``main.py``): ``dict(epoch,
  state_dict, optimizer)`` of a DDP model (``module.`` prefix) whose
  ImageNet ResNet-50 is torchvision's plus ``fc_roi``; the CIFAR
  PyramidNet-200 (alpha 240) likewise has ``fc`` and ``fc_roi``.
* R-Mix (minhlong94/Random-Mixup): the ImageNet script saves ``dict(epoch,
  arch, state_dict, best_prec1, optimizer)`` of a DDP torchvision ResNet-50;
  the CIFAR environment saves ``dict(model, scheduler, test_top1, test_top5,
  args, config, epoch)``, and the README reads published files through
  ``'state_dict'`` with a ``module.`` prefix.

The CIFAR reference networks below are small re-implementations of the
official modules (from the architecture descriptions in rmix_spec /
recursivemix_spec), independent of mixplugins' backbones: converted weights
must make mixplugins' mmpretrain classifier compute the same logits.
"""
import argparse
import hashlib
import math
import os.path as osp
import re

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from mmengine.config import Config

import mixplugins  # noqa: F401  (registers the CIFAR backbones)
from mixplugins.utils import convert as C

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def _load_tool(name):
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        f'_tool_{name}', osp.join(REPO, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


convert_tool = _load_tool('convert_checkpoint')
publish_tool = _load_tool('publish_model')


def _randomize(model, seed=0):
    """Random weights and BN statistics, so no layer is an identity."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.1)
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                m.num_batches_tracked.fill_(7)
    return model.eval()


def _build_mmpretrain(cfg):
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(cfg)
    model.eval()  # some backbones' train() returns None
    return model


# --------------------------------------------------------------------------
# Official CIFAR networks, re-implemented for the test (names and forward
# as in the official modules).
class _PreActBlock(nn.Module):

    def __init__(self, cin, planes, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        if stride != 1 or cin != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, planes, 1, stride, bias=False))

    def forward(self, x):
        out = F.relu(self.bn1(x))
        sc = self.shortcut(out) if hasattr(self, 'shortcut') else x
        return self.conv2(F.relu(self.bn2(self.conv1(out)))) + sc


class OfficialPreActResNet18(nn.Module):

    def __init__(self, num_classes):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        cin = 64
        for i, planes in enumerate((64, 128, 256, 512)):
            blocks = []
            for j in range(2):
                blocks.append(
                    _PreActBlock(cin, planes, 2 if (i and not j) else 1))
                cin = planes
            setattr(self, f'layer{i + 1}', nn.Sequential(*blocks))
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x):
        out = self.conv1(x)
        for i in range(1, 5):
            out = getattr(self, f'layer{i}')(out)
        return self.linear(F.avg_pool2d(out, 4).flatten(1))


class _WideBasic(nn.Module):

    def __init__(self, cin, planes, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, planes, 3, padding=1, bias=True)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=True)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, planes, 1, stride, bias=True))

    def forward(self, x):
        out = self.conv1(F.relu(self.bn1(x)))
        return self.conv2(F.relu(self.bn2(out))) + self.shortcut(x)


class OfficialWideResNet(nn.Module):

    def __init__(self, depth, k, num_classes):
        super().__init__()
        n = (depth - 4) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=True)
        cin = 16
        for i, w in enumerate((16 * k, 32 * k, 64 * k)):
            blocks = []
            for j in range(n):
                blocks.append(_WideBasic(cin, w, 2 if (i and not j) else 1))
                cin = w
            setattr(self, f'layer{i + 1}', nn.Sequential(*blocks))
        self.bn1 = nn.BatchNorm2d(cin, momentum=0.9)
        self.linear = nn.Linear(cin, num_classes)

    def forward(self, x):
        out = self.conv1(x)
        for i in range(1, 4):
            out = getattr(self, f'layer{i}')(out)
        out = F.relu(self.bn1(out))
        return self.linear(F.avg_pool2d(out, 8).flatten(1))


class _ResNeXtBottleneck(nn.Module):

    def __init__(self, cin, planes, card, base_width, stride, downsample):
        super().__init__()
        dc = int(math.floor(planes * base_width / 64.0)) * card
        self.conv_reduce = nn.Conv2d(cin, dc, 1, bias=False)
        self.bn_reduce = nn.BatchNorm2d(dc)
        self.conv_conv = nn.Conv2d(
            dc, dc, 3, stride, 1, groups=card, bias=False)
        self.bn = nn.BatchNorm2d(dc)
        self.conv_expand = nn.Conv2d(dc, planes * 4, 1, bias=False)
        self.bn_expand = nn.BatchNorm2d(planes * 4)
        self.downsample = downsample

    def forward(self, x):
        out = F.relu(self.bn_reduce(self.conv_reduce(x)))
        out = F.relu(self.bn(self.conv_conv(out)))
        out = self.bn_expand(self.conv_expand(out))
        res = x if self.downsample is None else self.downsample(x)
        return F.relu(res + out)


class OfficialResNeXt29(nn.Module):

    def __init__(self, card, base_width, num_classes):
        super().__init__()
        self.conv_1_3x3 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn_1 = nn.BatchNorm2d(64)
        cin = 64
        for i, planes in enumerate((64, 128, 256)):
            stride = 1 if i == 0 else 2
            down = nn.Sequential(
                nn.Conv2d(cin, planes * 4, 1, stride, bias=False),
                nn.BatchNorm2d(planes * 4))
            blocks = [
                _ResNeXtBottleneck(cin, planes, card, base_width, stride, down)
            ]
            cin = planes * 4
            for _ in range(2):
                blocks.append(
                    _ResNeXtBottleneck(cin, planes, card, base_width, 1, None))
            setattr(self, f'stage_{i + 1}', nn.Sequential(*blocks))
        self.classifier = nn.Linear(1024, num_classes)

    def forward(self, x):
        out = F.relu(self.bn_1(self.conv_1_3x3(x)))
        for i in range(1, 4):
            out = getattr(self, f'stage_{i}')(out)
        return self.classifier(F.avg_pool2d(out, 8).flatten(1))


class _PyramidBottleneck(nn.Module):

    def __init__(self, cin, planes, stride, downsample):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn4 = nn.BatchNorm2d(planes * 4)
        self.downsample = downsample

    def forward(self, x):
        out = self.conv1(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(out)))
        out = self.bn4(self.conv3(F.relu(self.bn3(out))))
        sc = x if self.downsample is None else self.downsample(x)
        pad = out.shape[1] - sc.shape[1]
        if pad:
            sc = torch.cat(
                [sc, sc.new_zeros(sc.shape[0], pad, *sc.shape[2:])], 1)
        return out + sc


class OfficialPyramidNet(nn.Module):
    """pyramidnet_200_240 with RecursiveMix's ``fc_roi``."""

    def __init__(self, num_classes, depth=200, alpha=240):
        super().__init__()
        n = (depth - 2) // 9
        add = alpha / (3 * n)
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        dim, cin = 16.0, 16
        for i in range(3):
            blocks = []
            for j in range(n):
                dim += add
                stride = 2 if (i and not j) else 1
                down = (
                    nn.AvgPool2d(2, 2, ceil_mode=True)
                    if stride == 2 else None)
                planes = int(round(dim))
                blocks.append(_PyramidBottleneck(cin, planes, stride, down))
                cin = planes * 4
            setattr(self, f'layer{i + 1}', nn.Sequential(*blocks))
        self.bn_final = nn.BatchNorm2d(cin)
        self.fc = nn.Linear(cin, num_classes)
        self.fc_roi = nn.Linear(cin, num_classes)

    def forward(self, x):
        out = self.bn1(self.conv1(x))
        for i in range(1, 4):
            out = getattr(self, f'layer{i}')(out)
        out = F.relu(self.bn_final(out))
        return self.fc(F.avg_pool2d(out, 8).flatten(1))


OFFICIAL_CIFAR = {
    'preactresnet18': lambda k: OfficialPreActResNet18(k),
    'wrn16_8': lambda k: OfficialWideResNet(16, 8, k),
    'wrn28_10': lambda k: OfficialWideResNet(28, 10, k),
    'resnext29_4_24': lambda k: OfficialResNeXt29(4, 24, k),
    'pyramidnet_200_240': lambda k: OfficialPyramidNet(k),
}


def _official_resnet50(seed=0):
    torch.manual_seed(seed)
    return _randomize(torchvision.models.resnet50(), seed)


def _ddp(state):
    return {f'module.{k}': v for k, v in state.items()}


def _sgd_state(model):
    return torch.optim.SGD(
        model.parameters(), lr=0.1, momentum=0.9).state_dict()


def _recursivemix_resnet50_ckpt(tv, path):
    """implus/RecursiveMix-pytorch main.py: dict(epoch, state_dict,
    optimizer); torchvision ResNet-50 + fc_roi, DDP-wrapped."""
    state = dict(tv.state_dict())
    fc_roi = nn.Linear(2048, 1000)
    state['fc_roi.weight'] = fc_roi.weight.detach()
    state['fc_roi.bias'] = fc_roi.bias.detach()
    ckpt = dict(epoch=300, state_dict=_ddp(state), optimizer=_sgd_state(tv))
    torch.save(ckpt, path)
    return ckpt


def _run_convert(*argv):
    return convert_tool.main([str(a) for a in argv])


# --------------------------------------------------------------------------
def test_recursivemix_resnet50_to_classifier_matches_torchvision(tmp_path):
    tv = _official_resnet50()
    src, dst = tmp_path / 'fold1_best.pth', tmp_path / 'out' / 'cls.pth'
    ckpt = _recursivemix_resnet50_ckpt(tv, src)
    # the published layout: every torchvision key + fc_roi, with module.
    expected = {f'module.{k}' for k in tv.state_dict()}
    expected |= {'module.fc_roi.weight', 'module.fc_roi.bias'}
    assert set(ckpt['state_dict']) == expected

    assert _run_convert(src, dst, '--src-format', 'recursivemix', '--arch',
                        'resnet50', '--target', 'classifier') == 0
    out = torch.load(dst, map_location='cpu', weights_only=True)
    assert set(out) == {'state_dict', 'meta'}
    state = out['state_dict']
    assert not any('fc_roi' in k or k.startswith('module.') for k in state)
    meta = out['meta']
    assert meta['src_format'] == 'recursivemix' and meta['arch'] == 'resnet50'
    assert meta['num_classes'] == 1000 and meta['source'] == 'fold1_best.pth'
    assert meta['source_meta'] == dict(epoch=300)

    model = _build_mmpretrain(C.classifier_config('resnet50', 1000))
    result = model.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected_logits = tv(x)
        logits = model(x, mode='tensor')
    assert logits.shape == (2, 1000)
    torch.testing.assert_close(logits, expected_logits, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('current_scope', ['mmseg', 'mmdet'])
def test_converter_verifies_in_mmpretrain_scope(tmp_path, current_scope):
    """A process that ran an mmseg or mmdet runner before leaves that
    scope current in mmengine; the converter's check still builds the
    mmpretrain classifier (it failed with 'ImageClassifier is not in the
    mmseg::model registry'), and leaves the current scope as it was."""
    from mmengine.registry import DefaultScope
    src, dst = tmp_path / 'fold1_best.pth', tmp_path / 'cls.pth'
    _recursivemix_resnet50_ckpt(_official_resnet50(), src)
    with DefaultScope.overwrite_default_scope(current_scope):
        assert _run_convert(src, dst, '--src-format', 'recursivemix',
                            '--arch', 'resnet50', '--target',
                            'classifier') == 0
        assert DefaultScope.get_current_instance().scope_name == \
            current_scope
    assert torch.load(dst, map_location='cpu',
                      weights_only=True)['meta']['arch'] == 'resnet50'


@pytest.mark.parametrize('framework', ['mmdet', 'mmseg'])
def test_rmix_resnet50_backbone_loads_via_init_cfg(tmp_path, framework):
    tv = _official_resnet50(seed=2)
    src = tmp_path / 'model_best.pth.tar'
    dst = tmp_path / 'checkpoints' / 'r50_rmix_in1k_backbone.pth'
    # R-Mix imagenet/main_fast_ddp.py checkpoint of a DDP torchvision R-50
    torch.save(
        dict(
            epoch=100,
            arch='resnet50',
            state_dict=_ddp(tv.state_dict()),
            best_prec1=77.39,
            optimizer=_sgd_state(tv)), src)
    assert _run_convert(src, dst, '--src-format', 'rmix', '--arch', 'resnet50',
                        '--target', 'backbone') == 0
    out = torch.load(dst, map_location='cpu', weights_only=True)
    assert out['meta']['source_meta'] == dict(
        epoch=100, arch='resnet50', best_prec1=77.39)

    if framework == 'mmdet':
        from mmdet.models.backbones import ResNet
    else:
        from mmseg.models.backbones import ResNet
    backbone = ResNet(
        depth=50, init_cfg=dict(type='Pretrained', checkpoint=str(dst)))
    fresh = {k: v.clone() for k, v in backbone.state_dict().items()}
    # no missing / unexpected backbone key
    assert set(out['state_dict']) == set(fresh)
    backbone.init_weights()
    loaded = backbone.state_dict()
    reference = tv.state_dict()
    for key, value in loaded.items():
        torch.testing.assert_close(value, reference[key], rtol=0, atol=0)
    assert not torch.equal(loaded['layer3.2.conv2.weight'],
                           fresh['layer3.2.conv2.weight'])
    # and the loaded backbone computes torchvision's layer4 features
    backbone.eval()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = tv.layer4(
            tv.layer3(
                tv.layer2(tv.layer1(tv.maxpool(tv.relu(tv.bn1(
                    tv.conv1(x))))))))
        torch.testing.assert_close(backbone(x)[-1], ref, rtol=1e-4, atol=1e-4)


CIFAR_CASES = [
    ('rmix', 'preactresnet18', 'readme'),
    ('rmix', 'wrn16_8', 'env'),
    ('rmix', 'wrn28_10', 'readme'),
    ('rmix', 'resnext29_4_24', 'env'),
    ('recursivemix', 'pyramidnet_200_240', 'main'),
]


def _save_cifar(official, container, path):
    state = official.state_dict()
    if container == 'readme':  # published .pth.tar read via 'state_dict'
        ckpt = dict(state_dict=_ddp(state), epoch=299)
    elif container == 'env':  # R-Mix CIFAR environment's own save
        ckpt = dict(
            model=state,
            scheduler=dict(last_epoch=150000),
            test_top1=82.32,
            test_top5=96.0,
            args=argparse.Namespace(method='rmix', cnn_lr=0.2),
            config=dict(num_class=100, size=32),
            epoch=299)
    else:  # RecursiveMix main.py
        ckpt = dict(
            epoch=300, state_dict=_ddp(state), optimizer=_sgd_state(official))
    torch.save(ckpt, path)


@pytest.mark.parametrize('src_format,arch,container', CIFAR_CASES)
def test_cifar_checkpoints_convert_exactly(tmp_path, src_format, arch,
                                           container):
    torch.manual_seed(0)
    official = _randomize(OFFICIAL_CIFAR[arch](100))
    src = tmp_path / f'{arch}.pth.tar'
    _save_cifar(official, container, src)

    cls, bb = tmp_path / 'cls.pth', tmp_path / 'bb.pth'
    for target, dst in (('classifier', cls), ('backbone', bb)):
        assert _run_convert(src, dst, '--src-format', src_format, '--arch',
                            arch, '--target', target) == 0
    state = torch.load(cls, map_location='cpu', weights_only=True)
    state = state['state_dict']
    assert not any('fc_roi' in k for k in state)
    model = _build_mmpretrain(C.classifier_config(arch, 100))
    model.load_state_dict(state, strict=True)
    # batch 1: PyramidNet-200 costs seconds per image on a CPU
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(
            model(x, mode='tensor'), official(x), rtol=1e-4, atol=1e-4)

    backbone = _build_mmpretrain(C.backbone_config(arch))
    bb_state = torch.load(bb, map_location='cpu', weights_only=True)
    backbone.load_state_dict(bb_state['state_dict'], strict=True)
    head = {C.ARCHS[arch].head, 'fc_roi'}
    expected = {
        k: v
        for k, v in official.state_dict().items()
        if k.split('.')[0] not in head
    }
    assert set(bb_state['state_dict']) == set(expected)
    for key, value in bb_state['state_dict'].items():
        assert torch.equal(value, expected[key]), key


# --------------------------------------------------------------------------
# mixplugins' own checkpoints and publishing
NUM_CLASSES = 10
CLASSES = [f'c{i}' for i in range(NUM_CLASSES)]
TINY_BACKBONE = dict(type='ResNet', depth=18, stem_channels=8, base_channels=8)
MEAN, STD = [120.0, 110.0, 100.0], [60.0, 50.0, 40.0]


def _tiny_model_cfg(model_type, augments=None):
    cfg = dict(
        type=model_type,
        backbone=TINY_BACKBONE,
        neck=dict(type='GlobalAveragePooling'),
        head=dict(
            type='LinearClsHead',
            num_classes=NUM_CLASSES,
            in_channels=64,
            loss=dict(type='CrossEntropyLoss', use_soft=augments is not None),
            topk=(1, )),
        data_preprocessor=dict(
            type='ClsDataPreprocessor',
            num_classes=NUM_CLASSES,
            mean=MEAN,
            std=STD,
            to_rgb=False))
    if augments is not None:
        cfg['train_cfg'] = dict(augments=augments)
    return cfg


def _mixplugins_checkpoint(path):
    """A checkpoint as mmengine's Runner writes it for MixImageClassifier
    trained with RecursiveMix: fc_roi, rm_history, optimizer, message hub
    (with HistoryBuffer), schedulers, meta with dataset_meta."""
    from mmengine.logging import MessageHub
    model = _build_mmpretrain(
        _tiny_model_cfg('MixImageClassifier',
                        [dict(type='RecursiveMix', alpha=0.5, omega=0.5)]))
    _randomize(model, seed=5)
    hub = MessageHub.get_instance(f'convert-test-{path.name}')
    hub.update_scalar('train/loss', 1.5)
    hub.update_info('iter', 30)
    meta = dict(
        dataset_meta=dict(classes=CLASSES),
        epoch=3,
        iter=30,
        mmengine_version='0.10.7',
        experiment_name='r18_rm_tiny')
    ckpt = dict(
        meta=meta,
        state_dict=model.state_dict(),
        message_hub=hub.state_dict(),
        optimizer=_sgd_state(model),
        param_schedulers=[dict(last_epoch=3, base_values=[0.1])])
    assert {'fc_roi.weight', 'fc_roi.bias',
            'rm_history._extra_state'} <= set(ckpt['state_dict'])
    torch.save(ckpt, path)
    return model, ckpt


def test_mixplugins_checkpoint_to_classifier_and_backbone(tmp_path):
    model, ckpt = _mixplugins_checkpoint(tmp_path / 'epoch_3.pth')
    cls, bb = tmp_path / 'cls.pth', tmp_path / 'bb.pth'
    assert _run_convert(tmp_path / 'epoch_3.pth', cls, '--src-format',
                        'mixplugins', '--target', 'classifier') == 0
    assert _run_convert(tmp_path / 'epoch_3.pth', bb, '--src-format',
                        'mixplugins', '--target', 'backbone') == 0
    out = torch.load(cls, map_location='cpu', weights_only=True)
    assert out['meta']['dataset_meta'] == dict(classes=CLASSES)
    assert out['meta']['source_meta'] == dict(epoch=3)
    expected_keys = {
        k
        for k in ckpt['state_dict']
        if not k.startswith(('fc_roi.', 'rm_history.'))
    }
    assert set(out['state_dict']) == expected_keys

    plain = _build_mmpretrain(_tiny_model_cfg('ImageClassifier'))
    plain.load_state_dict(out['state_dict'], strict=True)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        torch.testing.assert_close(
            plain(x, mode='tensor'), model(x, mode='tensor'), rtol=0, atol=0)

    backbone = _build_mmpretrain(TINY_BACKBONE)
    bb_state = torch.load(bb, map_location='cpu', weights_only=True)
    backbone.load_state_dict(bb_state['state_dict'], strict=True)
    for key, value in backbone.state_dict().items():
        assert torch.equal(value, ckpt['state_dict'][f'backbone.{key}'])


def test_publish_model_runs_in_mmpretrain_inferencer(tmp_path, capsys):
    from mmengine.registry import DefaultScope
    from mmpretrain.apis import ImageClassificationInferencer
    model, ckpt = _mixplugins_checkpoint(tmp_path / 'epoch_3.pth')
    assert publish_tool.main([
        str(tmp_path / 'epoch_3.pth'),
        str(tmp_path / 'pub' / 'r18_rm_tiny.pth')
    ]) == 0
    final = capsys.readouterr().out.strip().splitlines()[-1]
    assert re.fullmatch(
        re.escape(str(tmp_path / 'pub' / 'r18_rm_tiny')) +
        r'-[0-9a-f]{8}\.pth', final), final
    with open(final, 'rb') as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    assert final.endswith(f'-{digest[:8]}.pth')
    assert not osp.exists(tmp_path / 'pub' / 'r18_rm_tiny.pth')

    published = torch.load(final, map_location='cpu', weights_only=True)
    assert set(published) == {'state_dict', 'meta'}
    assert published['meta'] == ckpt['meta']
    assert not any(
        k.startswith(('fc_roi.', 'rm_history.'))
        for k in published['state_dict'])

    cfg = Config(
        dict(
            model=_tiny_model_cfg('ImageClassifier'),
            test_dataloader=dict(
                dataset=dict(pipeline=[
                    dict(type='LoadImageFromFile'),
                    dict(type='PackInputs')
                ]))))
    cfg_path = tmp_path / 'tiny_cls.py'
    cfg.dump(str(cfg_path))
    img = np.random.default_rng(7).integers(
        0, 256, size=(32, 32, 3), dtype=np.uint8)
    # mmpretrain's inferencer builds its pipeline in mmengine's current
    # scope; an earlier test of the session may have left mmseg's current
    # (a user's fresh process has none), so the scope is set here.
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        inferencer = ImageClassificationInferencer(
            model=str(cfg_path), pretrained=final, device='cpu')
        result = inferencer(img)[0]

    # independent expectation: the trained MixImageClassifier's own logits
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float()
    x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(
        1, 3, 1, 1)
    with torch.no_grad():
        scores = model(x, mode='tensor').softmax(-1)[0]
    np.testing.assert_allclose(
        result['pred_scores'], scores.numpy(), rtol=1e-5, atol=1e-6)
    assert result['pred_class'] == CLASSES[int(scores.argmax())]


# --------------------------------------------------------------------------
# bad input
def test_bad_arguments_are_rejected(tmp_path, capsys):
    tv = _official_resnet50()
    src = tmp_path / 'rm.pth'
    _recursivemix_resnet50_ckpt(tv, src)
    with pytest.raises(ValueError, match='src_format'):
        C.convert_state_dict({}, 'timm', 'classifier')
    with pytest.raises(ValueError, match='target'):
        C.convert_state_dict({}, 'rmix', 'detector', arch='resnet50')
    with pytest.raises(ValueError, match='`arch` is required'):
        C.convert_checkpoint(str(src), None, 'recursivemix', 'classifier')
    # an arch the format never published
    with pytest.raises(ValueError, match='arch'):
        C.convert_checkpoint(
            str(src), None, 'recursivemix', 'classifier', arch='wrn28_10')
    # wrong arch for the weights: the classifier name does not match
    state = C.extract_state_dict(torch.load(src, weights_only=True))
    with pytest.raises(ValueError, match="'linear.weight'"):
        C.convert_state_dict(
            state, 'rmix', 'classifier', arch='preactresnet18')
    # right classifier name but another network: verification catches it
    torch.manual_seed(0)
    wrn = OfficialWideResNet(16, 8, 100)
    torch.save(dict(state_dict=_ddp(wrn.state_dict())), tmp_path / 'w.pth')
    with pytest.raises(ValueError, match='does not fit'):
        C.convert_checkpoint(
            str(tmp_path / 'w.pth'),
            None,
            'rmix',
            'classifier',
            arch='preactresnet18')
    # keys the mixplugins layout does not know
    with pytest.raises(ValueError, match='keys outside'):
        C.convert_state_dict(
            {
                'backbone.w': torch.zeros(1),
                'teacher.w': torch.zeros(1)
            }, 'mixplugins', 'classifier')
    # the CLI reports errors with exit status 1
    assert _run_convert(src, tmp_path / 'x.pth', '--src-format', 'rmix',
                        '--arch', 'preactresnet18', '--target',
                        'classifier') == 1
    assert 'error:' in capsys.readouterr().err
    assert not osp.exists(tmp_path / 'x.pth')


def test_unsafe_objects_need_unsafe_load(tmp_path):
    import pathlib
    tv = _official_resnet50()
    src = tmp_path / 'odd.pth'
    torch.save(
        dict(
            state_dict=_ddp(tv.state_dict()),
            note=pathlib.PurePosixPath('a/b')), src)
    with pytest.raises(ValueError, match='--unsafe-load'):
        C.load_source(str(src))
    assert _run_convert(src, tmp_path / 'o.pth', '--src-format', 'rmix',
                        '--arch', 'resnet50', '--target', 'backbone') == 1
    assert _run_convert(src, tmp_path / 'o.pth', '--src-format', 'rmix',
                        '--arch', 'resnet50', '--target', 'backbone',
                        '--unsafe-load') == 0
    with pytest.raises(FileNotFoundError):
        C.load_source(str(tmp_path / 'missing.pth'))


def test_training_only_parts_are_stripped():
    """The RecursiveMix history and RoI head and the RL-Mix agent are
    training state: dropped by publishing; the model keys are kept."""
    from mixplugins.utils.convert import strip_training_parts
    w = torch.zeros(2)
    ckpt = dict(state_dict={
        'backbone.conv.weight': w, 'head.fc.bias': w,
        'fc_roi.weight': w, 'rm_history._extra_state': w,
        'rl_agent._extra_state': {'policy': w},
        'data_preprocessor.mean': w,
    }, optimizer={}, meta=dict(epoch=1))
    out = strip_training_parts(ckpt)
    assert list(out['state_dict']) == ['backbone.conv.weight', 'head.fc.bias']
    assert out['meta'] == dict(epoch=1) and 'optimizer' not in out
