"""PyramidNet for CIFAR, as trained in the RecursiveMix paper.

Architecture: `Deep Pyramidal Residual Networks
<https://arxiv.org/abs/1610.02915>`_ (Han, Kim and Kim, CVPR 2017).

The layout follows the CIFAR branch of ``models_cifar/pyramidnet.py`` in the
official code (https://github.com/implus/RecursiveMix-pytorch) of
`RecursiveMix: Mixed Learning with History
<https://arxiv.org/abs/2203.06844>`_ (Yang et al., NeurIPS 2022), whose
CIFAR-10 model is ``pyramidnet_200_240`` (bottleneck, depth 200, widening
factor alpha 240). The code here is written from that description;
parameter names match the official module so its checkpoints map one to one
(the official ``fc`` / ``fc_roi`` heads live outside the backbone here).
"""
from typing import List, Optional, Sequence, Union

import torch.nn as nn
import torch.nn.functional as F
from mmpretrain.registry import MODELS
from torch import Tensor

from ...core.checks import check_bool, check_int, check_number
from ._utils import (CifarBackbone, PreActStack, normalize_out_indices,
                     official_init)

__all__ = ['PyramidNet', 'PyramidBasicBlock', 'PyramidBottleneck']


def _add_shortcut(out: Tensor, identity: Tensor) -> Tensor:
    """Add ``identity`` to ``out``, zero-padding its missing channels.

    Args:
        out (Tensor): Residual branch, (N, C_out, H, W).
        identity (Tensor): Shortcut, (N, C_in, H, W) with ``C_in <= C_out``.

    Returns:
        Tensor: ``out + [identity, 0]`` of shape (N, C_out, H, W).
    """
    extra = out.shape[1] - identity.shape[1]
    if extra > 0:
        identity = F.pad(identity, (0, 0, 0, 0, 0, extra))
    return out + identity


class _PyramidBlock(PreActStack):
    """A pyramidal block: BN-conv, the other (BN-ReLU-conv)s of
    :class:`PreActStack`, then a BN; add the shortcut.

    The shortcut is the identity, average-pooled when ``downsample`` is
    given, and zero-padded to the output width. No convolution has a bias.

    Args:
        in_channels (int): Input channels.
        planes (int): Inner width; the block outputs
            ``outchannel_ratio * planes`` channels.
        stride (int): Stride of the 3x3 convolution. Defaults to 1.
        downsample (nn.Module, optional): Parameter-free pooling applied to
            the shortcut. Defaults to None.
    """

    outchannel_ratio = 1

    def __init__(self,
                 in_channels: int,
                 planes: int,
                 stride: int = 1,
                 downsample: Optional[nn.Module] = None) -> None:
        out_channels = planes * self.outchannel_ratio
        super().__init__(in_channels, planes, out_channels, stride)
        # bn3 (basic) / bn4 (bottleneck), after the last convolution
        self.add_module(f'bn{self.num_convs + 1}',
                        nn.BatchNorm2d(out_channels))
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        """Run the block on ``x`` of shape (N, C, H, W)."""
        out = self.inner_convs(self.conv1(self.bn1(x)))
        out = getattr(self, f'bn{self.num_convs + 1}')(out)
        identity = x if self.downsample is None else self.downsample(x)
        return _add_shortcut(out, identity)


class PyramidBasicBlock(_PyramidBlock):
    """PyramidNet basic block: BN-conv3x3(stride)-BN-ReLU-conv3x3-BN.

    Args: see :class:`_PyramidBlock`.
    """

    outchannel_ratio = 1
    bottleneck = False


class PyramidBottleneck(_PyramidBlock):
    """PyramidNet bottleneck: BN-conv1x1, BN-ReLU-conv3x3(stride),
    BN-ReLU-conv1x1 (x4 wide), BN.

    Args: see :class:`_PyramidBlock`.
    """

    outchannel_ratio = 4
    bottleneck = True


@MODELS.register_module()
class PyramidNet(CifarBackbone):
    """PyramidNet for 32x32 inputs (RecursiveMix CIFAR model).

    Proposed in `Deep Pyramidal Residual Networks
    <https://arxiv.org/abs/1610.02915>`_. This is the CIFAR model used by
    `RecursiveMix <https://arxiv.org/abs/2203.06844>`_ (official code
    https://github.com/implus/RecursiveMix-pytorch,
    ``models_cifar/pyramidnet.py``, ``pyramidnet_200_240``).

    Stem: bias-free 3x3 convolution with 16 filters, stride 1, + BN (no
    ReLU). Then three stages of ``n`` blocks (``n = (depth - 2) / 9`` for
    bottlenecks, ``(depth - 2) / 6`` for basic blocks) with strides
    (1, 2, 2). The width grows by ``alpha / (3 n)`` per block: block ``k``
    (1-based, over all stages) has ``round(16 + k * alpha / (3 n))`` inner
    channels (Python rounding of the running float sum, as the official
    code), times 4 at a bottleneck's output. Shortcuts are identities,
    2x2 average-pooled (``ceil_mode=True``) on stride-2 blocks and
    zero-padded in channels. After the last stage: BN + ReLU
    (``bn_final``); that map is returned (8x8 for a 32x32 input, 1024
    channels for depth 200 / alpha 240 with bottlenecks). It is the map that
    RecursiveMix RoI-aligns (spatial scale 1/4).

    Initialisation follows the official code and is applied at construction:
    convolutions ~ N(0, 2 / (k * k * out_channels)), BN weight 1, bias 0.
    ``init_cfg`` (applied by ``init_weights``) can override it.

    Args:
        depth (int): Network depth: ``9n + 2`` with bottlenecks (e.g. 164,
            200, 272), ``6n + 2`` with basic blocks (e.g. 110), ``n >= 1``.
            Defaults to 200.
        alpha (float): Widening factor, total channel increase over all
            blocks, >= 0. Defaults to 240.
        bottleneck (bool): Use bottleneck blocks. Defaults to True.
        in_channels (int): Input image channels. Defaults to 3.
        out_indices (int | Sequence[int]): Stages (0-2, negative counts from
            the end) whose outputs are returned; the last stage output is
            taken after ``bn_final`` + ReLU. Defaults to (2, ).
        init_cfg (dict | list[dict], optional): mmengine initialisation
            config. Defaults to None.

    Attributes:
        out_channels (int): Channels of the last stage (1024 for the
            default depth 200, alpha 240).
        stage_channels (tuple[int]): Output channels of each stage.

    Example:
        >>> import torch
        >>> from mmpretrain.registry import MODELS
        >>> net = MODELS.build(dict(type='PyramidNet', depth=200, alpha=240))
        >>> net(torch.rand(1, 3, 32, 32))[-1].shape
        torch.Size([1, 1024, 8, 8])
    """

    def __init__(self,
                 depth: int = 200,
                 alpha: float = 240,
                 bottleneck: bool = True,
                 in_channels: int = 3,
                 out_indices: Union[int, Sequence[int]] = (2, ),
                 init_cfg: Optional[Union[dict, List[dict]]] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        check_bool('bottleneck', bottleneck)
        if bottleneck:
            block, step = PyramidBottleneck, 9
            allowed_depth = '9n + 2 with n >= 1 (bottleneck), e.g. 164, 200'
        else:
            block, step = PyramidBasicBlock, 6
            allowed_depth = '6n + 2 with n >= 1 (basic blocks), e.g. 110'
        check_int('depth', depth, step + 2)
        if (depth - 2) % step != 0:
            raise ValueError(f'`depth` must be {allowed_depth}, got {depth}')
        alpha = check_number('alpha', alpha, 0.0)
        check_int('in_channels', in_channels, 1)
        self.depth = depth
        self.alpha = alpha
        self.bottleneck = bottleneck
        self.out_indices = normalize_out_indices(out_indices, 3)

        num_blocks = (depth - 2) // step
        addrate = alpha / (3 * num_blocks)
        self.conv1 = nn.Conv2d(
            in_channels, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        channels = 16
        # Running float sum, accumulated in the same order as the official
        # code so that round() makes the same choices.
        featuremap_dim = 16.0
        for i in range(3):
            stride = 1 if i == 0 else 2
            blocks = []
            for j in range(num_blocks):
                featuremap_dim = featuremap_dim + addrate
                planes = int(round(featuremap_dim))
                downsample = None
                if j == 0 and stride != 1:
                    downsample = nn.AvgPool2d(2, stride=2, ceil_mode=True)
                blocks.append(
                    block(channels, planes, stride if j == 0 else 1,
                          downsample))
                channels = planes * block.outchannel_ratio
            self.add_stage(blocks, channels)
        self.bn_final = nn.BatchNorm2d(channels)
        official_init(self)

    def stem(self, x: Tensor) -> Tensor:
        """The stem: conv3x3 + BN (no ReLU)."""
        return self.bn1(self.conv1(x))

    def after_last_stage(self, out: Tensor) -> Tensor:
        """``relu(bn_final(out))``."""
        return F.relu(self.bn_final(out))
