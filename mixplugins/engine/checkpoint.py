"""Checkpoint fixes for mmengine 0.10.7 and the onedl-mmengine fork.

Three problems of the pinned stack (mmengine 0.10.7 with torch >= 2.6) are
fixed here, all without touching mmengine's files:

1. **Loading.** Since torch 2.6, ``torch.load`` defaults to
   ``weights_only=True``. mmengine 0.10.7 calls ``torch.load(filename,
   map_location=...)`` without the flag, so ``resume``/``load_from`` of a
   checkpoint that mmengine itself wrote fails with ``Unsupported global:
   mmengine.logging.history_buffer.HistoryBuffer`` (and, behind it,
   ``builtins.getattr`` for the buffer's statistics methods and the numpy
   globals that pickle arrays and scalars). The fix upstream (mmengine #1670)
   is unreleased. :func:`allow_mm_checkpoint_globals` keeps the safe
   ``weights_only`` loader and allow-lists only the few globals that such
   checkpoints contain (found by training and resuming real runners; see
   :func:`mm_checkpoint_safe_globals`). No environment variable and no
   ``weights_only=False`` is needed.
2. **Saving.** ``mmengine.runner.checkpoint.save_checkpoint`` serialises into
   memory and then opens the target with ``'wb'``, i.e. truncates it in
   place: a process killed during the write leaves a truncated checkpoint in
   place of the previous one. :func:`atomic_save_checkpoint` writes local
   files to a temporary file in the same directory, flushes and fsyncs it and
   ``os.replace``-s it onto the target, so the target always holds either the
   old or the new complete checkpoint. :func:`install_atomic_save` puts it in
   place of every reference to mmengine's function (``Runner.save_checkpoint``
   calls the name imported into ``mmengine.runner.runner``; ``CheckpointHook``
   and the strategies import it lazily from ``mmengine.runner`` /
   ``mmengine.runner.checkpoint``).

3. **Finding the latest checkpoint.** ``--resume`` without a path reads
   ``<work_dir>/last_checkpoint``, which ``CheckpointHook`` writes in place;
   :func:`find_latest_checkpoint` falls back to the newest complete
   checkpoint when a killed write left it empty.

4. **The onedl-mmengine fork's scoped safe loads** (0.10.8 and later) drop
   the allow-list of 1. from torch's process-wide list after each load;
   :func:`install_keep_allow_list` registers it again.

The fork (0.10.12 read) keeps 2. and 3. as in 0.10.7.

:mod:`mixplugins.engine.patches` lists the four (and the ``mmseg::``
config fix of :mod:`mixplugins.engine.config_scope`), with the mmengine
versions (and the feature) they apply to, and installs them when
:mod:`mixplugins` is imported.
"""
import pickle
from typing import Any, Callable, Dict, List, Tuple, Union

import numpy as np
import torch

__all__ = [
    'mm_checkpoint_getattr', 'mm_checkpoint_safe_globals',
    'allow_mm_checkpoint_globals', 'atomic_save_checkpoint',
    'install_atomic_save', 'find_latest_checkpoint',
    'install_robust_find_latest', 'has_scoped_safe_load',
    'install_keep_allow_list', 'install_atomic_last_checkpoint'
]

SafeGlobal = Union[Callable, Tuple[Callable, str]]

_HISTORY_BUFFER_STATISTICS = ('min', 'max', 'current', 'mean')


def _numpy_reduce_globals() -> List[SafeGlobal]:
    """The numpy globals that pickled arrays, scalars and dtypes refer to.

    The callables are taken from numpy's own ``__reduce__`` output instead of
    private imports. Each is registered under the path numpy 2.x pickles it
    with (``numpy._core.multiarray.*``) and the path numpy 1.x used
    (``numpy.core.multiarray.*``), so checkpoints written under either major
    version load.
    """
    reconstruct = np.zeros(1).__reduce__()[0]
    scalar = np.float64(0).__reduce__()[0]
    out: List[SafeGlobal] = [np.ndarray, np.dtype]
    for fn in (reconstruct, scalar):
        out.append(fn)
        for module in ('numpy._core.multiarray', 'numpy.core.multiarray'):
            out.append((fn, f'{module}.{fn.__name__}'))
    # Unpickling a dtype calls ``BUILD`` on an instance of its dtype class
    # (``numpy.dtypes.Float64DType`` ...), which must be allow-listed too.
    # Only boolean and numeric dtypes: no object, void, string or datetime.
    codes = '?' + np.typecodes['AllInteger'] + np.typecodes['AllFloat']
    dtype_classes = {type(np.dtype(c)) for c in codes}
    out.extend(sorted(dtype_classes, key=lambda c: c.__name__))
    return out


def _mm_getattr_allowed() -> Dict[type, Callable[[str], bool]]:
    """Classes whose attributes mm checkpoints fetch with ``getattr``."""
    from mmengine.logging.history_buffer import HistoryBuffer
    from mmengine.optim.scheduler.param_scheduler import \
        OneCycleParamScheduler

    return {
        # ``HistoryBuffer.__getstate__`` stores its statistics methods: the
        # four built-in ones (registered only once a buffer is created, so
        # named here) and any added with ``register_statistics``.
        HistoryBuffer:
        lambda name: name in _HISTORY_BUFFER_STATISTICS or name in
        HistoryBuffer._statistics_methods,
        # ``OneCycleParamScheduler.anneal_func`` holds a static method.
        OneCycleParamScheduler:
        lambda name: name in ('_annealing_cos', '_annealing_linear'),
    }


def mm_checkpoint_getattr(obj: Any, name: str) -> Any:
    """A ``getattr`` restricted to the attributes mm checkpoints refer to.

    Pickle stores a function defined in a class body (qualified name
    ``Class.method``) as ``getattr(Class, 'method')``. mmengine checkpoints
    contain two such references: ``HistoryBuffer``'s statistics methods (in
    every checkpoint, via the message hub) and the annealing function of
    ``OneCycleParamScheduler``. Allow-listing the builtin ``getattr`` would
    let a checkpoint read any attribute of any allow-listed object; this
    function is registered under the name ``builtins.getattr`` instead and
    answers only those lookups.

    Args:
        obj (Any): The object (here: a class) to read from.
        name (str): The attribute name.

    Returns:
        Any: ``getattr(obj, name)``.

    Raises:
        pickle.UnpicklingError: For any other object or attribute.
    """
    allowed = None
    if isinstance(obj, type):
        allowed = _mm_getattr_allowed().get(obj)
    if allowed is None or not isinstance(name, str) or not allowed(name):
        raise pickle.UnpicklingError(
            f'weights_only load refused getattr({obj!r}, {name!r}): the '
            'getattr that mixplugins allow-lists for mm checkpoints only '
            'reads HistoryBuffer statistics methods and '
            'OneCycleParamScheduler annealing functions')
    return getattr(obj, name)


def mm_checkpoint_safe_globals() -> List[SafeGlobal]:
    """Globals that mmengine-written checkpoints need under ``weights_only``.

    Found empirically with ``torch.serialization.
    get_unsafe_globals_in_checkpoint`` on checkpoints that mmengine 0.10.7
    Runners of mmpretrain models wrote (every mmengine parameter scheduler,
    ``EMAHook``, mmdet/mmseg dataset metainfo), and kept to what was found:

    - ``mmengine.logging.HistoryBuffer``: the message hub's log scalars.
    - ``builtins.getattr``, bound to :func:`mm_checkpoint_getattr` (not to
      the builtin): how pickle refers to ``HistoryBuffer.min`` etc. and to
      ``OneCycleParamScheduler._annealing_cos``/``_annealing_linear``.
    - ``OneCycleParamScheduler``: the class of that ``getattr`` (its
      ``anneal_func`` state entry).
    - numpy ``ndarray``/``dtype``, ``_reconstruct``/``scalar`` and the boolean
      and numeric dtype classes: the buffers inside ``HistoryBuffer`` and
      numpy scalars in the message hub.

    ``collections.OrderedDict`` (state dicts, the message hub's dicts) and
    ``collections.Counter`` (``MultiStepLR`` milestones) are allowed by torch
    already.

    Returns:
        list: Entries for ``torch.serialization.add_safe_globals``: callables
        or ``(callable, 'pickled.path')`` pairs.
    """
    from mmengine.logging.history_buffer import HistoryBuffer
    from mmengine.optim.scheduler.param_scheduler import \
        OneCycleParamScheduler

    out: List[SafeGlobal] = [
        HistoryBuffer,
        OneCycleParamScheduler,
        (mm_checkpoint_getattr, 'builtins.getattr'),
    ]
    out.extend(_numpy_reduce_globals())
    return out


def allow_mm_checkpoint_globals() -> None:
    """Allow-list, for ``weights_only`` loading, what mm checkpoints contain.

    Registers :func:`mm_checkpoint_safe_globals` with
    ``torch.serialization.add_safe_globals``; entries already registered are
    not added again, so repeated calls change nothing. After it, ``Runner(resume=True)``, ``load_from`` and
    ``mmengine.runner.load_checkpoint`` load mmengine checkpoints with torch's
    default safe loader. Anything else (a checkpoint holding arbitrary
    objects) is still rejected by torch.

    Does nothing on torch versions without ``add_safe_globals`` (< 2.4),
    whose ``torch.load`` is not ``weights_only`` by default.

    Note:
        The allow-list is process-wide (torch keeps one). The name
        ``builtins.getattr`` is bound to :func:`mm_checkpoint_getattr`; code
        that allow-lists the real ``getattr`` under the same name competes
        with it.
    """
    serialization = torch.serialization
    if not hasattr(serialization, 'add_safe_globals'):
        return
    present = set(serialization.get_safe_globals())
    missing = [g for g in mm_checkpoint_safe_globals() if g not in present]
    if missing:
        serialization.add_safe_globals(missing)


_KEEP_FLAG = '_mixplugins_keeps_allow_list'


def has_scoped_safe_load() -> bool:
    """Whether the running mmengine loads checkpoints with a scoped
    allow-list (``mmengine.runner.checkpoint._safe_torch_load``: the
    onedl-mmengine fork, 0.10.8 and later)."""
    from mmengine.runner import checkpoint as ckpt_module
    return callable(getattr(ckpt_module, '_safe_torch_load', None))


def install_keep_allow_list() -> None:
    """Keep :func:`allow_mm_checkpoint_globals`' allow-list across the
    fork's scoped safe loads.

    onedl-mmengine's ``_safe_torch_load`` loads inside
    ``torch.serialization.safe_globals(allowlist)``; leaving that block
    *removes* every entry of ``allowlist`` from torch's process-wide list
    (torch's context manager does not restore what was there before), and
    its list holds ``HistoryBuffer`` and the numpy globals that
    ``import mixplugins`` registered, so the next plain ``torch.load`` of an
    mm checkpoint fails (``docs/install.md``, "Fork bugs"). The replacement
    calls the fork's function and then registers the allow-list again.
    ``_safe_torch_load`` is looked up by its module at call time by every
    caller in the fork, so replacing the module attribute covers them.
    Idempotent.
    """
    from mmengine.runner import checkpoint as ckpt_module

    original = ckpt_module._safe_torch_load
    if getattr(original, _KEEP_FLAG, False):
        return

    def _safe_torch_load(*args, **kwargs):
        try:
            return original(*args, **kwargs)
        finally:
            allow_mm_checkpoint_globals()

    _safe_torch_load.__doc__ = original.__doc__
    _safe_torch_load.__wrapped__ = original
    setattr(_safe_torch_load, _KEEP_FLAG, True)
    ckpt_module._safe_torch_load = _safe_torch_load


# -- the last_checkpoint pointer (issue 14)


# 2. and 3. (and the atomic ``last_checkpoint``) write files: they live in
# checkpoint_files.py, re-exported here.
from .checkpoint_files import (atomic_save_checkpoint,  # noqa: E402
                               find_latest_checkpoint,
                               install_atomic_last_checkpoint,
                               install_atomic_save,
                               install_robust_find_latest)
