"""mixplugins: R-Mix, RL-Mix and RecursiveMix for OpenMMLab 2.0.

``import mixplugins`` (what ``custom_imports`` does) registers every adapter
whose host framework is importable -- mmpretrain (classification), mmdet
(detection), mmseg (segmentation) -- and skips the others; ``missing()``
says which were skipped and why. ``mixplugins.core`` needs only torch.
"""
import importlib
from typing import Dict

from .version import __version__

__all__ = ['__version__', 'missing', 'require']

_ADAPTERS = {
    'classification': 'mmpretrain',
    'detection': 'mmdet',
    'segmentation': 'mmseg',
}
_MISSING: Dict[str, str] = {}


def _register_adapters() -> None:
    for adapter, framework in _ADAPTERS.items():
        try:
            importlib.import_module(framework)
        except ImportError as e:
            _MISSING[adapter] = f'{framework} is not importable ({e})'
            continue
        try:
            importlib.import_module(f'{__name__}.{adapter}')
        except ModuleNotFoundError as e:
            if e.name and e.name.startswith(__name__):
                continue  # adapter not written yet
            _MISSING[adapter] = f'{framework} is installed but {e}'


def missing() -> Dict[str, str]:
    """Adapters that were not registered, with the reason."""
    return dict(_MISSING)


def require(adapter: str) -> None:
    """Raise a clear ``ImportError`` if ``adapter`` could not be registered.

    Args:
        adapter (str): ``'classification'``, ``'detection'`` or
            ``'segmentation'``.
    """
    if adapter not in _ADAPTERS:
        raise ValueError(f'`adapter` must be one of {tuple(_ADAPTERS)}, got '
                         f'{adapter!r}')
    if adapter in _MISSING:
        raise ImportError(
            f'mixplugins.{adapter} is unavailable: {_MISSING[adapter]}. '
            f'Install it with `bash tools/install.sh` (see README).')


def _install_patches() -> None:
    try:
        from .utils.checkpoint import install_patches
    except ImportError:
        return
    install_patches()


_install_patches()
_register_adapters()
# MixVisualizationHook and ExactResumeHook in mmengine's HOOKS,
# CPUAmpOptimWrapper in its OPTIM_WRAPPERS
for _module in ('visualization', 'exact_resume', 'utils.amp'):
    try:
        importlib.import_module(f'{__name__}.{_module}')
    except ImportError as e:  # a core-only install without mmengine
        _MISSING[_module] = f'mmengine is not importable ({e})'
