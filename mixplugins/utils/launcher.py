"""Building mmengine runners for ``tools/train.py`` and ``tools/test.py``.

The tools train and test configs of three host frameworks; the framework is
the config's ``default_scope`` (``'mmpretrain'``, ``'mmdet'`` or
``'mmseg'``). The runner is built as each framework's own ``tools/train.py``
builds it (``Runner.from_cfg``, or ``RUNNERS.build`` when the config has a
``runner_type``).

Distributed runs on CPU (gloo) hit three traps of mmengine 0.10.7:
``init_dist`` calls ``torch.cuda.set_device``; the default
``MMDistributedDataParallel`` wrapper is given
``device_ids=[LOCAL_RANK]``; and ``SyncBatchNorm`` layers raise on CPU tensors
once a process group exists (mmengine reverts them to BN only in
non-distributed runs). :func:`cpu_distributed_runner` derives a runner class
that avoids all three; :func:`build_runner` uses it when a launcher is given
and CUDA is unavailable.
"""
import copy
import datetime
import os
import subprocess
import sys
from typing import Optional, Type

import torch
import torch.distributed as torch_dist

__all__ = [
    'FRAMEWORK_SCOPES', 'framework_of', 'init_framework_scope',
    'apply_framework_defaults',
    'init_cpu_process_group', 'cpu_distributed_runner', 'build_runner',
    'close_process_group', 'check_resume_checkpoint'
]

#: ``default_scope`` of a config -> the package that implements it.
FRAMEWORK_SCOPES = {
    'mmpretrain': 'mmpretrain',
    'mmdet': 'mmdet',
    'mmseg': 'mmseg',
}

_CPU_BACKENDS = ('gloo', 'mpi')


def framework_of(cfg) -> str:
    """Return the framework scope a config trains with.

    Args:
        cfg (mmengine.Config): The config; its ``default_scope`` decides.

    Returns:
        str: One of :data:`FRAMEWORK_SCOPES`.

    Raises:
        ValueError: If ``default_scope`` is missing or not supported.
    """
    scope = cfg.get('default_scope', None)
    if scope not in FRAMEWORK_SCOPES:
        raise ValueError(
            f'default_scope must be one of {sorted(FRAMEWORK_SCOPES)} (set it '
            f'in the config, e.g. via its default_runtime base), got '
            f'{scope!r}')
    return scope


def init_framework_scope(cfg) -> str:
    """Import the config's framework and make it the default registry scope.

    This is what each framework's ``register_all_modules()`` does: the
    registries of the scope import their ``locations`` lazily once the scope
    is the default one.

    Args:
        cfg (mmengine.Config): The config (see :func:`framework_of`).

    Returns:
        str: The scope.

    Raises:
        ImportError: If the framework package is not installed.
    """
    import importlib

    from mmengine.registry import init_default_scope

    scope = framework_of(cfg)
    package = FRAMEWORK_SCOPES[scope]
    try:
        importlib.import_module(package)
    except ImportError as e:
        import mixplugins
        raise ImportError(
            f'the config has default_scope={scope!r} but {package!r} cannot '
            f'be imported ({e}).{mixplugins._profile_note()} Install the '
            f'full stack with `{mixplugins.install_command()}` '
            '(docs/install.md)') from e
    init_default_scope(scope)
    return scope


def apply_framework_defaults(cfg, scope: str) -> None:
    """Settings each framework's own train/test tools add to the config.

    - ``mmpretrain``: dataloaders default to ``collate_fn=default_collate``,
      ``pin_memory=True`` and (where ``num_workers > 0``; torch raises
      otherwise) ``persistent_workers=True``; values in the config win.
    - ``mmdet``: raises torch.compile's dynamo cache size limit
      (``mmdet.utils.setup_cache_size_limit_of_dynamo``).
    - ``mmseg``: nothing.

    Args:
        cfg (mmengine.Config): The config, edited in place.
        scope (str): Its framework scope (:func:`framework_of`).
    """
    from mmengine.config import ConfigDict

    if scope == 'mmpretrain':
        for field in ('train_dataloader', 'val_dataloader',
                      'test_dataloader'):
            loader = cfg.get(field, None)
            if loader is None:
                continue
            merged = ConfigDict(
                pin_memory=True, collate_fn=dict(type='default_collate'))
            if loader.get('num_workers', 0) > 0:
                merged.persistent_workers = True
            merged.update(copy.deepcopy(loader))
            cfg[field] = merged
    elif scope == 'mmdet':
        from mmdet.utils import setup_cache_size_limit_of_dynamo
        setup_cache_size_limit_of_dynamo()


def _cpu_rank_env(launcher: str, port: Optional[int]) -> None:
    """Fill the ``env://`` variables from a slurm or MPI launch (torchrun
    sets them itself), as mmengine's ``init_dist`` does."""
    if launcher == 'slurm':
        os.environ['RANK'] = os.environ['SLURM_PROCID']
        os.environ['WORLD_SIZE'] = os.environ['SLURM_NTASKS']
        os.environ.setdefault('LOCAL_RANK',
                              os.environ.get('SLURM_LOCALID', '0'))
        if 'MASTER_ADDR' not in os.environ:
            nodes = os.environ['SLURM_NODELIST']
            os.environ['MASTER_ADDR'] = subprocess.getoutput(
                f'scontrol show hostname {nodes} | head -n1')
    elif launcher == 'mpi':
        os.environ['RANK'] = os.environ['OMPI_COMM_WORLD_RANK']
        os.environ['WORLD_SIZE'] = os.environ['OMPI_COMM_WORLD_SIZE']
        os.environ['LOCAL_RANK'] = os.environ['OMPI_COMM_WORLD_LOCAL_RANK']
        if 'MASTER_ADDR' not in os.environ:
            raise KeyError('MASTER_ADDR must be set for the mpi launcher')
    if launcher == 'slurm' and port is not None:
        os.environ['MASTER_PORT'] = str(port)
    os.environ.setdefault('MASTER_PORT', '29500')


def init_cpu_process_group(launcher: str,
                           dist_cfg: Optional[dict] = None) -> str:
    """Initialise the default process group for CPU training.

    Replaces mmengine's ``init_dist`` on machines without CUDA: it makes no
    ``torch.cuda`` call and uses a CPU backend (``gloo``, or ``mpi`` if
    ``dist_cfg`` asks for it). The runner then skips ``init_dist`` because a
    process group exists (``Runner.setup_env``).

    Args:
        launcher (str): ``'pytorch'`` (torchrun sets ``RANK``,
            ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``), ``'slurm'`` or
            ``'mpi'`` (the variables are derived from the scheduler's).
        dist_cfg (dict, optional): ``env_cfg.dist_cfg`` of the config; its
            ``backend`` (if a CPU one), ``timeout`` (seconds) and ``port``
            (slurm) are used. Defaults to None.

    Returns:
        str: The backend used.

    Raises:
        ValueError: If ``launcher`` is not one of the three.
    """
    if launcher not in ('pytorch', 'slurm', 'mpi'):
        raise ValueError(
            f"launcher must be 'pytorch', 'slurm' or 'mpi', got {launcher!r}")
    dist_cfg = dict(dist_cfg or {})
    backend = dist_cfg.get('backend', 'gloo')
    if backend not in _CPU_BACKENDS:
        backend = 'gloo'
    _cpu_rank_env(launcher, dist_cfg.get('port', None))
    kwargs = {}
    if dist_cfg.get('timeout', None) is not None:
        kwargs['timeout'] = datetime.timedelta(seconds=dist_cfg['timeout'])
    torch_dist.init_process_group(backend=backend, **kwargs)
    return backend


def cpu_distributed_runner(runner_cls: Type) -> Type:
    """Derive a runner class that trains distributed on CPU.

    The subclass changes two methods of ``runner_cls`` (mmengine's ``Runner``
    or a framework's custom runner):

    - ``setup_env`` first creates the process group with
      :func:`init_cpu_process_group` when none exists, so mmengine's
      ``init_dist`` (which calls ``torch.cuda.set_device``) is skipped.
    - ``wrap_model`` reverts ``SyncBatchNorm`` to ``BatchNorm`` (logging that
      it did) and builds the DDP wrapper without ``device_ids``.

    ``wrap_model`` is the place for the SyncBN fix because it is the only
    method that receives the built model (from ``cfg.model`` or an
    ``nn.Module`` given to the runner) before DDP wraps it; it is also where
    mmengine itself reverts SyncBN in non-distributed runs. Editing the
    config (every ``norm_cfg``) would have to know each model's layout, and
    ``build_model`` is not called when the runner gets a module. The DDP
    arguments are set in the same place: ``model_wrapper_cfg`` of the config
    is kept (type, ``find_unused_parameters``, ...); only ``device_ids`` is
    forced to None (mmengine otherwise injects ``[LOCAL_RANK]``) and
    ``broadcast_buffers`` defaults to False as in mmengine's default wrapper.
    ``cfg.sync_bn`` (BN -> SyncBN conversion) is ignored with a warning.

    Args:
        runner_cls (type): A subclass of ``mmengine.runner.Runner``.

    Returns:
        type: The derived class (named ``CPUDist<name>``).
    """
    from mmengine.device import get_device
    from mmengine.dist import is_distributed
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import MODEL_WRAPPERS
    from torch.nn.parallel import DistributedDataParallel

    def setup_env(self, env_cfg: dict) -> None:
        if self.distributed and not is_distributed():
            backend = init_cpu_process_group(self.launcher,
                                             env_cfg.get('dist_cfg', None))
            print(f'[mixplugins] CPU distributed run: process group '
                  f'initialised with backend {backend!r} '
                  f'(rank {torch_dist.get_rank()}/'
                  f'{torch_dist.get_world_size()})', flush=True)
        runner_cls.setup_env(self, env_cfg)

    def wrap_model(self, model_wrapper_cfg, model):
        if not self.distributed or get_device() != 'cpu':
            return runner_cls.wrap_model(self, model_wrapper_cfg, model)
        n_sync = sum(
            isinstance(m, torch.nn.SyncBatchNorm)
            or 'SyncBatchNorm' in type(m).__name__ for m in model.modules())
        if n_sync:
            model = revert_sync_batchnorm(model)
            self.logger.warning(
                f'CPU distributed run: reverted {n_sync} SyncBatchNorm '
                'layer(s) to BatchNorm (SyncBN has no CPU implementation); '
                'batch statistics are per process.')
        if self.cfg.get('sync_bn', None) is not None:
            self.logger.warning(
                f'CPU distributed run: ignoring sync_bn='
                f'{self.cfg.sync_bn!r} (SyncBN has no CPU implementation).')
            self.cfg.pop('sync_bn')
        wrapper_cfg = dict(model_wrapper_cfg or {})
        if not wrapper_cfg:
            wrapper_cfg['find_unused_parameters'] = self.cfg.get(
                'find_unused_parameters', False)
        wrapper_cfg.setdefault('type', 'MMDistributedDataParallel')
        wrapper_type = MODEL_WRAPPERS.get(wrapper_cfg['type'])
        if isinstance(wrapper_type, type) and issubclass(
                wrapper_type, DistributedDataParallel):
            wrapper_cfg['device_ids'] = None
            wrapper_cfg.setdefault('broadcast_buffers', False)
        return runner_cls.wrap_model(self, wrapper_cfg, model)

    setup_env.__doc__ = runner_cls.setup_env.__doc__
    wrap_model.__doc__ = runner_cls.wrap_model.__doc__
    name = f'CPUDist{runner_cls.__name__}'
    return type(name, (runner_cls, ), {
        'setup_env': setup_env,
        'wrap_model': wrap_model,
        '__module__': __name__,
        '__doc__': f'{runner_cls.__name__} for distributed CPU runs.',
    })


def build_runner(cfg):
    """Build the runner for ``cfg`` as the host framework's tools do.

    ``Runner.from_cfg(cfg)``, or the registered ``cfg.runner_type``
    (mmdet/mmseg tools use ``RUNNERS.build``). When ``cfg.launcher`` is not
    ``'none'`` and CUDA is unavailable, the class goes through
    :func:`cpu_distributed_runner` first.

    Args:
        cfg (mmengine.Config): Full config, with ``launcher`` set.

    Returns:
        mmengine.runner.Runner: The runner.
    """
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner

    cpu_dist = (cfg.get('launcher', 'none') != 'none'
                and not torch.cuda.is_available())
    if 'runner_type' not in cfg:
        runner_cls = Runner
    elif not cpu_dist:
        return RUNNERS.build(cfg)
    else:
        runner_cls = RUNNERS.get(cfg.runner_type)
        if runner_cls is None:
            raise ValueError(f'runner_type {cfg.runner_type!r} is not a '
                             'registered runner')
    if cpu_dist:
        runner_cls = cpu_distributed_runner(runner_cls)
    return runner_cls.from_cfg(cfg)


def _gloo_threads() -> list:
    """Names of this process's native gloo threads (Linux; else [])."""
    names = []
    try:
        for tid in os.listdir('/proc/self/task'):
            with open(f'/proc/self/task/{tid}/comm') as f:
                name = f.read().strip()
            if 'gloo' in name:
                names.append(name)
    except OSError:
        return []
    return sorted(names)


def close_process_group() -> None:
    """Leave the default process group at the end of a run (no-op without
    one).

    Call it after the last reference to the runner is gone (``del
    runner``), as ``tools/train.py`` and ``tools/test.py`` do. It collects
    garbage, meets the other ranks at a barrier and destroys the group, so
    that the native gloo threads (``pt_gloo_runloop`` workers,
    ``gloo_tcp_loop``) are joined while the interpreter is fully alive.

    Why: ``destroy_process_group`` only drops ``torch.distributed``'s own
    references. The DDP wrapper's reducer (``runner.model``) holds the
    ``ProcessGroupGloo`` too, so while the runner lives the group and its
    threads survive ``destroy_process_group`` and are torn down during
    interpreter finalisation -- where a gloo rank aborts now and then
    (``terminate called without an active exception``, SIGABRT; about one
    2-process CPU run in six, pytorch/pytorch#179291), and the launcher
    reports the finished job as failed. Measured: with the runner alive the
    3 gloo threads are still running after ``destroy_process_group``; after
    ``del runner`` they are gone once it returns.
    """
    if not (torch_dist.is_available() and torch_dist.is_initialized()):
        return
    import gc
    gc.collect()  # the runner's reference cycles (hooks <-> runner)
    torch_dist.barrier()
    torch_dist.destroy_process_group()
    gc.collect()
    left = _gloo_threads()
    if left:
        print(f'[mixplugins] warning: gloo threads {left} are still running '
              'after destroy_process_group (something still holds the '
              'process group, e.g. a runner or DDP model); the process may '
              'abort at exit', file=sys.stderr, flush=True)


def _checkpoint_problem(path: str) -> Optional[str]:
    """Why ``path`` is not a complete torch checkpoint, or None.

    Checks the zip container ``torch.save`` writes (its central directory
    and every member's CRC), without unpickling anything. A legacy
    (pre-zip) pickle checkpoint is not checked."""
    import zipfile
    try:
        size = os.path.getsize(path)
    except OSError as e:
        return str(e)
    if size == 0:
        return 'the file is empty'
    if not zipfile.is_zipfile(path):
        with open(path, 'rb') as f:
            if f.read(1) == b'\x80':  # legacy pickle format
                return None
        return ('not a complete torch checkpoint (no zip central '
                'directory: truncated?)')
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except Exception as e:  # noqa: BLE001 (zipfile raises many types)
        return f'unreadable zip container ({type(e).__name__}: {e})'
    if bad is not None:
        return f'corrupted: the CRC of its member {bad!r} does not match'
    return None


def check_resume_checkpoint(path: str) -> None:
    """Refuse a truncated or corrupted checkpoint given to ``--resume``.

    torch's own error for such a file (``PytorchStreamReader failed reading
    zip archive``, an unpickling error) comes after the runner is built and
    names neither the file nor what to do. This check reads the file's zip
    container (no unpickling) before the runner is built.

    Args:
        path (str): The checkpoint (a local file; URIs are not checked).

    Raises:
        ValueError: Naming the file, what is wrong with it and the newest
            complete ``epoch_N.pth`` / ``iter_N.pth`` next to it (or that
            there is none).
    """
    import re
    if '://' in path or not os.path.isfile(path):
        return
    problem = _checkpoint_problem(path)
    if problem is None:
        return
    dirname = os.path.dirname(os.path.abspath(path))
    pattern = re.compile(r'^(epoch|iter)_(\d+)\.pth$')
    others = sorted(
        (os.path.join(dirname, n) for n in os.listdir(dirname)
         if pattern.match(n)
         and not os.path.samefile(os.path.join(dirname, n), path)),
        key=lambda p: os.stat(p).st_mtime_ns, reverse=True)
    previous = next((p for p in others if _checkpoint_problem(p) is None),
                    None)
    hint = (f'the newest complete checkpoint there is {previous}: resume '
            f'with --resume {previous}' if previous else
            f'there is no complete epoch_*/iter_*.pth in {dirname}')
    raise ValueError(f'--resume {path}: {problem}; {hint}')
