"""Checkpoint writes that a killed process cannot corrupt (items 2 and 3
of :mod:`mixplugins.engine.checkpoint`, and mmengine's ``last_checkpoint``
pointer): write to a temporary file in the same directory, fsync, and
``os.replace`` it onto the target.
"""
import os
import os.path as osp
import re
import sys
import uuid
from typing import Any, Callable, List, Optional

import torch

__all__ = [
    'atomic_save_checkpoint', 'install_atomic_save', 'find_latest_checkpoint',
    'install_robust_find_latest', 'install_atomic_last_checkpoint'
]

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


def _atomic_write(path: str, mode: str, write: Callable[[Any], Any]) -> None:
    """Call ``write`` on a new hidden temporary file next to ``path``
    (opened with ``mode``, ``'x'`` or ``'xb'``), fsync it, rename it onto
    ``path`` and fsync the directory; remove it if anything fails."""
    dirname = osp.dirname(osp.abspath(path))
    os.makedirs(dirname, exist_ok=True)
    tmp = osp.join(
        dirname,
        f'.{osp.basename(path)}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp')
    try:
        with open(tmp, mode) as f:
            write(f)
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


def _atomic_torch_save(obj: Any, filename: str) -> None:
    """``torch.save`` ``obj`` to a temporary file, then rename it onto
    ``filename``.

    The temporary file is hidden (``.name.<pid>.<random>.tmp``), lives in
    the target's directory (so ``os.replace`` is an atomic rename on the same
    file system) and is created with the default permissions. It is removed
    if anything fails, including ``KeyboardInterrupt``.
    """
    _atomic_write(filename, 'xb', lambda f: torch.save(obj, f))


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


def _write_text_atomically(path: str, text: str) -> None:
    """:func:`_atomic_torch_save`'s temporary-file-and-rename, for text."""
    _atomic_write(path, 'x', lambda f: f.write(text))


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
