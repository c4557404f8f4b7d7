r"""RecursiveMix as an mmpretrain batch augment, and its history.

Proposed in `RecursiveMix: Mixed Learning with History
<https://arxiv.org/abs/2203.06844>`_ (Yang et al., NeurIPS 2022); official
code: https://github.com/implus/RecursiveMix-pytorch.
"""
import math
from typing import Any, NamedTuple, Optional, Tuple

import torch
from mmengine.logging import MessageHub
from mmpretrain.registry import BATCH_AUGMENTS
from torch import Tensor, nn

from ..core.recursive import (INTERPOLATION_MODES, check_paste_alpha,
                              paste_history, sample_box)
from .base import ModelBoundAugment

__all__ = ['RecursiveMix', 'RecursiveMixHistory', 'RecursiveMixStep']


class RecursiveMixStep(NamedTuple):
    """What one RecursiveMix paste tells the classifier's loss.

    Attributes:
        box (tuple[int, int, int, int]): Paste box ``(x1, y1, x2, y2)``.
        lam (float): Visible fraction of the current images.
        hist_logits (Tensor): Logits of the pasted history images (B, K).
        omega (float): Weight of the consistency loss.
    """
    box: Tuple[int, int, int, int]
    lam: float
    hist_logits: Tensor
    omega: float


class RecursiveMixHistory(nn.Module):
    """The previous step's mixed inputs, targets and logits (per process).

    The single owner of RecursiveMix's state; a submodule of
    :class:`~mixplugins.classification.MixImageClassifier`, so it is saved in
    and restored from checkpoints (``rm_history._extra_state``). Under DDP
    each process keeps its own history, as in the paper; mmengine saves
    checkpoints from rank 0 only, so a resumed multi-process run restores
    rank 0's history on every rank.

    Args:
        carry (bool): Keep the history across epochs. False (the official
            behaviour) clears it when the epoch read from mmengine's
            ``MessageHub`` changes, so the first step of each epoch is
            unmixed. Under ``IterBasedTrainLoop`` the epoch never changes,
            so the history is carried over the whole run. Defaults to False.
    """

    def __init__(self, carry: bool = False) -> None:
        super().__init__()
        self.carry = carry
        self.epoch: Optional[int] = None
        self.inputs: Optional[Tensor] = None
        self.targets: Optional[Tensor] = None
        self.logits: Optional[Tensor] = None

    def __len__(self) -> int:
        return 0 if self.inputs is None else self.inputs.shape[0]

    def clear(self) -> None:
        """Forget the stored batch."""
        self.inputs = self.targets = self.logits = None

    def sync_epoch(self) -> None:
        """Clear the history when a new epoch starts (unless ``carry``)."""
        epoch = MessageHub.get_current_instance().get_info('epoch')
        if epoch != self.epoch:
            if not self.carry:
                self.clear()
            self.epoch = epoch

    def update(self, inputs: Tensor, targets: Tensor, logits: Tensor) -> None:
        """Store this step's mixed batch (detached copies)."""
        self.inputs = inputs.detach().clone()
        self.targets = targets.detach().clone().float()
        self.logits = logits.detach().clone()

    def take(self, batch_size: int,
             device: torch.device) -> Tuple[Tensor, Tensor, Tensor]:
        """The history for a batch of ``batch_size`` images on ``device``.

        Image ``b`` gets history image ``b``; a history smaller than the
        batch (only possible when carried over a short last batch) is
        cycled. A history restored from a checkpoint onto the CPU moves to
        ``device`` once.
        """
        if self.inputs.device != torch.device(device):
            self.inputs, self.targets, self.logits = (
                t.to(device) for t in (self.inputs, self.targets, self.logits))
        n = len(self)
        if n >= batch_size:
            return (self.inputs[:batch_size], self.targets[:batch_size],
                    self.logits[:batch_size])
        index = torch.arange(batch_size, device=self.inputs.device) % n
        return self.inputs[index], self.targets[index], self.logits[index]

    def get_extra_state(self) -> Any:
        # mmengine broadcasts every state_dict entry from rank 0 when it
        # initialises a distributed model, so an empty history must still be
        # a tensor.
        if self.inputs is None:
            return torch.zeros(0)
        return dict(
            epoch=self.epoch,
            inputs=self.inputs,
            targets=self.targets,
            logits=self.logits)

    def set_extra_state(self, state: Any) -> None:
        if not isinstance(state, dict):
            self.clear()
            return
        self.epoch = state.get('epoch')
        self.inputs, self.targets, self.logits = (
            state.get(k) for k in ('inputs', 'targets', 'logits'))


@BATCH_AUGMENTS.register_module()
class RecursiveMix(ModelBoundAugment):
    r"""RecursiveMix: paste the previous mixed batch into the current one.

    The previous step's *mixed* batch is resized (not cropped) into one
    random box of the current batch, whose nominal area fraction is
    :math:`U(0, \alpha)`; with the visible fraction :math:`\lambda`, labels
    become :math:`\lambda y + (1-\lambda) y^{hist}`. The classifier adds the
    consistency loss :math:`\omega (1-\lambda)\,
    \mathrm{CE}(\mathrm{fc_{roi}}(\mathrm{RoIAlign}(F, box)),
    \mathrm{softmax}(z^{hist}))` (logged as ``loss_consistency``).

    Needs ``model.type='MixImageClassifier'``, which owns the history
    (:class:`RecursiveMixHistory`) and the RoI head ``fc_roi``.

    Note:
        The official code passed RoIAlign a box transposed with respect to
        the pasted region (``recursivemix_spec.md`` §5.1, fixed upstream in
        2023); here the RoI is the pasted region.

    Args:
        alpha (float): Maximum nominal paste area fraction, in (0, 1].
            Official: 0.5. Defaults to 0.5.
        omega (float): Consistency loss weight, >= 0. Official: 0.5
            (ImageNet), 0.1 (CIFAR-10). Defaults to 0.5.
        interpolation (str): Resize mode of the history, one of
            ``'nearest'``, ``'nearest-exact'``, ``'bilinear'``,
            ``'bicubic'``, ``'area'``. Defaults to ``'nearest'`` (official).
        carry_history (bool): Keep the history across epochs instead of the
            official per-epoch reset. Defaults to False.
    """

    def __init__(self,
                 alpha: float = 0.5,
                 omega: float = 0.5,
                 interpolation: str = 'nearest',
                 carry_history: bool = False) -> None:
        super().__init__()
        self.alpha = check_paste_alpha(alpha)
        if isinstance(omega, bool) or not isinstance(
                omega, (int, float)) or not 0 <= omega < math.inf:
            raise ValueError(f'`omega` must be a finite number >= 0, got '
                             f'{omega!r}')
        self.omega = float(omega)
        if interpolation not in INTERPOLATION_MODES:
            raise ValueError(f'`interpolation` must be one of '
                             f'{INTERPOLATION_MODES}, got {interpolation!r}')
        self.interpolation = interpolation
        if not isinstance(carry_history, bool):
            raise TypeError('`carry_history` must be a bool, got '
                            f'{carry_history!r}')
        self.carry_history = carry_history

    def __call__(self, batch_inputs: Tensor,
                 batch_scores: Tensor) -> Tuple[Tensor, Tensor]:
        """Paste the history into the batch.

        Args:
            batch_inputs (Tensor): Normalised images (B, C, H, W).
            batch_scores (Tensor): One-hot or soft scores (B, K).

        Returns:
            tuple[Tensor, Tensor]: Mixed images and scores (new tensors).
        """
        if batch_scores.dim() != 2 or batch_scores.shape[0] != len(
                batch_inputs):
            raise ValueError('RecursiveMix expects scores of shape (B, K) '
                             f'with B = {len(batch_inputs)} images, got '
                             f'{tuple(batch_scores.shape)}')
        history = self.model.rm_history
        history.sync_epoch()
        scores = batch_scores.float()
        if len(history) == 0:
            return batch_inputs.clone(), scores
        b, _, h, w = batch_inputs.shape
        hist_inputs, hist_targets, hist_logits = history.take(
            b, batch_inputs.device)
        box = sample_box(h, w, self.alpha)
        mixed, targets, lam = paste_history(batch_inputs, scores, hist_inputs,
                                            hist_targets, box,
                                            self.interpolation)
        self.model.set_recursive_step(
            RecursiveMixStep(box, lam, hist_logits, self.omega))
        return mixed, targets
