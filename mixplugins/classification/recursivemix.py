r"""RecursiveMix as an mmpretrain batch augment, and its history.

Proposed in `RecursiveMix: Mixed Learning with History
<https://arxiv.org/abs/2203.06844>`_ (Yang et al., NeurIPS 2022); official
code: https://github.com/implus/RecursiveMix-pytorch.
"""
from typing import NamedTuple, Optional, Tuple

import torch
from mmpretrain.registry import BATCH_AUGMENTS
from torch import Tensor

from ..core.checks import (check_bool, check_choice, check_number,
                           check_paste_alpha)
from ..core.recursive import (INTERPOLATION_MODES, RecursiveMixParams,
                              paste_history, sample_box)
from ..engine.finite import check_finite_batch
from ..engine.history import RecursiveMixHistory
from .base import ModelBoundAugment

__all__ = ['RecursiveMix', 'RecursiveMixStep']


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
    (``rm_history``, a
    :class:`~mixplugins.engine.history.RecursiveMixHistory`) and the RoI head
    ``fc_roi``. After each call the augment keeps what it drew as
    ``last_params`` (:class:`~mixplugins.core.recursive.RecursiveMixParams`:
    one box for the whole batch, repeated per image).

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
        self.omega = check_number('omega', omega, 0.0)
        self.interpolation = check_choice('interpolation', interpolation,
                                          INTERPOLATION_MODES)
        self.carry_history = check_bool('carry_history', carry_history)
        self.last_params: Optional[RecursiveMixParams] = None

    @property
    def history(self) -> RecursiveMixHistory:
        """The history, owned by the bound classifier (``rm_history``)."""
        return self.model.rm_history

    def make_params(self, batch_size: int, height: int,
                    width: int) -> RecursiveMixParams:
        """Draw the paste box (one per batch, as the official code) for a
        non-empty history; all-zero boxes and ``lam`` 1 for an empty one."""
        n = batch_size
        boxes = torch.zeros(n, 4, dtype=torch.long)
        src_boxes = torch.zeros(n, 4, dtype=torch.long)
        lam = torch.ones(n)
        if len(self.history):
            box = torch.tensor(sample_box(height, width, self.alpha))
            boxes[:] = box
            hh, hw = self.history.inputs.shape[-2:]
            src_boxes[:, 2:] = torch.tensor([hw, hh])
            area = int((box[2] - box[0]) * (box[3] - box[1]))
            lam[:] = 1.0 - area / (height * width)
        return RecursiveMixParams(boxes, lam, self.history.rows(n), src_boxes)

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
        check_finite_batch('RecursiveMix', batch_inputs)
        history = self.history
        history.sync_epoch()
        scores = batch_scores.float()
        b, _, h, w = batch_inputs.shape
        params = self.last_params = self.make_params(b, h, w)
        if len(history) == 0:
            return batch_inputs.clone(), scores
        hist_inputs, hist_targets, hist_logits = history.take(
            b, batch_inputs.device, 'targets', 'logits')
        box = tuple(params.boxes[0].tolist())
        mixed, targets, lam = paste_history(batch_inputs, scores, hist_inputs,
                                            hist_targets, box,
                                            self.interpolation)
        self.model.set_recursive_step(
            RecursiveMixStep(box, lam, hist_logits, self.omega))
        return mixed, targets
