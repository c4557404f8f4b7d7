"""Pre-activation ResNet for CIFAR, as trained in the R-Mix paper.

Architecture: `Identity Mappings in Deep Residual Networks
<https://arxiv.org/abs/1603.05027>`_ (He et al., ECCV 2016).

The layout follows the model that R-Mix (`Expeditious Saliency-guided Mix-up
through Random Gradient Thresholding <https://arxiv.org/abs/2212.04875>`_,
official code https://github.com/minhlong94/Random-Mixup, ``model/``) copies
from Co-Mixup (https://github.com/snu-mllab/Co-Mixup, ``models/preresnet.py``):
a bias-free 3x3 stem convolution with stride 1 and no normalisation, four
pre-activation stages, and **no** final BN/ReLU before global pooling. The
code here is written from that description; parameter names match the
official module so its checkpoints map one to one.
"""
from typing import List, Optional, Sequence, Tuple, Union

import torch.nn as nn
import torch.nn.functional as F
from mmpretrain.registry import MODELS
from torch import Tensor

from ._utils import CifarBackbone, check_int, normalize_out_indices

__all__ = ['PreActResNet', 'PreActBasicBlock', 'PreActBottleneck']


class PreActBasicBlock(nn.Module):
    """Pre-activation basic block: BN-ReLU-conv3x3, BN-ReLU-conv3x3.

    When the shape changes, the shortcut is a bias-free 1x1 convolution
    applied to the pre-activated input ``relu(bn1(x))``; otherwise it is the
    identity on ``x``.

    Args:
        in_channels (int): Input channels.
        planes (int): Channels of the 3x3 convolutions.
        stride (int): Stride of the first convolution. Defaults to 1.
    """

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = planes * self.expansion
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(
            in_channels, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(
            planes, out_channels, 3, stride=1, padding=1, bias=False)
        self.shortcut: Optional[nn.Module] = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(
                    in_channels, out_channels, 1, stride=stride, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        """Run the block on ``x`` of shape (N, C, H, W)."""
        out = F.relu(self.bn1(x))
        identity = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + identity


class PreActBottleneck(nn.Module):
    """Pre-activation bottleneck: (BN-ReLU-conv) 1x1, 3x3, 1x1 (x4 wide).

    The stride sits on the 3x3 convolution. The shortcut rule is the one of
    :class:`PreActBasicBlock`.

    Args:
        in_channels (int): Input channels.
        planes (int): Channels of the 1x1 and 3x3 convolutions; the block
            outputs ``4 * planes`` channels.
        stride (int): Stride of the 3x3 convolution. Defaults to 1.
    """

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = planes * self.expansion
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(
            planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_channels, 1, bias=False)
        self.shortcut: Optional[nn.Module] = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(
                    in_channels, out_channels, 1, stride=stride, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        """Run the block on ``x`` of shape (N, C, H, W)."""
        out = F.relu(self.bn1(x))
        identity = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        out = self.conv3(F.relu(self.bn3(out)))
        return out + identity


@MODELS.register_module()
class PreActResNet(CifarBackbone):
    """Pre-activation ResNet for 32x32 inputs (R-Mix / Co-Mixup variant).

    Proposed in `Identity Mappings in Deep Residual Networks
    <https://arxiv.org/abs/1603.05027>`_. This is the CIFAR model used by
    `R-Mix <https://arxiv.org/abs/2212.04875>`_ (official code
    https://github.com/minhlong94/Random-Mixup, ``model/preactresnet.py``,
    itself from https://github.com/snu-mllab/Co-Mixup): stem = one bias-free
    3x3 convolution with ``base_channels`` filters and stride ``stem_stride``
    (no BN/ReLU after it), then four stages of widths
    ``base_channels * (1, 2, 4, 8) * expansion`` with strides (1, 2, 2, 2).
    As in that code, the last stage output is returned **without** a final
    BN/ReLU; pool it with ``GlobalAveragePooling`` (the official
    ``avg_pool2d(out, 4)`` on the 4x4 map of a 32x32 input).

    Weights keep PyTorch's default initialisation, as in the official code;
    ``init_cfg`` can override it.

    Args:
        depth (int): Network depth, one of 18, 34 (basic blocks), 50, 101,
            152 (bottlenecks). R-Mix uses 18. Defaults to 18.
        in_channels (int): Input image channels. Defaults to 3.
        base_channels (int): Channels of the stem and of the first stage's
            convolutions. Defaults to 64.
        stem_stride (int): Stride of the stem convolution (the official
            ``stride`` argument; 1 for CIFAR). Defaults to 1.
        out_indices (int | Sequence[int]): Stages (0-3, negative counts from
            the end) whose outputs are returned. Defaults to (3, ).
        init_cfg (dict | list[dict], optional): mmengine initialisation
            config. Defaults to None.

    Attributes:
        out_channels (int): Channels of the last stage output (512 for
            depth 18, 2048 for depth >= 50 with ``base_channels=64``).
        stage_channels (tuple[int]): Output channels of each stage.

    Example:
        >>> import torch
        >>> from mmpretrain.registry import MODELS
        >>> net = MODELS.build(dict(type='PreActResNet', depth=18))
        >>> net(torch.rand(2, 3, 32, 32))[-1].shape
        torch.Size([2, 512, 4, 4])
    """

    arch_settings = {
        18: (PreActBasicBlock, (2, 2, 2, 2)),
        34: (PreActBasicBlock, (3, 4, 6, 3)),
        50: (PreActBottleneck, (3, 4, 6, 3)),
        101: (PreActBottleneck, (3, 4, 23, 3)),
        152: (PreActBottleneck, (3, 8, 36, 3)),
    }

    def __init__(self,
                 depth: int = 18,
                 in_channels: int = 3,
                 base_channels: int = 64,
                 stem_stride: int = 1,
                 out_indices: Union[int, Sequence[int]] = (3, ),
                 init_cfg: Optional[Union[dict, List[dict]]] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if (isinstance(depth, bool) or not isinstance(depth, int)
                or depth not in self.arch_settings):
            raise ValueError(f'depth must be one of '
                             f'{sorted(self.arch_settings)}, got {depth!r}')
        check_int('in_channels', in_channels)
        check_int('base_channels', base_channels)
        check_int('stem_stride', stem_stride)
        block, stage_blocks = self.arch_settings[depth]
        self.depth = depth
        self.out_indices = normalize_out_indices(out_indices,
                                                 len(stage_blocks))

        self.conv1 = nn.Conv2d(
            in_channels,
            base_channels,
            3,
            stride=stem_stride,
            padding=1,
            bias=False)
        channels = base_channels
        stage_channels = []
        self.layer_names: List[str] = []
        for i, num_blocks in enumerate(stage_blocks):
            planes = base_channels * 2**i
            stride = 1 if i == 0 else 2
            blocks = []
            for j in range(num_blocks):
                blocks.append(block(channels, planes, stride if j == 0 else 1))
                channels = planes * block.expansion
            name = f'layer{i + 1}'
            self.add_module(name, nn.Sequential(*blocks))
            self.layer_names.append(name)
            stage_channels.append(channels)
        self.stage_channels: Tuple[int, ...] = tuple(stage_channels)
        self.out_channels: int = channels

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        """Compute the feature maps.

        Args:
            x (Tensor): Images of shape (N, in_channels, H, W).

        Returns:
            tuple[Tensor]: One (N, C_i, H_i, W_i) map per entry of
            ``out_indices``, in increasing stage order; the last stage map is
            (N, 512, H/8, W/8) for depth 18 with stride-1 stem.
        """
        out = self.conv1(x)
        outs = []
        for i, name in enumerate(self.layer_names):
            out = getattr(self, name)(out)
            if i in self.out_indices:
                outs.append(out)
            if i == self.out_indices[-1]:
                break
        return tuple(outs)
