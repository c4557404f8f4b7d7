"""The history that the det and seg RecursiveMix batch augments paste.

RecursiveMix (`RecursiveMix: Mixed Learning with History
<https://arxiv.org/abs/2203.06844>`_, Yang et al., NeurIPS 2022) pastes the
previous step's mixed batch into the current one. In mmdet and mmseg the
augment is a submodule of the data preprocessor and owns that history;
:class:`PasteHistoryAugment` is what the two have in common:

- the arguments ``alpha``, ``interpolation`` and ``carry_history``, checked
  when the config is built;
- the history (``hist_inputs`` plus task fields), cleared when the epoch in
  mmengine's ``MessageHub`` changes (the first step of each epoch is
  unmixed, as the official code) unless ``carry_history``;
- checkpointing through ``get_extra_state``/``set_extra_state``. An empty
  history is an empty tensor: under DDP mmengine broadcasts every
  ``state_dict`` entry from rank 0 when training starts and fails on None.

The history is per process. Subclasses name their task fields in
:attr:`HISTORY_FIELDS` and convert them in :meth:`_fields_to_state` /
:meth:`_fields_from_state`.
"""
from typing import Any, Dict, Union

import torch
from mmengine.logging import MessageHub
from torch import Tensor, nn

from .core.boxes import PASTE_MODES
from .core.recursive import check_paste_alpha

__all__ = ['PasteHistoryAugment']


class PasteHistoryAugment(nn.Module):
    """Base of the det/seg RecursiveMix batch augments (see the module
    docstring).

    Args:
        alpha (float): Maximum nominal paste area fraction, in (0, 1].
        interpolation (str): Resize of the history image, one of
            :data:`~mixplugins.core.boxes.PASTE_MODES`.
        carry_history (bool): Keep the history across epochs.

    Raises:
        ValueError: If ``alpha`` or ``interpolation`` is out of range.
        TypeError: If ``carry_history`` is not a bool.
    """

    #: Task fields of the history besides ``hist_inputs``: attribute name ->
    #: its empty value's factory.
    HISTORY_FIELDS: Dict[str, Any] = {}

    def __init__(self, alpha: float, interpolation: str,
                 carry_history: bool) -> None:
        super().__init__()
        self.alpha = check_paste_alpha(alpha)
        if interpolation not in PASTE_MODES:
            raise ValueError(f'`interpolation` must be one of {PASTE_MODES},'
                             f' got {interpolation!r}')
        self.interpolation = interpolation
        if not isinstance(carry_history, bool):
            raise TypeError('`carry_history` must be a bool, got '
                            f'{carry_history!r}')
        self.carry_history = carry_history
        self.epoch = None
        self.clear_history()

    def clear_history(self) -> None:
        """Forget the stored batch."""
        self.hist_inputs = None
        for name, empty in self.HISTORY_FIELDS.items():
            setattr(self, name, empty())

    def _sync_epoch(self) -> None:
        """Clear the history when mmengine's epoch changed (unless
        ``carry_history``)."""
        epoch = MessageHub.get_current_instance().get_info('epoch')
        if epoch != self.epoch:
            if not self.carry_history:
                self.clear_history()
            self.epoch = epoch

    def _fields_to_state(self) -> Dict[str, Any]:
        """The task fields as checkpoint entries."""
        raise NotImplementedError

    def _fields_from_state(self, state: Dict[str, Any]) -> None:
        """Restore the task fields from :meth:`_fields_to_state`'s."""
        raise NotImplementedError

    def get_extra_state(self) -> Union[Dict[str, Any], Tensor]:
        if self.hist_inputs is None:
            return torch.zeros(0)
        return dict(epoch=self.epoch, inputs=self.hist_inputs,
                    **self._fields_to_state())

    def set_extra_state(self, state: Union[Dict[str, Any], Tensor]) -> None:
        if not isinstance(state, dict):  # an empty history
            self.clear_history()
            return
        if not state:
            return
        self.epoch = state.get('epoch')
        self.hist_inputs = state.get('inputs')
        self._fields_from_state(state)

    def extra_repr(self) -> str:
        return (f'alpha={self.alpha}, interpolation={self.interpolation!r}, '
                f'carry_history={self.carry_history}')

