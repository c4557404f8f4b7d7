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
from typing import List, Optional, Sequence, Union

import torch.nn as nn
import torch.nn.functional as F
from mmpretrain.registry import MODELS
from torch import Tensor

from ...core.checks import check_choice, check_int
from ._utils import (CifarBackbone, PreActStack, normalize_out_indices,
                     projection_shortcut)

__all__ = ['PreActResNet', 'PreActBasicBlock', 'PreActBottleneck']


class _PreActBlock(PreActStack):
    """A pre-activation block: :class:`PreActStack` plus its shortcut.

    When the shape changes, the shortcut is a bias-free 1x1 convolution
    applied to the pre-activated input ``relu(bn1(x))``; otherwise it is the
    identity on ``x``.

    Args:
        in_channels (int): Input channels.
        planes (int): Channels of the inner convolutions; the block outputs
            ``expansion * planes`` channels.
        stride (int): Stride of the 3x3 convolution. Defaults to 1.
    """

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int = 1) -> None:
        out_channels = planes * self.expansion
        super().__init__(in_channels, planes, out_channels, stride)
        self.shortcut = projection_shortcut(in_channels, out_channels, stride)

    def forward(self, x: Tensor) -> Tensor:
        """Run the block on ``x`` of shape (N, C, H, W)."""
        out = F.relu(self.bn1(x))
        identity = x if self.shortcut is None else self.shortcut(out)
        return self.inner_convs(self.conv1(out)) + identity


class PreActBasicBlock(_PreActBlock):
    """Pre-activation basic block: BN-ReLU-conv3x3(stride), BN-ReLU-conv3x3.

    Args: see :class:`_PreActBlock`.
    """

    expansion = 1
    bottleneck = False


class PreActBottleneck(_PreActBlock):
    """Pre-activation bottleneck: (BN-ReLU-conv) 1x1, 3x3 (stride), 1x1
    (x4 wide).

    Args: see :class:`_PreActBlock`.
    """

    expansion = 4
    bottleneck = True


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
        check_int('depth', depth)  # 18.0 == 18 would pass check_choice
        check_choice('depth', depth, sorted(self.arch_settings))
        check_int('in_channels', in_channels, 1)
        check_int('base_channels', base_channels, 1)
        check_int('stem_stride', stem_stride, 1)
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
        for i, num_blocks in enumerate(stage_blocks):
            planes = base_channels * 2**i
            stride = 1 if i == 0 else 2
            blocks = []
            for j in range(num_blocks):
                blocks.append(block(channels, planes, stride if j == 0 else 1))
                channels = planes * block.expansion
            self.add_stage(blocks, channels)

    def stem(self, x: Tensor) -> Tensor:
        """The stem convolution (no BN/ReLU after it)."""
        return self.conv1(x)
