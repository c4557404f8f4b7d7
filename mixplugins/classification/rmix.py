r"""R-Mix as an mmpretrain batch augment.

Proposed in `Expeditious Saliency-guided Mix-up through Random Gradient
Thresholding <https://arxiv.org/abs/2212.04875>`_ (Luu et al., AAAI'23
Practical-DL workshop); official code:
https://github.com/minhlong94/Random-Mixup.
"""
import math
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmpretrain.registry import BATCH_AUGMENTS
from torch import Tensor

from ..core.rmix import (check_grids, check_quantile_levels, grid_masks,
                         mix_by_masks, sample_rmix_params, saliency_from_grad)
from ..core.sampling import check_positive
from .base import ModelBoundAugment

__all__ = ['RMix']

SALIENCY_BN_MODES = ('train', 'eval')
PARTNERS = ('randperm', 'flip')


@BATCH_AUGMENTS.register_module()
class RMix(ModelBoundAugment):
    r"""R-Mix: saliency-guided mixup with random gradient thresholds.

    Every step: (1) a clean forward/backward gives the input gradient of the
    cross-entropy (the saliency; only the input gradient is computed, so no
    parameter gradient, optimizer state or DDP reducer is touched);
    (2) each saliency map is average-pooled to a random ``grid x grid`` and
    the cells at or above a random per-image quantile are kept;
    (3) each image is mixed with a partner: where both masks agree the
    pixels are blended with :math:`\lambda \sim \mathrm{Beta}(\alpha,
    \alpha)`, elsewhere the salient image wins; labels are mixed by area
    (see :func:`mixplugins.core.rmix.mix_by_masks`).

    Needs ``model.type='MixImageClassifier'``, which runs the clean pass.

    Args:
        alpha (float): Beta concentration of :math:`\lambda`. Official:
            1.0 on CIFAR, 0.2 on ImageNet. Defaults to 1.0.
        grids (Sequence[int]): Mixing grid sizes, one drawn per batch; each
            must be <= min(H, W) of the images (checked at every call,
            before the clean pass). Official: (2, 4) (CIFAR draws pool
            kernels {8, 16} px on 32 px images). Defaults to (2, 4).
        quantile_levels (Sequence[float], optional): Quantile levels in
            [0, 1], one drawn per image. Defaults to None, the official
            ``linspace(0, 0.99, 10)``.
        partner (str): ``'randperm'`` (CIFAR) or ``'flip'`` (ImageNet).
            Defaults to ``'randperm'``.
        saliency_bn (str): BatchNorm mode of the clean pass: ``'train'`` as
            the official code (batch statistics; running stats are updated
            by the clean batch) or ``'eval'`` (running stats, as OpenMixup's
            saliency mixups). Defaults to ``'train'``.
        clean_loss_weight (float): Weight of the cross-entropy of the clean
            pass added to the training loss (logged as ``loss_clean``; one
            backward for both terms). Official: 0 on CIFAR (the clean
            gradient is discarded), 1 on ImageNet. Defaults to 0.0.
    """

    #: The name of :attr:`grids` in the constructor (for error messages).
    _grids_arg = 'grids'

    def __init__(self,
                 alpha: float = 1.0,
                 grids: Sequence[int] = (2, 4),
                 quantile_levels: Optional[Sequence[float]] = None,
                 partner: str = 'randperm',
                 saliency_bn: str = 'train',
                 clean_loss_weight: float = 0.0) -> None:
        super().__init__()
        self.alpha = check_positive('alpha', alpha)
        if not math.isfinite(self.alpha):
            raise ValueError(f'`alpha` must be a finite number > 0, got '
                             f'{alpha!r}')
        self.grids = check_grids(grids)
        self.quantile_levels = check_quantile_levels(quantile_levels)
        if partner not in PARTNERS:
            raise ValueError(f'`partner` must be one of {PARTNERS}, got '
                             f'{partner!r}')
        self.partner = partner
        if saliency_bn not in SALIENCY_BN_MODES:
            raise ValueError(f'`saliency_bn` must be one of '
                             f'{SALIENCY_BN_MODES}, got {saliency_bn!r}')
        self.saliency_bn = saliency_bn
        is_number = not isinstance(clean_loss_weight, bool) and isinstance(
            clean_loss_weight, (int, float))
        if not (is_number and 0 <= clean_loss_weight < math.inf):
            raise ValueError('`clean_loss_weight` must be a finite number >= '
                             f'0, got {clean_loss_weight!r}')
        self.clean_loss_weight = float(clean_loss_weight)

    def _check_batch(self, batch_inputs: Tensor, batch_scores: Tensor) -> None:
        """Refuse a batch the augment cannot mix, before any work.

        Raised before the clean pass, so a refused batch leaves no trace
        (no BatchNorm statistics updated, no ``loss_clean`` pending).

        Raises:
            ValueError: ``batch_inputs`` is not (B, C, H, W),
                ``batch_scores`` is not (B, K), or a grid of ``grids`` is
                larger than the image (``min(H, W)``).
        """
        name = type(self).__name__
        if not isinstance(batch_inputs, Tensor) or batch_inputs.dim() != 4:
            raise ValueError(f'{name} expects images of shape (B, C, H, W), '
                             f'got {getattr(batch_inputs, "shape", None)}')
        if not isinstance(batch_scores, Tensor) or batch_scores.dim(
        ) != 2 or batch_scores.shape[0] != batch_inputs.shape[0]:
            raise ValueError(
                f'{name} expects one-hot scores of shape (B, K) with '
                f'B = {batch_inputs.shape[0]} images, got '
                f'{tuple(getattr(batch_scores, "shape", ()))}')
        side = min(batch_inputs.shape[-2:])
        if max(self.grids) > side:
            raise ValueError(
                f'`{self._grids_arg}` {self.grids} must be <= min(H, W) = '
                f'{side} of the images ({tuple(batch_inputs.shape[-2:])})')

    def saliency(self, inputs: Tensor, labels: Tensor) -> Tensor:
        """Run the clean pass on the bound model; return (B, H, W)."""
        model = self.model
        x = inputs.detach().requires_grad_(True)
        with torch.enable_grad(), model.bn_mode(self.saliency_bn):
            logits = model(x, mode='tensor')
            loss = F.cross_entropy(logits.float(), labels)
            keep_graph = self.clean_loss_weight > 0
            (grad, ) = torch.autograd.grad(loss, x, retain_graph=keep_graph)
        if keep_graph:
            model.add_step_loss('loss_clean', self.clean_loss_weight * loss)
        return saliency_from_grad(grad)

    def __call__(self, batch_inputs: Tensor,
                 batch_scores: Tensor) -> Tuple[Tensor, Tensor]:
        """Mix a batch.

        Args:
            batch_inputs (Tensor): Normalised images (B, C, H, W).
            batch_scores (Tensor): One-hot (or soft) scores (B, K); the
                clean pass uses their argmax as the label.

        Returns:
            tuple[Tensor, Tensor]: Mixed images and mixed scores.
        """
        self._check_batch(batch_inputs, batch_scores)
        scores = batch_scores.float()
        saliency = self.saliency(batch_inputs, scores.argmax(1))
        params = sample_rmix_params(
            batch_inputs.shape[0],
            alpha=self.alpha,
            grids=self.grids,
            quantile_levels=self.quantile_levels,
            partner=self.partner,
            device=batch_inputs.device)
        masks = grid_masks(saliency, params.grid, params.quantiles)
        return mix_by_masks(batch_inputs, scores, masks, params.index,
                            params.lam)
