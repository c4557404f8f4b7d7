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
import os
import os.path as osp
import pickle
import re
import sys
import uuid
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

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
# Marker set on the replacement function; also keeps the original around.
_ATOMIC_FLAG = '_mixplugins_atomic'
# Modules that bind ``save_checkpoint`` by name at import time.
_SAVE_CHECKPOINT_HOLDERS = (
    'mmengine.runner.checkpoint',
    'mmengine.runner',
    'mmengine.runner.runner',
    'mmengine._strategy.deepspeed',
    'mmengine._strategy.colossalai',
)


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


def _fsync_dir(dirname: str) -> None:
    """Persist a rename in ``dirname`` where the platform allows it."""
    try:
        fd = os.open(dirname, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_torch_save(obj: Any, filename: str) -> None:
    """``torch.save`` ``obj`` to a temporary file, then rename it onto
    ``filename``.

    The temporary file is hidden (``.name.<pid>.<random>.tmp``), lives in
    the target's directory (so ``os.replace`` is an atomic rename on the same
    file system) and is created with the default permissions. It is removed
    if anything fails, including ``KeyboardInterrupt``.
    """
    dirname = osp.dirname(osp.abspath(filename))
    os.makedirs(dirname, exist_ok=True)
    tmp = osp.join(
        dirname,
        f'.{osp.basename(filename)}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp')
    try:
        with open(tmp, 'xb') as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, filename)
    except BaseException:
        try:
            os.remove(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(dirname)


def _original_save_checkpoint() -> Callable:
    from mmengine.runner import checkpoint as ckpt_module
    fn = ckpt_module.save_checkpoint
    return getattr(fn, '__wrapped__', fn) if getattr(
        fn, _ATOMIC_FLAG, False) else fn


def atomic_save_checkpoint(checkpoint: dict,
                           filename: str,
                           file_client_args: Optional[dict] = None,
                           backend_args: Optional[dict] = None) -> None:
    """Save a checkpoint like mmengine's ``save_checkpoint``, atomically.

    Same signature and behaviour as
    ``mmengine.runner.checkpoint.save_checkpoint`` (0.10.7). For a local
    path the checkpoint is first written to a temporary file in the same
    directory and renamed onto ``filename``, so an interrupted save never
    leaves a partial file and never destroys the previous checkpoint.
    Other destinations (``pavi://``, ``s3://``, ...; or the deprecated
    ``file_client_args``) go to mmengine's own function unchanged.

    Args:
        checkpoint (dict): The checkpoint to save.
        filename (str): Destination path or URI.
        file_client_args (dict, optional): Deprecated mmengine file client
            arguments; passed through. Defaults to None.
        backend_args (dict, optional): mmengine file backend arguments.
            Defaults to None.
    """
    from mmengine.fileio import get_file_backend
    from mmengine.fileio.backends import LocalBackend

    name = os.fspath(filename)
    if file_client_args is None and not name.startswith('pavi://'):
        backend = get_file_backend(name, backend_args=backend_args)
        if isinstance(backend, LocalBackend):
            _atomic_torch_save(checkpoint, name)
            return
    _original_save_checkpoint()(
        checkpoint,
        filename,
        file_client_args=file_client_args,
        backend_args=backend_args)


def install_atomic_save() -> None:
    """Route mmengine's checkpoint saving through
    :func:`atomic_save_checkpoint`.

    Replaces ``save_checkpoint`` in every mmengine module that holds a
    reference to the original (``mmengine.runner.checkpoint``,
    ``mmengine.runner``, ``mmengine.runner.runner`` whose
    ``Runner.save_checkpoint`` calls it, and the already-imported strategy
    modules). Idempotent.
    """
    import mmengine.runner  # noqa: F401  (imports .checkpoint and .runner)
    from mmengine.runner import checkpoint as ckpt_module

    original = _original_save_checkpoint()
    replacement = ckpt_module.save_checkpoint
    if not getattr(replacement, _ATOMIC_FLAG, False):

        def save_checkpoint(checkpoint, filename, file_client_args=None,
                            backend_args=None):
            return atomic_save_checkpoint(checkpoint, filename,
                                          file_client_args, backend_args)

        save_checkpoint.__doc__ = atomic_save_checkpoint.__doc__
        save_checkpoint.__module__ = __name__
        save_checkpoint.__wrapped__ = original
        setattr(save_checkpoint, _ATOMIC_FLAG, True)
        replacement = save_checkpoint

    for mod_name in _SAVE_CHECKPOINT_HOLDERS:
        module = sys.modules.get(mod_name)
        if module is not None and getattr(module, 'save_checkpoint',
                                          None) in (original, replacement):
            module.save_checkpoint = replacement


_CHECKPOINT_NAME = re.compile(r'^(epoch|iter)_(\d+)\.pth$')


def find_latest_checkpoint(path: str) -> Optional[str]:
    """mmengine's ``find_latest_checkpoint``, robust to a killed write.

    mmengine's ``CheckpointHook`` writes the pointer file
    ``<work_dir>/last_checkpoint`` in place after each checkpoint: a process
    killed during that write leaves it empty, and a checkpoint deleted by
    hand leaves it dangling; ``--resume`` then finds nothing (or a missing
    file) although complete checkpoints are there. This version returns the
    pointer when it names an existing file (or a non-local URI, which it
    cannot check), unless an ``epoch_N.pth`` / ``iter_N.pth`` of ``path``
    was written after it (a kill between the checkpoint and the pointer);
    without a valid pointer, the most recently written of those
    (complete by construction: they are written atomically, see
    :func:`atomic_save_checkpoint`); else None.

    Args:
        path (str): The work directory.

    Returns:
        str or None: The checkpoint to resume from.
    """
    pointer = osp.join(path, 'last_checkpoint')
    last = ''
    if osp.isfile(pointer):
        with open(pointer) as f:
            last = f.read().strip()
    if '://' in last:
        return last
    try:
        found = [
            osp.join(path, n) for n in os.listdir(path)
            if _CHECKPOINT_NAME.match(n)
        ]
    except OSError:
        found = []
    valid = bool(last) and osp.isfile(last)
    if valid:
        found.append(last)
    if not found:
        return None
    latest = max(found, key=lambda p: os.stat(p).st_mtime_ns)
    if not valid or not osp.samefile(latest, last):
        state = 'behind' if valid else 'dangling' if last else 'empty'
        print(f'[mixplugins] {pointer} is {state} ({last!r}); resuming from '
              f'the newest checkpoint, {latest}', flush=True)
    return latest


def install_robust_find_latest() -> None:
    """Use :func:`find_latest_checkpoint` where mmengine's runners look
    up the checkpoint for ``resume=True`` without a path. Idempotent."""
    for mod_name in ('mmengine.runner.runner',
                     'mmengine.runner._flexible_runner'):
        module = sys.modules.get(mod_name)
        if module is not None and hasattr(module, 'find_latest_checkpoint'):
            module.find_latest_checkpoint = find_latest_checkpoint


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
def _write_text_atomically(path: str, text: str) -> None:
    """Write ``text`` to a temporary file next to ``path``, fsync it and
    rename it onto ``path``."""
    dirname = osp.dirname(osp.abspath(path))
    tmp = osp.join(
        dirname,
        f'.{osp.basename(path)}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp')
    try:
        with open(tmp, 'x') as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(dirname)


class _AtomicTextWriter:
    """What ``open(path, 'w')`` returns to ``CheckpointHook`` for the
    ``last_checkpoint`` pointer: collects the text and writes it atomically
    on close (not at all when the ``with`` block raised)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._parts: Optional[List[str]] = []

    def write(self, text: str) -> int:
        self._parts.append(text)
        return len(text)

    def close(self) -> None:
        parts, self._parts = self._parts, None
        if parts is not None:
            _write_text_atomically(self.path, ''.join(parts))

    def __enter__(self) -> '_AtomicTextWriter':
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._parts = None


def _checkpoint_hook_open(file, mode='r', *args, **kwargs):
    """``open`` for ``mmengine.hooks.checkpoint_hook``: its text write of
    the ``last_checkpoint`` pointer is atomic; everything else is the
    builtin ``open``."""
    if (mode == 'w' and not args and not kwargs
            and isinstance(file, (str, os.PathLike))
            and osp.basename(os.fspath(file)) == 'last_checkpoint'):
        return _AtomicTextWriter(os.fspath(file))
    return open(file, mode, *args, **kwargs)


def install_atomic_last_checkpoint() -> None:
    """Make ``CheckpointHook``'s write of ``<work_dir>/last_checkpoint``
    atomic (temporary file, fsync, ``os.replace``), as the checkpoints are:
    mmengine 0.10.7 writes it in place with ``open(path, 'w')``, so a kill
    during the write leaves it empty. The hook's module gets an ``open``
    that shadows the builtin for that one file. Idempotent."""
    import mmengine.hooks.checkpoint_hook as hook_module
    hook_module.open = _checkpoint_hook_open
