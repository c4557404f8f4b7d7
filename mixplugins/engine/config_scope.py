"""Make ``mmseg::`` config bases resolve on the onedl-* forks.

mmengine resolves ``_base_ = ['mmseg::upernet/...']`` through
``mmengine.config.utils.MODULE2PACKAGE``, which maps the scope ``mmseg`` to
the *distribution* name ``mmsegmentation`` and then asks whether that
distribution is installed. The maintained fork is installed as
``onedl-mmsegmentation`` (import name ``mmseg``), so onedl-mmengine 0.10.12
stops with ``mmsegmentation is not installed`` although ``mmseg`` and its
``.mim/configs`` are there. (``mmdet::`` works: its entry is ``mmdet``, and
mmengine falls back to the import name when no distribution has the name.)
:func:`install_mmseg_scope` points the entry at the import name where --
and only where -- the distribution named in the table is absent and
``mmseg`` is importable; mmengine's own fallback then finds the package.
Upstream mmsegmentation is left alone. See ``docs/install.md`` ("Fork bugs").
"""
import importlib.util

__all__ = ['mmseg_scope_unresolvable', 'install_mmseg_scope']


def mmseg_scope_unresolvable() -> bool:
    """Whether ``mmseg::`` names a distribution that is not installed while
    the ``mmseg`` package is importable (the onedl-mmsegmentation fork)."""
    from mmengine.config import utils
    from mmengine.utils import is_installed

    name = utils.MODULE2PACKAGE.get('mmseg')
    return (name is not None and name != 'mmseg' and not is_installed(name)
            and importlib.util.find_spec('mmseg') is not None)


def install_mmseg_scope() -> None:
    """Map the ``mmseg`` config scope to the import name ``mmseg`` (the
    table is one dict, shared by every module that imported it).
    Idempotent."""
    from mmengine.config import utils

    utils.MODULE2PACKAGE['mmseg'] = 'mmseg'
