"""Wide ResNet for CIFAR, as trained in the R-Mix paper.

Architecture: `Wide Residual Networks <https://arxiv.org/abs/1605.07146>`_
(Zagoruyko and Komodakis, BMVC 2016).

The layout follows the model that R-Mix (`Expeditious Saliency-guided Mix-up
through Random Gradient Thresholding <https://arxiv.org/abs/2212.04875>`_,
official code https://github.com/minhlong94/Random-Mixup,
``model/wideresnet.py``) copies from Co-Mixup
(https://github.com/snu-mllab/Co-Mixup, ``models/wide_resnet.py``): every
convolution has a bias, dropout is removed, the stride of a block sits on its
second convolution, and the final BN uses ``momentum=0.9``. The code here is
written from that description; parameter names match the official module so
its checkpoints map one to one.
"""
from typing import List, Optional, Sequence, Union

import torch.nn as nn
import torch.nn.functional as F
from mmpretrain.registry import MODELS
from torch import Tensor

from ...core.checks import check_fraction, check_int
from ._utils import CifarBackbone, normalize_out_indices, projection_shortcut

__all__ = ['WideResNet', 'WideBasicBlock']


class WideBasicBlock(nn.Module):
    """Pre-activation wide block: BN-ReLU-conv3x3, BN-ReLU-conv3x3(stride).

    All convolutions carry a bias. When the shape changes, the shortcut is a
    1x1 convolution (with bias) on the raw input ``x``; otherwise identity.

    Args:
        in_channels (int): Input channels.
        planes (int): Output channels of both 3x3 convolutions.
        stride (int): Stride of the second 3x3 convolution. Defaults to 1.
    """

    def __init__(self, in_channels: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, planes, 3, padding=1, bias=True)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(
            planes, planes, 3, stride=stride, padding=1, bias=True)
        self.shortcut = projection_shortcut(
            in_channels, planes, stride, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        """Run the block on ``x`` of shape (N, C, H, W)."""
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        identity = x if self.shortcut is None else self.shortcut(x)
        return out + identity


@MODELS.register_module()
class WideResNet(CifarBackbone):
    """Wide ResNet WRN-depth-k for 32x32 inputs (R-Mix / Co-Mixup variant).

    Proposed in `Wide Residual Networks <https://arxiv.org/abs/1605.07146>`_.
    This is the CIFAR model used by `R-Mix <https://arxiv.org/abs/2212.04875>`_
    (official code https://github.com/minhlong94/Random-Mixup,
    ``model/wideresnet.py``, itself from
    https://github.com/snu-mllab/Co-Mixup): a 3x3 stem convolution with 16
    filters, then three stages of ``n = (depth - 4) / 6`` blocks with
    ``(16, 32, 64) * widen_factor`` channels and strides (1, 2, 2), then
    BN + ReLU. R-Mix trains WRN-16-8 and WRN-28-10.

    Differences from the WRN paper kept from the official code: all
    convolutions (stem, blocks, shortcuts) have a bias, there is no dropout,
    and the final BN is built with ``momentum=0.9``. In PyTorch semantics
    that means ``running = 0.1 * running + 0.9 * batch_stat``, i.e. the
    running statistics follow almost only the last batch (the other BNs use
    the default 0.1). Weights keep PyTorch's default initialisation, as in
    the official code (its ``conv_init`` is never called); ``init_cfg`` can
    override it.

    Args:
        depth (int): Network depth, ``6n + 4`` with ``n >= 1`` (e.g. 16, 22,
            28, 40). Defaults to 28.
        widen_factor (int): Width multiplier ``k``. Defaults to 10.
        in_channels (int): Input image channels. Defaults to 3.
        stem_stride (int): Stride of the stem convolution (the official
            ``stride`` argument; 1 for CIFAR). Defaults to 1.
        final_bn_momentum (float): ``momentum`` of the final BN, in PyTorch
            semantics (weight of the new batch statistic), in [0, 1]. 0.9 as
            in the official code; 0.1 is the PyTorch default. Defaults to
            0.9.
        out_indices (int | Sequence[int]): Stages (0-2, negative counts from
            the end) whose outputs are returned; the last stage output is
            taken after the final BN + ReLU. Defaults to (2, ).
        init_cfg (dict | list[dict], optional): mmengine initialisation
            config. Defaults to None.

    Attributes:
        out_channels (int): Channels of the last stage, ``64 * widen_factor``.
        stage_channels (tuple[int]): Output channels of each stage.

    Example:
        >>> import torch
        >>> from mmpretrain.registry import MODELS
        >>> net = MODELS.build(
        ...     dict(type='WideResNet', depth=16, widen_factor=8))
        >>> net(torch.rand(2, 3, 32, 32))[-1].shape
        torch.Size([2, 512, 8, 8])
    """

    def __init__(self,
                 depth: int = 28,
                 widen_factor: int = 10,
                 in_channels: int = 3,
                 stem_stride: int = 1,
                 final_bn_momentum: float = 0.9,
                 out_indices: Union[int, Sequence[int]] = (2, ),
                 init_cfg: Optional[Union[dict, List[dict]]] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        allowed_depth = '6n + 4 with n >= 1, e.g. 16, 22, 28, 40'
        check_int('depth', depth, 10)
        if (depth - 4) % 6 != 0:
            raise ValueError(f'`depth` must be {allowed_depth}, got {depth}')
        check_int('widen_factor', widen_factor, 1)
        check_int('in_channels', in_channels, 1)
        check_int('stem_stride', stem_stride, 1)
        check_fraction('final_bn_momentum', final_bn_momentum)
        self.depth = depth
        self.widen_factor = widen_factor
        self.out_indices = normalize_out_indices(out_indices, 3)

        num_blocks = (depth - 4) // 6
        self.conv1 = nn.Conv2d(
            in_channels, 16, 3, stride=stem_stride, padding=1, bias=True)
        channels = 16
        for i, width in enumerate((16, 32, 64)):
            planes = width * widen_factor
            blocks = []
            for j in range(num_blocks):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(WideBasicBlock(channels, planes, stride))
                channels = planes
            self.add_stage(blocks, channels)
        # Same attribute name as the official code, for checkpoint mapping.
        self.bn1 = nn.BatchNorm2d(channels, momentum=float(final_bn_momentum))

    def stem(self, x: Tensor) -> Tensor:
        """The stem convolution."""
        return self.conv1(x)

    def after_last_stage(self, out: Tensor) -> Tensor:
        """``relu(bn1(out))``, the final BN + ReLU."""
        return F.relu(self.bn1(out))
