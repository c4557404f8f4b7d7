"""mmpretrain adapters: batch augments, the classifier that serves them,
CIFAR backbones, schedulers and transforms of the published recipes."""
from .backbones import *  # noqa: F401,F403
from .backbones import __all__ as _backbones
from .base import ModelBoundAugment
from .classifier import MixImageClassifier
from .hooks import DataloaderSwitchHook, PiecewiseLinearLRHook
from .recursivemix import RecursiveMix, RecursiveMixHistory
from .rlmix import RLMix
from .rmix import RMix
from .schedulers import OneCycleMomentum, SafeOneCycleLR
from .transforms import LerpColorJitter, PCALighting

__all__ = [
    'ModelBoundAugment', 'MixImageClassifier', 'RMix', 'RLMix', 'RecursiveMix',
    'RecursiveMixHistory', 'DataloaderSwitchHook', 'PiecewiseLinearLRHook',
    'OneCycleMomentum', 'SafeOneCycleLR', 'LerpColorJitter', 'PCALighting'
] + _backbones
