"""mmpretrain adapters: batch augments, the classifier that serves them,
CIFAR backbones, the transforms of the published recipes and the
calibration metric."""
from .backbones import *  # noqa: F401,F403
from .backbones import __all__ as _backbones
from .base import ModelBoundAugment
from .classifier import MixImageClassifier
from .metrics import CalibrationError
from .recursivemix import RecursiveMix
from .rlmix import RLMix
from .rmix import RMix
from .transforms import LerpColorJitter, PCALighting

__all__ = [
    'ModelBoundAugment', 'MixImageClassifier', 'RMix', 'RLMix', 'RecursiveMix',
    'LerpColorJitter', 'PCALighting', 'CalibrationError'
] + _backbones
