"""CIFAR backbones of the R-Mix and RecursiveMix papers (mmpretrain MODELS).

R-Mix (https://github.com/minhlong94/Random-Mixup) trains PreActResNet-18,
WRN-16-8, WRN-28-10 and ResNeXt-29 4x24d; RecursiveMix
(https://github.com/implus/RecursiveMix-pytorch) trains PyramidNet-200
(alpha 240) on CIFAR-10.
"""
from .demo_cnn import DemoCNN
from .preact_resnet import PreActResNet
from .pyramidnet import PyramidNet
from .resnext import CifarResNeXt
from .wide_resnet import WideResNet

__all__ = [
    'PreActResNet', 'WideResNet', 'CifarResNeXt', 'PyramidNet', 'DemoCNN'
]
