r"""R-Mix as an mmpretrain batch augment.

Proposed in `Expeditious Saliency-guided Mix-up through Random Gradient
Thresholding <https://arxiv.org/abs/2212.04875>`_ (Luu et al., AAAI'23
Practical-DL workshop); official code:
https://github.com/minhlong94/Random-Mixup.
"""
import contextlib
import functools
from typing import Iterator, Optional, Sequence, Tuple

from mmpretrain.registry import BATCH_AUGMENTS
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..core.checks import (check_choice, check_grids, check_number,
                           check_quantile_levels)
from ..core.rmix import (PARTNERS, RMixParams, cell_masks, input_saliency,
                         mix_by_masks, saliency_size, sample_rmix_params,
                         upsample_masks)
from ..engine.finite import check_finite_batch
from .base import ModelBoundAugment

__all__ = ['RMix']

SALIENCY_BN_MODES = ('train', 'eval')


@contextlib.contextmanager
def _keep_running_stats(model: nn.Module) -> Iterator[None]:
    """Train-mode BatchNorm layers of ``model`` normalise with the batch
    statistics inside the block but leave their running statistics (and
    ``num_batches_tracked``) unchanged: ``track_running_stats`` is off."""
    switched = [
        m for m in model.modules()
        if isinstance(m, _BatchNorm) and m.training and m.track_running_stats
    ]
    for m in switched:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in switched:
            m.track_running_stats = True


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

    Each call draws (:meth:`make_params`: the clean pass, the grid, the
    quantiles, the partners, :math:`\lambda` and the cell masks) and then
    applies (:meth:`transform`: :func:`~mixplugins.core.rmix.mix_by_masks`),
    and keeps what it drew as ``last_params``
    (:class:`~mixplugins.core.rmix.RMixParams`, with the saliency and the
    cell masks).

    Needs ``model.type='MixImageClassifier'``, which runs the clean pass.

    ``saliency_scale < 1`` is an option beyond the paper: the clean pass
    runs on the batch resized by that factor (bilinear, antialiased), the
    saliency (kept in ``last_params`` at that resolution) is pooled to the
    grid as before, and the masks mix the images at full resolution. The
    clean pass costs about ``saliency_scale ** 2`` of the full one, but a
    network trained at one scale finds other cells salient in the smaller
    images, so the masks move (step time and mask agreement are measured in
    ``benchmarks/rmix_saliency.py``; see the README). Train-mode BatchNorm then
    normalises the resized batch with its own statistics but does not
    update the running statistics with them (they stay those of the
    full-resolution batches that are validated on); the clean loss
    (``clean_loss_weight > 0``) would train on resized images, so that
    combination is refused. Under float16 autocast the
    clean pass scales its loss (see
    :func:`~mixplugins.core.rmix.input_saliency`).

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
        saliency_scale (float): Resize factor of the batch for the clean
            pass, in (0, 1]; the grids must fit the resized images; < 1
            needs ``clean_loss_weight=0``. 1.0 is the official algorithm;
            0.5 makes R-Mix's step cost close to CutMix's (not in the
            paper). Defaults to 1.0.
    """

    #: The name of :attr:`grids` in the constructor (for error messages).
    _grids_arg = 'grids'

    def __init__(self,
                 alpha: float = 1.0,
                 grids: Sequence[int] = (2, 4),
                 quantile_levels: Optional[Sequence[float]] = None,
                 partner: str = 'randperm',
                 saliency_bn: str = 'train',
                 clean_loss_weight: float = 0.0,
                 saliency_scale: float = 1.0) -> None:
        super().__init__()
        self.alpha = check_number('alpha', alpha, 0.0, low_open=True)
        self.grids = check_grids(grids, self._grids_arg)
        self.quantile_levels = check_quantile_levels(quantile_levels)
        self.partner = check_choice('partner', partner, PARTNERS)
        self.saliency_bn = check_choice('saliency_bn', saliency_bn,
                                        SALIENCY_BN_MODES)
        self.clean_loss_weight = check_number('clean_loss_weight',
                                              clean_loss_weight, 0.0)
        self.saliency_scale = check_number('saliency_scale', saliency_scale,
                                           0.0, 1.0, low_open=True)
        if self.saliency_scale < 1 and self.clean_loss_weight > 0:
            raise ValueError(
                f'`saliency_scale` ({saliency_scale}) < 1 needs '
                f'`clean_loss_weight` = 0, got {clean_loss_weight}: the '
                'clean loss would train on the resized images')
        self.last_params: Optional[RMixParams] = None

    def _check_batch(self, batch_inputs: Tensor, batch_scores: Tensor) -> None:
        """Refuse a batch the augment cannot mix, before any work.

        Raised before the clean pass, so a refused batch leaves no trace
        (no BatchNorm statistics updated, no ``loss_clean`` pending).

        Raises:
            ValueError: ``batch_inputs`` is not (B, C, H, W),
                ``batch_scores`` is not (B, K), or a grid of ``grids`` is
                larger than the images of the clean pass (``min(H, W)``,
                times ``saliency_scale``).
        """
        name = type(self).__name__
        if not isinstance(batch_inputs, Tensor) or batch_inputs.dim() != 4:
            raise ValueError(f'{name} expects images of shape (B, C, H, W), '
                             f'got {getattr(batch_inputs, "shape", None)}')
        check_finite_batch(name, batch_inputs)
        if not isinstance(batch_scores, Tensor) or batch_scores.dim(
        ) != 2 or batch_scores.shape[0] != batch_inputs.shape[0]:
            raise ValueError(
                f'{name} expects one-hot scores of shape (B, K) with '
                f'B = {batch_inputs.shape[0]} images, got '
                f'{tuple(getattr(batch_scores, "shape", ()))}')
        self._check_grid(self._grids_arg, self.grids, batch_inputs)

    def _check_grid(self, name: str, grids: Sequence[int],
                    batch_inputs: Tensor) -> None:
        """Refuse ``grids`` larger than the clean pass's images."""
        size = tuple(batch_inputs.shape[-2:])
        if self.saliency_scale == 1:
            side, where = min(size), f'min(H, W) = {min(size)} of the images'
        else:
            side = min(saliency_size(*size, self.saliency_scale))
            where = (f'min(h, w) = {side} of the clean pass (the images '
                     f'resized by saliency_scale={self.saliency_scale:g})')
        if max(grids) > side:
            raise ValueError(f'`{name}` {tuple(grids)} must be <= {where} '
                             f'({size})')

    def clean_pass(self, inputs: Tensor,
                   labels: Tensor) -> Tuple[Tensor, Tensor]:
        """The clean pass on the bound model:
        :func:`~mixplugins.core.rmix.input_saliency` on the batch resized by
        ``saliency_scale``, with BatchNorm in the ``saliency_bn`` mode; adds
        ``loss_clean`` to the step's losses when ``clean_loss_weight > 0``.

        Returns:
            tuple[Tensor, Tensor]: The saliency (B, h, w), ``(h, w)`` the
            images' (H, W) times ``saliency_scale``
            (:func:`~mixplugins.core.rmix.saliency_size`), and the detached
            clean logits (B, K).
        """
        model = self.model
        keep_loss = self.clean_loss_weight > 0
        # The running statistics describe full-resolution images (the ones
        # validated on): a resized clean pass does not update them.
        resized = self.saliency_scale < 1
        with model.bn_mode(self.saliency_bn), (
                _keep_running_stats(model)
                if resized else contextlib.nullcontext()):
            out = input_saliency(
                functools.partial(model, mode='tensor'),
                inputs,
                labels,
                scale_factor=self.saliency_scale,
                return_logits=True,
                return_loss=keep_loss)
        if keep_loss:
            model.add_step_loss('loss_clean', self.clean_loss_weight * out[2])
        return out[0], out[1]

    def choose_quantiles(self, saliency: Tensor,
                         logits: Tensor) -> Optional[Tensor]:
        """Per-image quantile levels chosen from the clean pass; None (R-Mix)
        lets :func:`~mixplugins.core.rmix.sample_rmix_params` draw them
        uniformly from ``quantile_levels``."""
        return None

    def make_params(self, inputs: Tensor, scores: Tensor) -> RMixParams:
        r"""Draw one step: the clean pass (saliency), then grid, quantiles,
        partners and :math:`\lambda`, then the cell masks.

        Args:
            inputs (Tensor): Normalised images (B, C, H, W).
            scores (Tensor): Float scores (B, K); their argmax is the label.

        Returns:
            RMixParams: The record, with ``saliency`` and ``masks`` set.
        """
        saliency, logits = self.clean_pass(inputs, scores.argmax(1))
        params = sample_rmix_params(
            inputs.shape[0],
            alpha=self.alpha,
            grids=self.grids,
            quantile_levels=self.quantile_levels,
            partner=self.partner,
            quantiles=self.choose_quantiles(saliency, logits),
            device=inputs.device)
        masks = cell_masks(saliency, params.grid, params.quantiles)
        return params._replace(saliency=saliency, masks=masks)

    def transform(self, inputs: Tensor, scores: Tensor,
                  params: RMixParams) -> Tuple[Tensor, Tensor]:
        """Apply drawn parameters: :func:`~mixplugins.core.rmix.mix_by_masks`
        with the cell masks upsampled to the images."""
        masks = upsample_masks(params.masks, *inputs.shape[-2:])
        return mix_by_masks(inputs, scores, masks, params.index, params.lam)

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
        params = self.last_params = self.make_params(batch_inputs, scores)
        return self.transform(batch_inputs, scores, params)
