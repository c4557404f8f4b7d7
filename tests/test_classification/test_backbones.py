"""Tests for the CIFAR backbones of R-Mix and RecursiveMix.

Expectations come from three independent sources:

* published parameter counts, compared at the precision they are printed
  with (WRN paper Table: WRN-28-10 36.5M, WRN-16-8 11.0M; PreActResNet-18 on
  CIFAR-100 11.2M; PyramidNet-200 alpha 240 26.8M as quoted by CutMix);
* exact parameter counts derived here by hand from the architecture
  descriptions (closed-form sums, no module code);
* hand-built expectations for single blocks (zeroed branches, identity BN)
  and for the BN momentum semantics.
"""
import math
from fractions import Fraction
from typing import Sequence

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmpretrain.registry import MODELS

from mixplugins.classification.backbones import (CifarResNeXt, PreActResNet,
                                                 PyramidNet, WideResNet)
from mixplugins.classification.backbones.preact_resnet import PreActBasicBlock
from mixplugins.classification.backbones.pyramidnet import PyramidBottleneck
from mixplugins.classification.backbones.wide_resnet import WideBasicBlock


def _num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _with_linear_head(backbone: nn.Module, num_classes: int) -> int:
    """Backbone parameters + a ``Linear(out_channels, num_classes)`` head."""
    c = backbone.out_channels
    return _num_params(backbone) + c * num_classes + num_classes


# --------------------------------------------------------------------------
# Closed-form parameter counts written from the papers / official layouts.
# bn(c) = 2c (weight, bias); conv kxk a->b without bias = k*k*a*b.
# --------------------------------------------------------------------------
def _count_preact_basic(stage_blocks: Sequence[int], base: int = 64) -> int:
    total = 9 * 3 * base  # stem, no bias, no BN
    cin = base
    for i, nb in enumerate(stage_blocks):
        p = base * 2**i
        for _ in range(nb):
            total += 2 * cin + 9 * cin * p + 2 * p + 9 * p * p
            if cin != p:
                total += cin * p  # 1x1 projection, no bias
            cin = p
    return total  # no final BN


def _count_wrn(depth: int, k: int) -> int:
    n = (depth - 4) // 6
    total = 9 * 3 * 16 + 16  # stem with bias
    cin = 16
    for w in (16, 32, 64):
        p = w * k
        for _ in range(n):
            total += 2 * cin + (9 * cin * p + p) + 2 * p + (9 * p * p + p)
            if cin != p:
                total += cin * p + p  # 1x1 projection with bias
            cin = p
    return total + 2 * cin  # final BN


def _count_resnext(depth: int, card: int, d: int) -> int:
    n = (depth - 2) // 9
    total = 9 * 3 * 64 + 2 * 64
    cin = 64
    for planes in (64, 128, 256):
        w = (planes * d // 64) * card
        out = 4 * planes
        for j in range(n):
            total += (
                cin * w + 2 * w + 9 * w * (w // card) + 2 * w + w * out +
                2 * out)
            if j == 0:
                total += cin * out + 2 * out  # projection conv + BN
            cin = out
    return total


def _count_pyramid_bottleneck(depth: int, alpha: int) -> int:
    n = (depth - 2) // 9
    total = 9 * 3 * 16 + 2 * 16
    cin = 16
    for k in range(1, 3 * n + 1):
        p = round(16 + Fraction(alpha * k, 3 * n))
        total += (2 * cin + cin * p + 2 * p + 9 * p * p + 2 * p + 4 * p * p +
                  2 * 4 * p)
        cin = 4 * p
    return total + 2 * cin  # bn_final


# --------------------------------------------------------------------------
# Full-size models: built once per module.
# --------------------------------------------------------------------------
@pytest.fixture(scope='module')
def preact18() -> PreActResNet:
    return MODELS.build(dict(type='PreActResNet', depth=18))


@pytest.fixture(scope='module')
def wrn28_10() -> WideResNet:
    return MODELS.build(dict(type='WideResNet', depth=28, widen_factor=10))


@pytest.fixture(scope='module')
def wrn16_8() -> WideResNet:
    return MODELS.build(dict(type='WideResNet', depth=16, widen_factor=8))


@pytest.fixture(scope='module')
def resnext29() -> CifarResNeXt:
    return MODELS.build(
        dict(type='CifarResNeXt', depth=29, cardinality=4, base_width=24))


@pytest.fixture(scope='module')
def pyramid200() -> PyramidNet:
    return MODELS.build(
        dict(type='PyramidNet', depth=200, alpha=240, bottleneck=True))


class TestRegistry:

    @pytest.mark.parametrize('name, cls', [('PreActResNet', PreActResNet),
                                           ('WideResNet', WideResNet),
                                           ('CifarResNeXt', CifarResNeXt),
                                           ('PyramidNet', PyramidNet)])
    def test_registered_in_mmpretrain_models(self, name, cls):
        import mmpretrain.models  # noqa: F401  (all built-ins registered)
        assert MODELS.get(name) is cls

    def test_image_classifier_with_gap_and_linear_head(self):
        backbone = dict(type='WideResNet', depth=10, widen_factor=1)
        model = MODELS.build(
            dict(
                type='ImageClassifier',
                backbone=backbone,
                neck=dict(type='GlobalAveragePooling'),
                head=dict(
                    type='LinearClsHead',
                    num_classes=10,
                    in_channels=MODELS.build(backbone).out_channels,
                    loss=dict(type='CrossEntropyLoss'))))
        model.eval()
        with torch.no_grad():
            logits = model(torch.rand(2, 3, 32, 32), mode='tensor')
        assert logits.shape == (2, 10)


class TestParameterCounts:
    """Against published figures (printed precision) and exact sums."""

    def test_preact_resnet18_cifar100(self, preact18):
        count = _with_linear_head(preact18, 100)
        assert round(count / 1e6, 1) == 11.2
        assert _num_params(preact18) == _count_preact_basic((2, 2, 2, 2))
        assert preact18.out_channels == 512

    def test_wrn28_10_cifar100(self, wrn28_10):
        count = _with_linear_head(wrn28_10, 100)
        assert round(count / 1e6, 1) == 36.5
        assert _num_params(wrn28_10) == _count_wrn(28, 10)
        assert wrn28_10.out_channels == 640

    def test_wrn16_8_cifar100(self, wrn16_8):
        count = _with_linear_head(wrn16_8, 100)
        assert round(count / 1e6, 1) == 11.0
        assert _num_params(wrn16_8) == _count_wrn(16, 8)
        assert wrn16_8.out_channels == 512

    def test_resnext29_4x24d(self, resnext29):
        assert _num_params(resnext29) == _count_resnext(29, 4, 24)
        assert resnext29.out_channels == 1024
        # 4 groups of D = floor(planes * 24 / 64) = 24, 48, 96 channels.
        widths = [
            getattr(resnext29, f'stage_{i}')[0].conv_conv.out_channels
            for i in (1, 2, 3)
        ]
        assert widths == [96, 192, 384]
        assert resnext29.stage_1[0].conv_conv.groups == 4
        assert len(resnext29.stage_1) == 3  # (29 - 2) / 9 blocks per stage

    @pytest.mark.parametrize('num_classes', [10, 100])
    def test_pyramidnet200_240(self, pyramid200, num_classes):
        count = _with_linear_head(pyramid200, num_classes)
        assert round(count / 1e6, 1) == 26.8
        assert _num_params(pyramid200) == _count_pyramid_bottleneck(200, 240)

    def test_pyramidnet200_240_channel_schedule(self, pyramid200):
        # alpha / (3n) = 240 / 66 = 40 / 11 channels per block.
        assert pyramid200.layer1[0].conv1.out_channels == 20  # 19.64
        assert pyramid200.stage_channels == (4 * 96, 4 * 176, 4 * 256)
        assert pyramid200.out_channels == 1024
        assert [
            len(pyramid200.layer1),
            len(pyramid200.layer2),
            len(pyramid200.layer3)
        ] == [22, 22, 22]


class TestFullSizeOutputs:
    """Last feature map, 4-D and not pooled, at 32x32 input."""

    @pytest.mark.parametrize('fixture, shape', [
        ('preact18', (1, 512, 4, 4)),
        ('wrn16_8', (1, 512, 8, 8)),
        ('resnext29', (1, 1024, 8, 8)),
    ])
    def test_shapes(self, request, fixture, shape):
        net = request.getfixturevalue(fixture).eval()
        with torch.no_grad():
            outs = net(torch.rand(1, 3, 32, 32))
        assert isinstance(outs, tuple) and len(outs) == 1
        assert outs[0].shape == shape
        assert shape[1] == net.out_channels

    def test_wrn28_10_shape(self, wrn28_10):
        with torch.no_grad():
            outs = wrn28_10.eval()(torch.rand(1, 3, 32, 32))
        assert outs[0].shape == (1, 640, 8, 8)

    def test_pyramidnet200_shape_and_activation(self, pyramid200):
        with torch.no_grad():
            outs = pyramid200.eval()(torch.rand(1, 3, 32, 32))
        assert outs[0].shape == (1, 1024, 8, 8)
        assert (outs[0] >= 0).all()  # after bn_final + ReLU


# --------------------------------------------------------------------------
# Small configurations: wiring, blocks, options.
# --------------------------------------------------------------------------
def _small(name: str, **kwargs) -> nn.Module:
    cfgs = {
        'PreActResNet': dict(depth=18, base_channels=4),
        'WideResNet': dict(depth=10, widen_factor=1),
        'CifarResNeXt': dict(depth=11, cardinality=2, base_width=4),
        'PyramidNet': dict(depth=11, alpha=48),
    }
    return MODELS.build(dict(type=name, **{**cfgs[name], **kwargs}))


class TestForwardWiring:
    """Forward equals the layer composition the official code describes."""

    x = torch.randn(2, 3, 16, 16)

    def test_preact_has_no_final_bn_relu(self):
        net = _small('PreActResNet').eval()
        with torch.no_grad():
            out = net(self.x)[0]
            ref = net.layer4(
                net.layer3(net.layer2(net.layer1(net.conv1(self.x)))))
        torch.testing.assert_close(out, ref, rtol=0, atol=0)
        assert (out < 0).any()  # nothing rectifies the output
        assert net.conv1.bias is None and net.conv1.stride == (1, 1)

    def test_wrn_ends_with_bn_relu(self):
        net = _small('WideResNet').eval()
        with torch.no_grad():
            out = net(self.x)[0]
            ref = F.relu(
                net.bn1(net.layer3(net.layer2(net.layer1(net.conv1(self.x))))))
        torch.testing.assert_close(out, ref, rtol=0, atol=0)
        convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
        assert all(m.bias is not None for m in convs)
        assert not any(isinstance(m, nn.Dropout) for m in net.modules())

    def test_resnext_stem_has_relu(self):
        net = _small('CifarResNeXt').eval()
        with torch.no_grad():
            out = net(self.x)[0]
            ref = net.stage_3(
                net.stage_2(
                    net.stage_1(F.relu(net.bn_1(net.conv_1_3x3(self.x))))))
        torch.testing.assert_close(out, ref, rtol=0, atol=0)
        assert (out >= 0).all()

    def test_pyramidnet_stem_has_no_relu(self):
        net = _small('PyramidNet').eval()
        with torch.no_grad():
            out = net(self.x)[0]
            ref = F.relu(
                net.bn_final(
                    net.layer3(
                        net.layer2(net.layer1(net.bn1(net.conv1(self.x)))))))
        torch.testing.assert_close(out, ref, rtol=0, atol=0)

    @pytest.mark.parametrize('name, channels, sizes', [
        ('PreActResNet', (4, 8, 16, 32), (16, 8, 4, 2)),
        ('WideResNet', (16, 32, 64), (16, 8, 4)),
        ('CifarResNeXt', (256, 512, 1024), (16, 8, 4)),
        ('PyramidNet', (128, 192, 256), (16, 8, 4)),
    ])
    def test_all_stages(self, name, channels, sizes):
        n = len(channels)
        net = _small(name, out_indices=tuple(range(n))).eval()
        with torch.no_grad():
            outs = net(self.x)
        assert [o.shape[1] for o in outs] == list(channels)
        assert [o.shape[-1] for o in outs] == list(sizes)
        assert net.stage_channels == channels
        assert net.out_channels == channels[-1]

    def test_negative_and_unordered_out_indices(self):
        net = _small('PyramidNet', out_indices=(-1, 0)).eval()
        assert net.out_indices == (0, 2)
        with torch.no_grad():
            outs = net(self.x)
        assert [o.shape[1] for o in outs] == [128, 256]

    def test_pyramidnet_odd_input_size(self):
        net = _small('PyramidNet').eval()
        with torch.no_grad():
            out = net(torch.randn(1, 3, 17, 17))[0]
        assert out.shape[-2:] == (5, 5)  # ceil(17 / 2) = 9, ceil(9 / 2) = 5


def _identity_bn(module: nn.Module) -> None:
    """Running stats 0/1, affine 1/0, eps 0: BN is the identity in eval."""
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_parameters()
            m.eps = 0.0


class TestBlocks:

    def test_preact_projection_uses_preactivated_input(self):
        block = PreActBasicBlock(4, 8, stride=2).eval()
        _identity_bn(block)
        nn.init.zeros_(block.conv2.weight)  # residual branch = 0
        x = torch.randn(2, 4, 8, 8)
        with torch.no_grad():
            out = block(x)
        proj = block.shortcut[0].weight
        expected = F.conv2d(F.relu(x), proj, stride=2)
        torch.testing.assert_close(out, expected)
        assert not torch.allclose(out, F.conv2d(x, proj, stride=2))

    def test_wrn_projection_uses_raw_input_and_bias(self):
        block = WideBasicBlock(4, 8, stride=2).eval()
        nn.init.zeros_(block.conv2.weight)
        nn.init.zeros_(block.conv2.bias)
        x = torch.randn(2, 4, 8, 8)
        with torch.no_grad():
            out = block(x)
        conv = block.shortcut[0]
        expected = F.conv2d(x, conv.weight, conv.bias, stride=2)
        torch.testing.assert_close(out, expected)
        # the stride sits on the second 3x3 convolution
        assert block.conv1.stride == (1, 1) and block.conv2.stride == (2, 2)

    def test_pyramid_shortcut_pools_and_zero_pads(self):
        block = PyramidBottleneck(
            6, 3, stride=2, downsample=nn.AvgPool2d(2, 2, ceil_mode=True))
        block.eval()
        nn.init.zeros_(block.bn4.weight)  # residual branch = 0
        x = torch.randn(2, 6, 5, 5)
        with torch.no_grad():
            out = block(x)
        assert out.shape == (2, 12, 3, 3)
        pooled = F.avg_pool2d(x, 2, ceil_mode=True)
        torch.testing.assert_close(out[:, :6], pooled)
        assert (out[:, 6:] == 0).all()


class TestNormalisationAndInit:

    def test_wrn_final_bn_momentum_pytorch_semantics(self):
        net = _small('WideResNet').train()
        seen = {}
        net.bn1.register_forward_pre_hook(
            lambda m, args: seen.__setitem__('x', args[0].detach()))
        net(torch.randn(4, 3, 16, 16))
        batch_mean = seen['x'].mean(dim=(0, 2, 3))
        # running = (1 - 0.9) * 0 + 0.9 * batch_mean
        torch.testing.assert_close(net.bn1.running_mean, 0.9 * batch_mean)
        others = [
            m.momentum for m in net.modules()
            if isinstance(m, nn.BatchNorm2d) and m is not net.bn1
        ]
        assert others and all(mom == 0.1 for mom in others)

    def test_wrn_final_bn_momentum_option(self):
        net = _small('WideResNet', final_bn_momentum=0.1)
        assert net.bn1.momentum == 0.1

    @pytest.mark.parametrize('name', ['CifarResNeXt', 'PyramidNet'])
    def test_official_he_normal_fan_out_init(self, name):
        torch.manual_seed(0)
        net = _small(name)
        conv = max((m for m in net.modules() if isinstance(m, nn.Conv2d)),
                   key=lambda m: m.weight.numel())
        k = conv.kernel_size
        expected = math.sqrt(2.0 / (k[0] * k[1] * conv.out_channels))
        std = conv.weight.std().item()
        assert abs(std / expected - 1) < 0.05
        assert abs(conv.weight.mean().item()) < 0.1 * expected
        bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
        assert all((m.weight == 1).all() and (m.bias == 0).all() for m in bns)

    @pytest.mark.parametrize(
        'name', ['PreActResNet', 'WideResNet', 'CifarResNeXt', 'PyramidNet'])
    def test_init_cfg_passthrough(self, name):
        net = _small(
            name, init_cfg=dict(type='Constant', layer='Conv2d', val=0.5))
        net.init_weights()
        convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
        assert convs and all((m.weight == 0.5).all() for m in convs)


class TestBadArguments:

    @pytest.mark.parametrize('cfg, match', [
        (dict(type='PreActResNet', depth=20), '`depth` must be one of'),
        (dict(type='PreActResNet', depth=18.0), '`depth` must be an int'),
        (dict(type='PreActResNet', stem_stride=0), 'stem_stride'),
        (dict(type='WideResNet', depth=27), r'`depth` must be 6n \+ 4'),
        (dict(type='WideResNet', depth=4), 'depth'),
        (dict(type='WideResNet', widen_factor=0), 'widen_factor'),
        (dict(type='WideResNet', final_bn_momentum=1.5), 'final_bn_momentum'),
        (dict(type='CifarResNeXt', depth=30), r'`depth` must be 9n \+ 2'),
        (dict(type='CifarResNeXt', cardinality=0), 'cardinality'),
        (dict(type='CifarResNeXt', base_width=0), 'base_width'),
        (dict(type='PyramidNet', depth=201), r'`depth` must be 9n \+ 2'),
        (dict(type='PyramidNet', depth=29,
              bottleneck=False), r'`depth` must be 6n \+ 2'),
        (dict(type='PyramidNet', alpha=-1), 'alpha'),
        (dict(type='PyramidNet', alpha=float('nan')), 'alpha'),
        (dict(type='WideResNet', out_indices=(3, )), 'out_indices'),
        (dict(type='PreActResNet', out_indices=(-5, )), 'out_indices'),
        (dict(type='CifarResNeXt', out_indices=()), 'out_indices'),
        # a wrong int is a ValueError of mixplugins.core.checks.check_int
        (dict(type='WideResNet', widen_factor=2.5), 'widen_factor'),
        (dict(type='WideResNet', out_indices=(1.0, )), 'out_indices'),
        (dict(type='PreActResNet', out_indices=True), 'out_indices'),
    ])
    def test_value_errors(self, cfg, match):
        with pytest.raises(ValueError, match=match):
            MODELS.build(cfg)

    @pytest.mark.parametrize('cfg, match', [
        (dict(type='PyramidNet', bottleneck='yes'), 'bottleneck'),
        (dict(type='PyramidNet', alpha='240'), 'alpha'),
        (dict(type='PreActResNet', out_indices='3'), 'out_indices'),
    ])
    def test_type_errors(self, cfg, match):
        with pytest.raises(TypeError, match=match):
            MODELS.build(cfg)

    def test_valid_alternatives_build(self):
        # the same depth is valid with the other block type
        assert PyramidNet(depth=29, alpha=12, bottleneck=True).depth == 29
        assert PyramidNet(depth=20, alpha=12, bottleneck=False).depth == 20
