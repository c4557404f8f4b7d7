"""mixplugins: R-Mix, RL-Mix and RecursiveMix for OpenMMLab 2.0.

``import mixplugins`` (what ``custom_imports`` does)

1. installs the mmengine patches listed in
   :data:`mixplugins.engine.patches.PATCHES` (each with the mmengine
   versions it applies to);
2. registers the mmengine-level pieces (:mod:`mixplugins.engine`: hooks,
   schedulers, the CPU AMP wrapper) in mmengine's registries;
3. registers every adapter whose host framework is importable -- mmpretrain
   (classification), mmdet (detection), mmseg (segmentation) -- and skips
   the others; :func:`missing` says which were skipped and why.

A framework (or a package it needs) that is not installed is skipped; an
error raised inside mixplugins is never hidden. ``mixplugins.core`` needs
only torch.
"""
import importlib
from typing import Dict

from .version import __version__

__all__ = ['__version__', 'missing', 'require', 'install_command']

_ADAPTERS = {
    'classification': 'mmpretrain',
    'detection': 'mmdet',
    'segmentation': 'mmseg',
}
_MISSING: Dict[str, str] = {}


def _import_missing(e: ImportError) -> bool:
    """Whether ``e`` says that a package outside mixplugins is absent."""
    name = getattr(e, 'name', None) or ''
    return name != __name__ and not name.startswith(__name__ + '.')


def _register() -> None:
    try:
        importlib.import_module('mmengine')
    except ImportError as e:
        for part in ('engine', *_ADAPTERS):
            _MISSING[part] = f'mmengine is not importable ({e})'
        return
    from .engine.patches import install_patches
    install_patches()
    importlib.import_module(f'{__name__}.engine')
    for adapter, framework in _ADAPTERS.items():
        try:
            importlib.import_module(framework)
        except ImportError as e:
            _MISSING[adapter] = f'{framework} is not importable ({e})'
            continue
        try:
            importlib.import_module(f'{__name__}.{adapter}')
        except ImportError as e:
            if not _import_missing(e):
                raise
            _MISSING[adapter] = f'{framework} is installed but {e}'


def install_command() -> str:
    """The one command that installs the full stack of this environment's
    kind (from a clone of the repository): the onedl forks' when
    onedl-mmengine is installed, else upstream OpenMMLab's. It also
    replaces the classification profile's mmcv-lite by mmcv with ops."""
    try:
        from importlib.metadata import PackageNotFoundError, version
        try:
            version('onedl-mmengine')
            return 'STACK=onedl bash tools/install.sh'
        except PackageNotFoundError:
            pass
    except ImportError:  # pragma: no cover
        pass
    return 'bash tools/install.sh'


def _profile_note() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version
        try:
            version('mmcv-lite')
        except PackageNotFoundError:
            return ''
    except ImportError:  # pragma: no cover
        return ''
    return (' This environment has the classification profile (mmcv-lite, '
            'no mmdet/mmseg).')


def missing() -> Dict[str, str]:
    """Parts that were not registered, with the reason."""
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
            f'mixplugins.{adapter} is unavailable: {_MISSING[adapter]}.'
            f'{_profile_note()} Install the full stack with '
            f'`{install_command()}` (docs/install.md).')


_register()
