"""Every change ``import mixplugins`` makes to mmengine, in one table.

Each :class:`Patch` names what it fixes, the mmengine versions it applies to
(the versions it was written and tested for; outside them it is skipped,
with a log line, rather than applied blindly to code it was not checked
against), optionally the feature of the running mmengine it needs (a patch of
a function the running mmengine does not have is skipped, with a log line)
and the function that installs it. The functions live in
:mod:`mixplugins.engine.checkpoint`, with the reasons in full.

Two distributions provide ``mmengine``: upstream mmengine, whose last
release is 0.10.7, and the maintained fork onedl-mmengine (0.10.8 and
later; 0.10.12 read and tested). A version above 0.10.7 is therefore the
fork's.
"""
import logging
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple


from mmengine.utils import digit_version

from .checkpoint import (allow_mm_checkpoint_globals, has_scoped_safe_load,
                         install_atomic_last_checkpoint,
                         install_atomic_save, install_keep_allow_list,
                         install_robust_find_latest)
from .config_scope import install_mmseg_scope, mmseg_scope_unresolvable

__all__ = ['Patch', 'PATCHES', 'install_patches', 'applied_patches']

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Patch:
    """One change to mmengine.

    Attributes:
        name (str): Short name (used in logs and :func:`applied_patches`).
        fixes (str): What goes wrong without it.
        versions (tuple[str, str]): mmengine versions it applies to,
            ``(first, last)``, both inclusive.
        install (Callable[[], None]): Installs it; idempotent.
        feature (Callable[[], bool], optional): Whether the running mmengine
            has what the patch changes; None: nothing beyond the versions.
    """
    name: str
    fixes: str
    versions: Tuple[str, str]
    install: Callable[[], None]
    feature: Optional[Callable[[], bool]] = None

    def applies_to(self, version: str) -> bool:
        """Whether ``version`` of mmengine is in :attr:`versions`."""
        first, last = self.versions
        return (digit_version(first) <= digit_version(version) <=
                digit_version(last))


#: The patches, in the order they are installed.
PATCHES: Tuple[Patch, ...] = (
    # the fork's own scoped allow-list lacks OneCycleParamScheduler and most
    # numpy dtypes (its load then falls back to weights_only=False), and a
    # plain torch.load of an mm checkpoint needs the process-wide list
    Patch('safe_globals',
          'torch >= 2.6 loads with weights_only=True and refuses the '
          'HistoryBuffer/numpy globals of mmengine checkpoints (resume, '
          'load_from)', ('0.10.0', '0.10.12'), allow_mm_checkpoint_globals),
    Patch('atomic_save',
          'save_checkpoint truncates the target in place: a killed write '
          'destroys the previous checkpoint', ('0.10.0', '0.10.12'),
          install_atomic_save),
    Patch('robust_last_checkpoint',
          '--resume trusts last_checkpoint, written in place: empty or '
          'dangling after a kill', ('0.10.0', '0.10.12'),
          install_robust_find_latest),
    Patch('atomic_last_checkpoint',
          'CheckpointHook writes the last_checkpoint pointer in place with '
          "open(path, 'w'): a kill during the write leaves it empty",
          ('0.10.0', '0.10.12'), install_atomic_last_checkpoint),
    Patch('keep_allow_list',
          'onedl-mmengine loads checkpoints inside torch.serialization.'
          'safe_globals(...), whose exit removes the safe_globals patch\'s '
          'entries from the process-wide allow-list', ('0.10.8', '0.10.12'),
          install_keep_allow_list, feature=has_scoped_safe_load),
    Patch('mmseg_config_scope',
          "`_base_ = ['mmseg::...']` looks for the distribution "
          "'mmsegmentation'; the fork is installed as onedl-mmsegmentation "
          "('mmsegmentation is not installed')", ('0.10.0', '0.10.12'),
          install_mmseg_scope, feature=mmseg_scope_unresolvable),
)

_APPLIED: Dict[str, bool] = {}


def install_patches() -> List[str]:
    """Install the patches that apply to the running mmengine.

    Returns:
        list[str]: Names of the installed patches (none without mmengine).
    """
    try:
        import mmengine
    except ImportError:
        return []
    for patch in PATCHES:
        if not patch.applies_to(mmengine.__version__):
            why = 'written for mmengine %s..%s, running %s' % (
                *patch.versions, mmengine.__version__)
        elif patch.feature is not None and not patch.feature():
            why = 'the running mmengine %s has nothing it changes (%s)' % (
                mmengine.__version__, patch.feature.__name__)
        else:
            patch.install()
            if not _APPLIED.get(patch.name):
                logger.debug('mixplugins: patch %r installed (mmengine %s)',
                             patch.name, mmengine.__version__)
            _APPLIED[patch.name] = True
            continue
        if patch.name not in _APPLIED:
            _APPLIED[patch.name] = False
            logger.info('mixplugins: patch %r skipped: %s', patch.name, why)
    return applied_patches()


def applied_patches() -> List[str]:
    """Names of the patches installed in this process."""
    return [name for name, done in _APPLIED.items() if done]
