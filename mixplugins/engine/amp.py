"""Automatic mixed precision on the CPU (bfloat16 autocast).

mmengine 0.10.7's ``AmpOptimWrapper`` cannot be built without an
accelerator: its ``__init__`` asserts ``is_cuda_available() or
is_npu_available() or is_mlu_available() or is_musa_available()``, although
``torch.autocast`` supports ``device_type='cpu'`` with bfloat16.
:class:`CPUAmpOptimWrapper` is the CPU counterpart: the plain
``OptimWrapper`` whose ``optim_context`` enters ``torch.autocast('cpu',
dtype=torch.bfloat16)`` -- where ``AmpOptimWrapper`` puts its autocast:
around the data preprocessor (where the batch augments, and so R-Mix's
saliency pass, run) and the forward; backward and step outside. bfloat16 has
float32's exponent range, so no loss scaling is needed.

``tools/train.py --amp`` (and a config with ``AmpOptimWrapper``) uses it
when no accelerator is available: see :func:`use_cpu_amp_if_needed`.
"""
import contextlib

import torch
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS

__all__ = ['CPUAmpOptimWrapper', 'has_accelerator', 'use_cpu_amp_if_needed']


@OPTIM_WRAPPERS.register_module()
class CPUAmpOptimWrapper(OptimWrapper):
    """``AmpOptimWrapper(dtype='bfloat16')`` for the CPU.

    Args:
        dtype (str or torch.dtype): The autocast dtype; only bfloat16 (CPU
            autocast has no loss scaler for float16). Defaults to
            ``'bfloat16'``.
        **kwargs: The arguments of ``mmengine.optim.OptimWrapper``
            (``optimizer``, ``accumulative_counts``, ``clip_grad``).

    Raises:
        ValueError: If ``dtype`` is not bfloat16.
    """

    def __init__(self, dtype='bfloat16', **kwargs) -> None:
        if dtype not in ('bfloat16', torch.bfloat16):
            raise ValueError(
                f"CPUAmpOptimWrapper: dtype must be 'bfloat16' (float16 "
                f'needs a loss scaler, which CPU autocast lacks), got '
                f'{dtype!r}')
        super().__init__(**kwargs)
        self.cast_dtype = torch.bfloat16

    @contextlib.contextmanager
    def optim_context(self, model):
        with super().optim_context(model), torch.autocast(
                'cpu', dtype=self.cast_dtype):
            yield


def has_accelerator() -> bool:
    """Whether mmengine's ``AmpOptimWrapper`` can be built here."""
    from mmengine.device import (is_cuda_available, is_mlu_available,
                                 is_musa_available, is_npu_available)
    return (is_cuda_available() or is_npu_available() or is_mlu_available()
            or is_musa_available())


def use_cpu_amp_if_needed(cfg, logger=print) -> bool:
    """Replace ``AmpOptimWrapper`` in ``cfg.optim_wrapper`` by
    :class:`CPUAmpOptimWrapper` when there is no accelerator.

    ``loss_scale`` is dropped (bfloat16 needs none); ``dtype`` must be unset
    or bfloat16.

    Args:
        cfg (mmengine.Config): The config, edited in place.
        logger (callable): Where the one-line notice goes. Defaults to
            ``print``.

    Returns:
        bool: Whether the wrapper was replaced.

    Raises:
        ValueError: If ``optim_wrapper.dtype`` is set to something other
            than bfloat16.
    """
    wrapper = cfg.get('optim_wrapper', None)
    if not wrapper or wrapper.get('type') != 'AmpOptimWrapper' or \
            has_accelerator():
        return False
    dtype = wrapper.get('dtype', None) or 'bfloat16'
    if dtype not in ('bfloat16', torch.bfloat16):
        raise ValueError(
            "optim_wrapper.dtype must be 'bfloat16' (or unset) for mixed "
            f'precision on the CPU, got {dtype!r}')
    wrapper.type = 'CPUAmpOptimWrapper'
    wrapper.dtype = 'bfloat16'
    wrapper.pop('loss_scale', None)
    logger('[mixplugins] no accelerator: AmpOptimWrapper -> '
           'CPUAmpOptimWrapper (bfloat16 autocast on the CPU)')
    return True
