"""A tiny VGG-style CNN for the CPU demo on 32 px digits (not from a paper).

The paper backbones (PreActResNet-18, PyramidNet, ...) take minutes per epoch
on two CPU cores; this one trains scikit-learn's digits to > 95% top-1 in a
few seconds per epoch, so ``tools/demo.py`` can train every method. It keeps
what the mixing methods need from a backbone: a tuple of 4-D feature maps
whose last one is the map before global pooling (R-Mix differentiates
through it; RecursiveMix RoI-aligns its consistency head on it), and an
``out_channels`` attribute.
"""
from typing import List, Sequence, Tuple, Union

import torch.nn as nn
from mmpretrain.models.backbones.base_backbone import BaseBackbone
from mmpretrain.registry import MODELS
from torch import Tensor

from ...core.checks import check_int, check_sequence
from ._utils import normalize_out_indices

__all__ = ['DemoCNN']


@MODELS.register_module()
class DemoCNN(BaseBackbone):
    """Stages of two (conv3x3-BN-ReLU) layers, halved by max-pooling.

    Stage ``i`` runs at ``1 / 2**i`` of the input resolution: with the
    default three stages a 32 x 32 input gives feature maps of 32, 16 and
    8 px (a total stride of 4, as CIFAR PyramidNet's).

    Args:
        in_channels (int): Input image channels. Defaults to 3.
        widths (Sequence[int]): Channels of each stage. Defaults to
            (16, 32, 64).
        out_indices (int | Sequence[int]): Stages whose outputs are returned,
            negative values counting from the last. Defaults to -1 (the last
            feature map only).
        init_cfg (dict | list[dict], optional): mmengine initialisation
            config. Defaults to None (PyTorch's default initialisation).
    """

    def __init__(self,
                 in_channels: int = 3,
                 widths: Sequence[int] = (16, 32, 64),
                 out_indices: Union[int, Sequence[int]] = -1,
                 init_cfg: Union[dict, List[dict], None] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        check_int('in_channels', in_channels, 1)
        widths = check_sequence('widths', widths, check_int, 1)
        self.out_indices = normalize_out_indices(out_indices, len(widths))
        self.widths = widths
        self.stages = nn.ModuleList()
        channels = in_channels
        for i, width in enumerate(widths):
            layers: List[nn.Module] = [nn.MaxPool2d(2)] if i > 0 else []
            for c_in in (channels, width):
                layers += [
                    nn.Conv2d(c_in, width, 3, padding=1, bias=False),
                    nn.BatchNorm2d(width),
                    nn.ReLU(inplace=True)
                ]
            self.stages.append(nn.Sequential(*layers))
            channels = width
        #: Channels of the last returned feature map.
        self.out_channels = self.widths[self.out_indices[-1]]

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        """Run the stages on ``x`` (N, C, H, W).

        Returns:
            tuple[Tensor]: The outputs of the stages in ``out_indices``,
            each (N, widths[i], H / 2**i, W / 2**i).
        """
        outs = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)
