"""What the tools need: the runner builder of ``tools/train.py`` /
``tools/test.py`` (:mod:`.launcher`) and the checkpoint converter of
``tools/convert_checkpoint.py`` / ``tools/publish_model.py``
(:mod:`.convert`)."""
from .launcher import (FRAMEWORK_SCOPES, apply_framework_defaults,
                       build_runner, cpu_distributed_runner, framework_of,
                       init_cpu_process_group, init_framework_scope)

__all__ = [
    'FRAMEWORK_SCOPES', 'apply_framework_defaults', 'build_runner',
    'cpu_distributed_runner', 'framework_of', 'init_cpu_process_group',
    'init_framework_scope'
]
