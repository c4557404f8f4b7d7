"""What the CIFAR backbones share (private): the base class with the
stage bookkeeping and the forward pass, the ``out_indices`` rule, the
BN-then-conv layer stack of the pre-activation and pyramidal blocks, the
1x1 projection shortcut and the official He-normal initialisation.

The argument checks themselves are :mod:`mixplugins.core.checks`.
"""
import math
from typing import List, Optional, Sequence, Tuple, Union

import torch.nn as nn
import torch.nn.functional as F
from mmpretrain.models.backbones.base_backbone import BaseBackbone
from torch import Tensor

from ...core.checks import check_int, check_sequence


class CifarBackbone(BaseBackbone):
    """mmpretrain ``BaseBackbone`` with the stages and forward pass of the
    CIFAR backbones.

    A subclass builds its stem, then calls :meth:`add_stage` once per stage
    (in order), and overrides :meth:`stem` and, when something follows the
    last stage (a final BN + ReLU), :meth:`after_last_stage`.
    :meth:`forward` returns the outputs of the stages in ``out_indices``
    (set by the subclass, see :func:`normalize_out_indices`) and stops after
    the last of them.

    ``train()`` returns ``self``: mmpretrain's ``BaseBackbone.train`` returns
    None, which breaks the ``nn.Module`` idiom ``net = net.eval()``.

    Attributes:
        layer_names (list[str]): Names of the stage submodules, in order.
        stage_channels (tuple[int]): Output channels of each stage.
        out_channels (int): Channels of the last stage output.
    """

    out_indices: Tuple[int, ...]

    def __init__(self,
                 init_cfg: Optional[Union[dict, List[dict]]] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.layer_names: List[str] = []
        self.stage_channels: Tuple[int, ...] = ()

    @property
    def out_channels(self) -> int:
        """Channels of the last stage output."""
        return self.stage_channels[-1]

    def add_stage(self,
                  blocks: Sequence[nn.Module],
                  channels: int,
                  prefix: str = 'layer') -> None:
        """Register the next stage as ``f'{prefix}{index + 1}'``.

        Args:
            blocks (Sequence[nn.Module]): The stage's blocks, in order.
            channels (int): Channels of the stage output.
            prefix (str): Name prefix (the official modules' naming).
                Defaults to ``'layer'``.
        """
        name = f'{prefix}{len(self.layer_names) + 1}'
        self.add_module(name, nn.Sequential(*blocks))
        self.layer_names.append(name)
        self.stage_channels += (channels, )

    def stem(self, x: Tensor) -> Tensor:
        """The layers before the first stage."""
        raise NotImplementedError

    def after_last_stage(self, out: Tensor) -> Tensor:
        """What follows the last stage (nothing by default)."""
        return out

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        """Compute the feature maps.

        Args:
            x (Tensor): Images of shape (N, in_channels, H, W).

        Returns:
            tuple[Tensor]: One (N, C_i, H_i, W_i) map per entry of
            ``out_indices``, in increasing stage order; the last stage's is
            taken after :meth:`after_last_stage`. The shapes are given in
            each backbone's docstring.
        """
        out = self.stem(x)
        outs = []
        last = len(self.layer_names) - 1
        for i, name in enumerate(self.layer_names):
            out = getattr(self, name)(out)
            if i == last:
                out = self.after_last_stage(out)
            if i in self.out_indices:
                outs.append(out)
            if i == self.out_indices[-1]:
                break
        return tuple(outs)

    def train(self, mode: bool = True) -> 'CifarBackbone':
        """Set the training mode.

        Args:
            mode (bool): Training (True) or evaluation (False) mode.
                Defaults to True.

        Returns:
            CifarBackbone: ``self``.
        """
        super().train(mode)
        return self


def normalize_out_indices(out_indices: Union[int, Sequence[int]],
                          num_stages: int) -> Tuple[int, ...]:
    """Validate ``out_indices`` and map negative indices to positive ones.

    Args:
        out_indices (int | Sequence[int]): Stage indices whose outputs the
            backbone returns; negative values count from the last stage.
        num_stages (int): Number of stages of the backbone.

    Returns:
        tuple[int]: Sorted, de-duplicated, non-negative stage indices.

    Raises:
        TypeError: If ``out_indices`` is not an int or a sequence.
        ValueError: If it is empty or an entry is not an int in
            ``[-num_stages, num_stages - 1]``.
    """
    if isinstance(out_indices, int):  # a bool is refused by check_int
        out_indices = (out_indices, )
    indices = check_sequence('out_indices', out_indices, check_int,
                             -num_stages, num_stages - 1)
    return tuple(sorted({index % num_stages for index in indices}))


class PreActStack(nn.Module):
    """The BN-then-conv layers of a pre-activation or pyramidal block.

    Registers ``bn1, conv1, bn2, conv2`` (basic: 3x3 with ``stride``,
    ``in_channels -> planes``, then 3x3, ``planes -> out_channels``) or
    ``bn1, conv1, bn2, conv2, bn3, conv3`` (bottleneck: 1x1
    ``in_channels -> planes``, 3x3 with ``stride``, 1x1
    ``planes -> out_channels``); every ``bn_k`` normalises the input of
    ``conv_k``. No convolution has a bias. A subclass sets ``bottleneck``
    and adds its shortcut; its ``forward`` runs ``bn1``/``conv1`` itself
    (they differ between block families) and the rest with
    :meth:`inner_convs`.

    Args:
        in_channels (int): Input channels.
        planes (int): Channels of the inner convolutions.
        out_channels (int): Output channels of the last convolution.
        stride (int): Stride of the 3x3 convolution (the first one of a basic
            block).
    """

    bottleneck: bool = False

    def __init__(self, in_channels: int, planes: int, out_channels: int,
                 stride: int) -> None:
        super().__init__()
        if self.bottleneck:
            convs = [(in_channels, planes, 1, 1), (planes, planes, 3, stride),
                     (planes, out_channels, 1, 1)]
        else:
            convs = [(in_channels, planes, 3, stride),
                     (planes, out_channels, 3, 1)]
        for k, (c_in, c_out, size, step) in enumerate(convs, 1):
            self.add_module(f'bn{k}', nn.BatchNorm2d(c_in))
            self.add_module(
                f'conv{k}',
                nn.Conv2d(
                    c_in,
                    c_out,
                    size,
                    stride=step,
                    padding=size // 2,
                    bias=False))
        self.num_convs = len(convs)

    def inner_convs(self, out: Tensor) -> Tensor:
        """``conv_k(relu(bn_k(out)))`` for ``k = 2 .. num_convs``."""
        for k in range(2, self.num_convs + 1):
            bn, conv = getattr(self, f'bn{k}'), getattr(self, f'conv{k}')
            out = conv(F.relu(bn(out)))
        return out


def projection_shortcut(in_channels: int,
                        out_channels: int,
                        stride: int,
                        bias: bool = False,
                        norm: bool = False) -> Optional[nn.Sequential]:
    """A 1x1 convolution (+ BN when ``norm``) when the shape changes.

    Args:
        in_channels (int): Block input channels.
        out_channels (int): Block output channels.
        stride (int): Block stride.
        bias (bool): Whether the convolution has a bias. Defaults to False.
        norm (bool): Append a BN. Defaults to False.

    Returns:
        nn.Sequential | None: None (identity shortcut) when ``stride == 1``
        and the channels match.
    """
    if stride == 1 and in_channels == out_channels:
        return None
    layers = [
        nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=bias)
    ]
    if norm:
        layers.append(nn.BatchNorm2d(out_channels))
    return nn.Sequential(*layers)


def official_init(module: nn.Module) -> None:
    """He-normal (fan-out) convolutions, unit BN, as the official code.

    Convolutions ~ N(0, 2 / (k * k * out_channels)); BN weight 1, bias 0.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
