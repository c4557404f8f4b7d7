"""ResNeXt for CIFAR, as trained in the R-Mix paper.

Architecture: `Aggregated Residual Transformations for Deep Neural Networks
<https://arxiv.org/abs/1611.05431>`_ (Xie et al., CVPR 2017), CIFAR variant
(three stages, 3x3 stem).

The layout follows the model that R-Mix (`Expeditious Saliency-guided Mix-up
through Random Gradient Thresholding <https://arxiv.org/abs/2212.04875>`_,
official code https://github.com/minhlong94/Random-Mixup, ``model/resnext.py``)
copies from Co-Mixup (https://github.com/snu-mllab/Co-Mixup,
``models/resnext.py``), used there as ResNeXt-29 4x24d. The code here is
written from that description; parameter names match the official module so
its checkpoints map one to one.
"""
import math
from typing import List, Optional, Sequence, Union

import torch.nn as nn
import torch.nn.functional as F
from mmpretrain.registry import MODELS
from torch import Tensor

from ...core.checks import check_int
from ._utils import (CifarBackbone, normalize_out_indices, official_init,
                     projection_shortcut)

__all__ = ['CifarResNeXt', 'ResNeXtBottleneck']


class ResNeXtBottleneck(nn.Module):
    """Post-activation ResNeXt bottleneck (type C, grouped 3x3 convolution).

    conv1x1-BN-ReLU, grouped conv3x3(stride)-BN-ReLU, conv1x1-BN, add the
    shortcut, ReLU. The inner width is ``cardinality * D`` with
    ``D = floor(planes * base_width / 64)``; the block outputs
    ``4 * planes`` channels. No convolution has a bias.

    Args:
        in_channels (int): Input channels.
        planes (int): Stage width before the x4 expansion.
        cardinality (int): Number of groups of the 3x3 convolution.
        base_width (int): Width of one group at ``planes = 64``.
        stride (int): Stride of the 3x3 convolution. Defaults to 1.
        downsample (nn.Module, optional): Projection applied to the
            shortcut; identity when None. Defaults to None.
    """

    expansion = 4

    def __init__(self,
                 in_channels: int,
                 planes: int,
                 cardinality: int,
                 base_width: int,
                 stride: int = 1,
                 downsample: Optional[nn.Module] = None) -> None:
        super().__init__()
        width = int(math.floor(planes * base_width / 64.0)) * cardinality
        out_channels = planes * self.expansion
        self.conv_reduce = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn_reduce = nn.BatchNorm2d(width)
        self.conv_conv = nn.Conv2d(
            width,
            width,
            3,
            stride=stride,
            padding=1,
            groups=cardinality,
            bias=False)
        self.bn = nn.BatchNorm2d(width)
        self.conv_expand = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn_expand = nn.BatchNorm2d(out_channels)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        """Run the block on ``x`` of shape (N, C, H, W)."""
        out = F.relu(self.bn_reduce(self.conv_reduce(x)))
        out = F.relu(self.bn(self.conv_conv(out)))
        out = self.bn_expand(self.conv_expand(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


@MODELS.register_module()
class CifarResNeXt(CifarBackbone):
    """ResNeXt-depth (cardinality x base_width d) for 32x32 inputs.

    Proposed in `Aggregated Residual Transformations for Deep Neural Networks
    <https://arxiv.org/abs/1611.05431>`_. This is the CIFAR model used by
    `R-Mix <https://arxiv.org/abs/2212.04875>`_ (official code
    https://github.com/minhlong94/Random-Mixup, ``model/resnext.py``, itself
    from https://github.com/snu-mllab/Co-Mixup; ``resnext29_4_24`` there):
    stem = bias-free 3x3 convolution with 64 filters, stride 1, + BN + ReLU;
    then three stages of ``(depth - 2) / 9`` bottlenecks with
    ``planes = 64, 128, 256`` (outputs 256, 512, 1024 channels) and strides
    (1, 2, 2). A stage's first block projects the shortcut with a 1x1
    convolution + BN. The last stage output (already ReLU-ed) is returned;
    the official head pools it with ``AvgPool2d(8)``, which equals global
    average pooling on the 8x8 map of a 32x32 input.

    Initialisation follows the official code and is applied at construction:
    convolutions ~ N(0, 2 / (k * k * out_channels)), BN weight 1, bias 0.
    ``init_cfg`` (applied by ``init_weights``) can override it.

    Args:
        depth (int): Network depth, ``9n + 2`` with ``n >= 1`` (e.g. 29, 38,
            47, 56, 101). Defaults to 29.
        cardinality (int): Number of groups. Defaults to 4.
        base_width (int): Per-group width at ``planes = 64`` (the ``d`` of
            "4x24d"). Defaults to 24.
        in_channels (int): Input image channels. Defaults to 3.
        out_indices (int | Sequence[int]): Stages (0-2, negative counts from
            the end) whose outputs are returned. Defaults to (2, ).
        init_cfg (dict | list[dict], optional): mmengine initialisation
            config. Defaults to None.

    Attributes:
        out_channels (int): Channels of the last stage (1024).
        stage_channels (tuple[int]): Output channels of each stage.

    Example:
        >>> import torch
        >>> from mmpretrain.registry import MODELS
        >>> net = MODELS.build(dict(type='CifarResNeXt', depth=29,
        ...                         cardinality=4, base_width=24))
        >>> net(torch.rand(2, 3, 32, 32))[-1].shape
        torch.Size([2, 1024, 8, 8])
    """

    def __init__(self,
                 depth: int = 29,
                 cardinality: int = 4,
                 base_width: int = 24,
                 in_channels: int = 3,
                 out_indices: Union[int, Sequence[int]] = (2, ),
                 init_cfg: Optional[Union[dict, List[dict]]] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        allowed_depth = '9n + 2 with n >= 1, e.g. 29, 38, 47, 56, 101'
        check_int('depth', depth, 11)
        if (depth - 2) % 9 != 0:
            raise ValueError(f'`depth` must be {allowed_depth}, got {depth}')
        check_int('cardinality', cardinality, 1)
        check_int('base_width', base_width, 1)
        check_int('in_channels', in_channels, 1)
        self.depth = depth
        self.cardinality = cardinality
        self.base_width = base_width
        self.out_indices = normalize_out_indices(out_indices, 3)

        num_blocks = (depth - 2) // 9
        self.conv_1_3x3 = nn.Conv2d(
            in_channels, 64, 3, stride=1, padding=1, bias=False)
        self.bn_1 = nn.BatchNorm2d(64)
        channels = 64
        for i, planes in enumerate((64, 128, 256)):
            stride = 1 if i == 0 else 2
            out_channels = planes * ResNeXtBottleneck.expansion
            downsample = projection_shortcut(
                channels, out_channels, stride, norm=True)
            blocks = [
                ResNeXtBottleneck(channels, planes, cardinality, base_width,
                                  stride, downsample)
            ]
            for _ in range(1, num_blocks):
                blocks.append(
                    ResNeXtBottleneck(out_channels, planes, cardinality,
                                      base_width))
            channels = out_channels
            self.add_stage(blocks, channels, prefix='stage_')
        official_init(self)

    def stem(self, x: Tensor) -> Tensor:
        """The stem: conv3x3 + BN + ReLU."""
        return F.relu(self.bn_1(self.conv_1_3x3(x)))
