"""Runtime helpers: checkpoint fixes for mmengine 0.10.7 on current torch
and the runner builder used by ``tools/train.py`` / ``tools/test.py``."""
from .checkpoint import (allow_mm_checkpoint_globals, atomic_save_checkpoint,
                         install_atomic_save, install_patches,
                         mm_checkpoint_getattr, mm_checkpoint_safe_globals)
from .launcher import (FRAMEWORK_SCOPES, apply_framework_defaults,
                       build_runner, cpu_distributed_runner, framework_of,
                       init_cpu_process_group, init_framework_scope)

__all__ = [
    'allow_mm_checkpoint_globals', 'atomic_save_checkpoint',
    'install_atomic_save', 'install_patches', 'mm_checkpoint_getattr',
    'mm_checkpoint_safe_globals', 'FRAMEWORK_SCOPES',
    'apply_framework_defaults', 'build_runner', 'cpu_distributed_runner',
    'framework_of', 'init_cpu_process_group', 'init_framework_scope'
]
