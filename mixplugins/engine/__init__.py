"""mmengine-level pieces shared by every framework (no mmpretrain, mmdet or
mmseg import): RecursiveMix's history and its det/seg paste step, exact
resume, the mixing visualisation, the schedulers and hooks of the published
recipes, the CPU AMP wrapper and the checkpoint patches.

Everything here registers in mmengine's root registries (``HOOKS``,
``PARAM_SCHEDULERS``, ``OPTIM_WRAPPERS``), which the mmpretrain, mmdet and
mmseg registries fall back to, so their configs find the same type names.
"""
from .amp import CPUAmpOptimWrapper
from .exact_resume import ExactResumeHook
from .history import RecursiveMixHistory
from .hooks import DataloaderSwitchHook, PiecewiseLinearLRHook
from .paste_history import PasteHistoryAugment
from .schedulers import OneCycleMomentum, SafeOneCycleLR
from .visualization import MixVisualizationHook

__all__ = [
    'CPUAmpOptimWrapper', 'ExactResumeHook', 'RecursiveMixHistory',
    'DataloaderSwitchHook', 'PiecewiseLinearLRHook', 'PasteHistoryAugment',
    'OneCycleMomentum', 'SafeOneCycleLR', 'MixVisualizationHook'
]
