r"""RecursiveMix's history: the previous step's mixed batch, per process.

RecursiveMix (`RecursiveMix: Mixed Learning with History
<https://arxiv.org/abs/2203.06844>`_, Yang et al., NeurIPS 2022; official
code: https://github.com/implus/RecursiveMix-pytorch) pastes the previous
step's *mixed* batch into the current one. :class:`RecursiveMixHistory` is
the one owner of that state in every framework:

* classification: a submodule of ``MixImageClassifier`` (``rm_history``),
  storing the mixed inputs with their targets and logits;
* detection and segmentation: a submodule of the ``RecursiveMix`` batch
  augment, storing the mixed inputs, their valid sizes and the task's
  targets (instances, label maps).

It clears itself when the epoch in mmengine's ``MessageHub`` changes (the
first step of each epoch is unmixed, as the official code) unless
``carry_history``, and saves itself in checkpoints through
``get_extra_state`` / ``set_extra_state``. An empty history is an empty
tensor there: under DDP mmengine broadcasts every ``state_dict`` entry from
rank 0 when training starts and fails on None. The history is per process,
as in the paper; :class:`~mixplugins.engine.ExactResumeHook` saves and
restores every rank's.
"""
from typing import Any, Dict, Optional, Tuple, Union

import torch
from mmengine.logging import MessageHub
from torch import Tensor, nn

from ..core.checks import check_bool

__all__ = ['RecursiveMixHistory']


def _move(value: Any, device: torch.device) -> Any:
    if isinstance(value, Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: _move(v, device) for k, v in value.items()}
    return value


def _detach(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.detach().clone()
    if isinstance(value, dict):
        return {k: _detach(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_detach(v) for v in value]
    return value


class RecursiveMixHistory(nn.Module):
    """The previous step's mixed batch (per process).

    Holds ``inputs`` (the mixed images, (B, C, H, W)) and named task fields
    (``targets`` and ``logits`` in classification, ``shapes`` and
    ``samples`` in detection, ``shapes`` and ``maps`` in segmentation).
    Tensor fields, and tensors inside dict fields, follow the images to
    their device; per-image lists (``shapes``, ``samples``) are indexed by
    :meth:`rows`.

    Args:
        carry_history (bool): Keep the history across epochs. False (the
            official behaviour) clears it when the epoch read from mmengine's
            ``MessageHub`` changes, so the first step of each epoch is
            unmixed. Under ``IterBasedTrainLoop`` the epoch never changes,
            so the history is carried over the whole run. Defaults to False.
    """

    def __init__(self, carry_history: bool = False) -> None:
        super().__init__()
        self.carry_history = check_bool('carry_history', carry_history)
        self.epoch: Optional[int] = None
        self.inputs: Optional[Tensor] = None
        self.fields: Dict[str, Any] = {}

    def __len__(self) -> int:
        return 0 if self.inputs is None else self.inputs.shape[0]

    def __getitem__(self, name: str) -> Any:
        return self.fields[name]

    def clear(self) -> None:
        """Forget the stored batch."""
        self.inputs = None
        self.fields = {}

    def sync_epoch(self) -> None:
        """Clear the history when a new epoch starts (unless
        ``carry_history``)."""
        epoch = MessageHub.get_current_instance().get_info('epoch')
        if epoch != self.epoch:
            if not self.carry_history:
                self.clear()
            self.epoch = epoch

    def store(self, inputs: Tensor, **fields: Any) -> None:
        """Keep this step's mixed batch (detached copies).

        Args:
            inputs (Tensor): Mixed images (B, C, H, W).
            **fields: Task fields (tensors, dicts of tensors, per-image
                lists), stored under their names.
        """
        self.inputs = inputs.detach().clone()
        self.fields = {k: _detach(v) for k, v in fields.items()}

    def to_device(self, device: Union[str, torch.device]) -> None:
        """Move the stored tensors to ``device`` (a history restored from a
        checkpoint onto the CPU moves once, at its first use)."""
        if self.inputs is not None and self.inputs.device != torch.device(
                device):
            self.inputs = self.inputs.to(device)
            self.fields = {k: _move(v, device) for k, v in self.fields.items()}

    def rows(self, batch_size: int) -> Tensor:
        """History row of each of ``batch_size`` images: ``b`` for image
        ``b``, cycled when the history is smaller (a carried short last
        batch, or a batch size that changed)."""
        return torch.arange(batch_size) % max(len(self), 1)

    def take(self, batch_size: int, device: Union[str, torch.device],
             *names: str) -> Tuple[Tensor, ...]:
        """The stored images and tensor fields ``names`` for a batch.

        Args:
            batch_size (int): Images in the current batch.
            device (str | torch.device): Where the batch lives.
            *names (str): Tensor fields to return after the images.

        Returns:
            tuple[Tensor, ...]: ``(inputs, *fields)``, row ``b`` for image
            ``b`` (see :meth:`rows`).
        """
        self.to_device(device)
        n = len(self)
        values = (self.inputs, ) + tuple(self.fields[k] for k in names)
        if n >= batch_size:
            return tuple(v[:batch_size] for v in values)
        index = self.rows(batch_size).to(self.inputs.device)
        return tuple(v[index] for v in values)

    def get_extra_state(self) -> Union[Dict[str, Any], Tensor]:
        if self.inputs is None:
            return torch.zeros(0)
        return dict(epoch=self.epoch, inputs=self.inputs, **self.fields)

    def set_extra_state(self, state: Union[Dict[str, Any], Tensor]) -> None:
        if not isinstance(state, dict) or 'inputs' not in state:
            self.clear()
            return
        state = dict(state)
        self.epoch = state.pop('epoch', None)
        self.inputs = state.pop('inputs')
        self.fields = state

    def extra_repr(self) -> str:
        return f'carry_history={self.carry_history}, len={len(self)}'
