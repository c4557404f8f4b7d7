"""Refuse a batch with NaN or infinite pixels before an augment mixes it.

A NaN pixel mixed into a batch spreads to the loss, the gradients and then
every weight; mmengine 0.10.7's ``OptimWrapper`` steps on it silently (only
``AmpOptimWrapper``'s dynamic loss scaler skips non-finite gradients). Each
mixplugins augment calls :func:`check_finite_batch` first, so such a run
stops at the first bad batch with the augment and the iteration named,
before the augment changes any state (history, agent, BN statistics).
Costs one reduction over the batch and one host synchronisation per step.
"""
import torch
from torch import Tensor

__all__ = ['check_finite_batch']


def _current_iter():
    try:
        from mmengine.logging import MessageHub
        return MessageHub.get_current_instance().get_info('iter')
    except Exception:  # no runner: a direct call
        return None


def check_finite_batch(augment: str, inputs: Tensor) -> None:
    """Raise if ``inputs`` has NaN or infinite values.

    Args:
        augment (str): The augment's name, for the message.
        inputs (Tensor): The batch of images.

    Raises:
        ValueError: Naming the augment, the iteration (when a runner runs)
            and the number of non-finite values.
    """
    finite = torch.isfinite(inputs)
    if bool(finite.all()):
        return
    it = _current_iter()
    where = '' if it is None else f' at iteration {it + 1}'
    bad = int((~finite).sum())
    raise ValueError(
        f'{augment}: the input batch{where} has {bad} non-finite value(s) '
        f'(NaN or inf) among {inputs.numel()}; the data (or the data '
        'preprocessor) produced them. Stopped before mixing: nothing was '
        'changed (see docs/bad_input.md).')
