r"""R-Mix kernels: grid masks and mask mixing (the saliency pass is in
:mod:`mixplugins.core.saliency`, re-exported here).

R-Mix was proposed in `Expeditious Saliency-guided Mix-up through Random
Gradient Thresholding <https://arxiv.org/abs/2212.04875>`_ (Luu et al.,
AAAI'23 Practical-DL workshop); official code:
https://github.com/minhlong94/Random-Mixup.

One R-Mix step (``../shared/reference/rmix_spec.md`` §1):

1. :func:`input_saliency` -- the input gradient of the cross-entropy on the
   clean batch, reduced to one map per image (RMS over channels).
2. :func:`grid_masks` -- average-pool each map to a ``grid x grid`` grid and
   keep the cells at or above a per-image quantile ``q_b`` of its cells.
3. :func:`mix_by_masks` -- pair every image with a partner ``index[b]``;
   where the two masks agree the pixels are blended with ``lam``, where they
   disagree the salient one is copied; labels are mixed by pixel area.

:func:`sample_rmix_params` draws ``grid``, ``quantiles``, ``index`` and
``lam`` with the official defaults; :class:`RMixParams` is the record of
one step (what was drawn, the saliency and the cell masks), which the
augments keep as ``last_params``. The kernels are stateless, vectorised
over the batch and keep the input's device and dtype.
"""
from typing import NamedTuple, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from .checks import (DEFAULT_QUANTILE_LEVELS, check_grids, check_images,
                     check_choice, check_int, check_positive,
                     check_quantile_levels)
from .saliency import (FP16_LOSS_SCALES, input_saliency, saliency_from_grad,
                       saliency_size)
from .sampling import sample_beta, sample_choice

__all__ = [
    'input_saliency', 'saliency_from_grad', 'saliency_size', 'cell_masks',
    'upsample_masks', 'FP16_LOSS_SCALES', 'grid_masks', 'mix_by_masks',
    'RMixParams', 'sample_rmix_params', 'DEFAULT_QUANTILE_LEVELS', 'PARTNERS',
    'check_quantile_levels', 'check_grids'
]

Lam = Union[float, Tensor]

#: How an image's partner is chosen: ``randperm(B)`` (CIFAR) or the flip
#: ``B-1, ..., 0`` (ImageNet).
PARTNERS = ('randperm', 'flip')


def _check_lam(lam: Lam) -> None:
    if isinstance(lam, Tensor):
        if lam.numel() != 1:
            raise ValueError(f'`lam` must be a scalar, got shape '
                             f'{tuple(lam.shape)}')
        if lam.device.type != 'cpu':
            return  # checking the value would synchronise with the device
        lam = float(lam)
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f'`lam` must be in [0, 1], got {lam!r}')


def _rowwise_quantile(values: Tensor, q: Tensor) -> Tensor:
    """``torch.quantile(values[b], q[b])`` for every row b, vectorised.

    Linear interpolation between the two closest ranks, computed as
    ``torch.quantile`` does (ranks ``q * (n - 1)``, ``lerp`` of the sorted
    neighbours). The vectorised ``lerp`` may round differently from the
    per-row call by at most an ulp; an integer rank (e.g. ``q = 0``) gives
    the sorted value itself, so ties behave identically.
    """
    n = values.shape[1]
    ordered = values.sort(dim=1).values
    if n == 1:
        return ordered[:, 0]
    ranks = q * (n - 1)
    # Rank r lies in the pair (below, below + 1), the last pair for r = n-1
    # (weight 1 there, which ``lerp`` resolves to the upper value exactly).
    below = ranks.floor().clamp_(max=n - 2)
    index = below.long().clamp_(min=0)[:, None, None].expand(-1, 1, 2)
    pairs = ordered.unfold(1, 2, 1)  # (B, n - 1, 2): neighbours, a view
    lo, hi = pairs.gather(1, index)[:, 0].unbind(1)
    return torch.lerp(lo, hi, ranks - below)


def _check_quantiles(quantiles: Tensor, b: int) -> Tensor:
    quantiles = torch.as_tensor(quantiles)
    if quantiles.shape != (b, ):
        raise ValueError(f'`quantiles` must have shape ({b},) (one level per '
                         f'image), got {tuple(quantiles.shape)}')
    if quantiles.device.type == 'cpu' and b > 0:
        low, high = torch.aminmax(quantiles)
        if not (float(low) >= 0 and float(high) <= 1):  # NaN fails too
            raise ValueError('`quantiles` must lie in [0, 1], got '
                             f'{quantiles.tolist()}')
    return quantiles


def cell_masks(saliency: Tensor, grid: int, quantiles: Tensor) -> Tensor:
    """The salient cells of a ``grid x grid`` grid, one mask per image.

    Each map is average-pooled to ``grid x grid`` cells
    (:func:`~torch.nn.functional.adaptive_avg_pool2d`, so H and W need not be
    divisible by ``grid``); image b keeps the cells whose value is at or above
    the ``quantiles[b]`` quantile of its own cells (linear interpolation, as
    :func:`torch.quantile`, in float32 -- the official code computes a B x B
    quantile matrix and keeps its diagonal; this is the same values per row).
    ``q = 0`` keeps every cell; about ``1 - q`` of the cells are kept (ties
    can add cells).

    Args:
        saliency (Tensor): Saliency maps of shape (B, H, W).
        grid (int): Cells per side, ``1 <= grid <= min(H, W)``.
        quantiles (Tensor): Per-image quantile levels in [0, 1], shape (B,).

    Returns:
        Tensor: Bool cell masks of shape (B, grid, grid), True on salient
        cells.
    """
    if not isinstance(saliency, Tensor) or saliency.dim() != 3:
        raise ValueError('`saliency` must be a (B, H, W) tensor, got '
                         f'{getattr(saliency, "shape", saliency)!r}')
    b, h, w = saliency.shape
    check_int('grid', grid, 1, min(h, w))
    quantiles = _check_quantiles(quantiles, b)
    saliency = saliency.float()
    if h % grid == 0 and w % grid == 0:
        # Block means (the bins of adaptive pooling when ``grid`` divides H
        # and W): sums over the rows of each block, which reads the map once
        # with contiguous row adds, then over its columns, / (kh * kw).
        kh, kw = h // grid, w // grid
        cells = saliency.reshape(b, grid, kh, w).sum(2)
        cells = cells.view(b, grid * grid, kw).sum(2).div_(kh * kw)
    else:
        cells = F.adaptive_avg_pool2d(saliency[:, None], grid).flatten(1)
    q = quantiles.to(device=cells.device, dtype=torch.float32,
                     non_blocking=True)
    keep = cells >= _rowwise_quantile(cells, q)[:, None]
    return keep.view(b, grid, grid)


def upsample_masks(masks: Tensor, height: int, width: int) -> Tensor:
    """Nearest-upsample (B, g, g) cell masks to (B, 1, H, W) pixel masks.

    Pixel row ``i`` belongs to cell row ``i * g // H`` (and likewise for
    columns), so H and W need not be divisible by ``g``.

    Args:
        masks (Tensor): Bool cell masks (B, g, g) from :func:`cell_masks`.
        height (int): H, >= g.
        width (int): W, >= g.

    Returns:
        Tensor: Bool masks of shape (B, 1, H, W).
    """
    if not isinstance(masks, Tensor) or masks.dim() != 3 or \
            masks.shape[1] != masks.shape[2]:
        raise ValueError('`masks` must be a (B, g, g) tensor, got '
                         f'{getattr(masks, "shape", masks)!r}')
    b, grid = masks.shape[:2]
    check_int('height', height, grid)
    check_int('width', width, grid)
    if height % grid == 0 and width % grid == 0:
        # Nearest upsampling by (kh, kw) as two broadcast copies: every
        # cell repeated kw times along its row, then every row kh times.
        kh, kw = height // grid, width // grid
        rows = masks.reshape(b, grid, grid, 1).expand(b, grid, grid, kw)
        rows = rows.reshape(b, grid, 1, width).expand(b, grid, kh, width)
        return rows.reshape(b, 1, height, width)
    rows = torch.arange(height, device=masks.device) * grid // height
    cols = torch.arange(width, device=masks.device) * grid // width
    return masks[:, None][:, :, rows][:, :, :, cols]


def grid_masks(saliency: Tensor, grid: int, quantiles: Tensor) -> Tensor:
    """Pixel masks of the salient cells of a ``grid x grid`` grid.

    :func:`cell_masks` followed by :func:`upsample_masks` to the saliency's
    (H, W).

    Args:
        saliency (Tensor): Saliency maps of shape (B, H, W).
        grid (int): Cells per side, ``1 <= grid <= min(H, W)``.
        quantiles (Tensor): Per-image quantile levels in [0, 1], shape (B,).

    Returns:
        Tensor: Bool masks of shape (B, 1, H, W), True on salient cells.
    """
    cells = cell_masks(saliency, grid, quantiles)
    return upsample_masks(cells, *saliency.shape[1:])


def mix_by_masks(inputs: Tensor, targets: Tensor, masks: Tensor,
                 perm: Tensor, lam: Lam) -> Tuple[Tensor, Tensor]:
    r"""Mix every image with its partner ``inputs[perm]`` under two masks.

    With :math:`M_1` = ``masks``, :math:`M_2` = ``masks[perm]`` (the partner
    keeps its own mask) and :math:`x_2` = ``inputs[perm]``:

    .. math::
        \tilde{x} = \begin{cases}
            \lambda x + (1-\lambda) x_2 & M_1 = M_2 \\
            x & M_1 = 1, M_2 = 0 \\
            x_2 & M_1 = 0, M_2 = 1 \end{cases}

    and with :math:`a_{eq}, a_1, a_2` the per-image fractions of pixels in
    the three cases (they sum to 1),
    :math:`\tilde{y} = a_{eq}(\lambda y + (1-\lambda) y_2) + a_1 y + a_2 y_2`.
    Out of place; the inputs are not modified.

    Args:
        inputs (Tensor): Images of shape (B, C, H, W).
        targets (Tensor): Float one-hot or soft targets of shape (B, K).
        masks (Tensor): Bool masks of shape (B, 1, H, W) from
            :func:`grid_masks`.
        perm (Tensor): Partner indices of shape (B,) (a permutation, or a
            flip ``arange(B - 1, -1, -1)``).
        lam (float | Tensor): Blend weight of the own image, in [0, 1];
            the images are blended with it cast to ``inputs``' dtype.

    Returns:
        tuple[Tensor, Tensor]: Mixed images (B, C, H, W) in ``inputs``' dtype
        and mixed targets (B, K) in ``targets``' dtype.
    """
    check_images('inputs', inputs)
    b, _, h, w = inputs.shape
    if (not isinstance(targets, Tensor) or targets.dim() != 2
            or not targets.dtype.is_floating_point):
        raise ValueError('`targets` must be a float (B, K) tensor (one-hot or '
                         f'soft), got {getattr(targets, "shape", targets)!r}')
    if targets.shape[0] != b:
        raise ValueError(f'`targets` has batch size {targets.shape[0]} but '
                         f'`inputs` has {b}')
    if masks.shape != (b, 1, h, w) or masks.dtype != torch.bool:
        raise ValueError(f'`masks` must be a bool tensor of shape '
                         f'({b}, 1, {h}, {w}), got {masks.dtype} '
                         f'{tuple(masks.shape)}')
    if perm.shape != (b, ) or perm.dtype.is_floating_point:
        raise ValueError(f'`perm` must be an integer tensor of shape ({b},), '
                         f'got {perm.dtype} {tuple(perm.shape)}')
    _check_lam(lam)
    perm = perm.to(inputs.device, torch.long, non_blocking=True)
    partner = inputs.index_select(0, perm)
    own, other = masks, masks.index_select(0, perm)
    agree = own == other
    lam_x = lam.to(inputs) if isinstance(lam, Tensor) else lam
    # Per-pixel weights (B, 1, H, W) of the two images: (lam, 1 - lam) where
    # the masks agree, (1, 0) or (0, 1) where the salient image wins. As in
    # the official code the output is x * w + x2 * w2: bit for bit the blend
    # where the masks agree and the winner's pixel elsewhere (for finite
    # inputs), in two passes over the images and without the broadcast
    # selects of a nested ``torch.where``.
    w_own = torch.where(agree, lam_x, own.to(inputs.dtype))
    w_other = torch.where(agree, 1 - lam_x, other.to(inputs.dtype))
    mixed = (inputs * w_own).add_(partner.mul_(w_other))

    area = float(h * w)
    a_eq = agree.flatten(1).sum(1).to(targets.dtype) / area
    a_own = (own & ~other).flatten(1).sum(1).to(targets.dtype) / area
    a_other = 1.0 - a_eq - a_own
    t_other = targets[perm.to(targets.device)]
    lam_t = lam.to(targets) if isinstance(lam, Tensor) else lam
    mixed_targets = (a_eq[:, None] * (lam_t * targets +
                                      (1 - lam_t) * t_other) +
                     a_own[:, None] * targets + a_other[:, None] * t_other)
    return mixed, mixed_targets


class RMixParams(NamedTuple):
    """What one R-Mix (or RL-Mix) step drew and decided.

    :func:`sample_rmix_params` fills the first four fields; the augments add
    the saliency and the cell masks and keep the whole record as
    ``last_params``. ``mix_by_masks(inputs, scores, upsample_masks(masks, H,
    W), index, lam)`` reproduces the step's output.

    Attributes:
        grid (int): Cells per side of the mixing grid.
        quantiles (Tensor): Per-image quantile levels, shape (B,), float32
            (drawn uniformly from the levels by R-Mix, chosen by the agent in
            RL-Mix).
        index (Tensor): Partner of each image, shape (B,), int64.
        lam (Tensor): Blend weight, a float32 scalar tensor.
        saliency (Tensor, optional): Saliency maps of the clean pass
            (B, h, w), in the images' dtype (float32 for float16), at the clean
            pass's resolution: the images' (H, W), or
            ``saliency_size(H, W, saliency_scale)`` when the augment's
            ``saliency_scale < 1``; ``cell_masks(saliency, grid,
            quantiles)`` gives ``masks`` at either. Defaults to None.
        masks (Tensor, optional): Bool cell masks (B, grid, grid), True on
            the cells kept by each image's quantile. Defaults to None.
    """
    grid: int
    quantiles: Tensor
    index: Tensor
    lam: Tensor
    saliency: Optional[Tensor] = None
    masks: Optional[Tensor] = None


def sample_rmix_params(batch_size: int,
                       *,
                       alpha: float = 1.0,
                       grids: Sequence[int] = (2, 4),
                       quantile_levels: Optional[Sequence[float]] = None,
                       partner: str = 'randperm',
                       quantiles: Optional[Tensor] = None,
                       generator: Optional[torch.Generator] = None,
                       device: Optional[Union[str, torch.device]] = None
                       ) -> RMixParams:
    r"""Draw the parameters of one R-Mix step with the official defaults.

    * ``grid``: one of ``grids`` per batch (CIFAR: pool kernels {8, 16} px on
      32 px images, i.e. grids {4, 2}; ImageNet: {2, 4}).
    * ``quantiles``: per image, uniformly one of ``quantile_levels``
      (default ``linspace(0, 0.99, 10)``).
    * ``index``: ``randperm(B)`` (CIFAR; an image may pair with itself) or
      the flip ``B-1, ..., 0`` (ImageNet).
    * ``lam``: one :math:`\lambda \sim \mathrm{Beta}(\alpha, \alpha)` per
      batch (CIFAR ``alpha=1``, ImageNet ``alpha=0.2``).

    Draws run on the CPU (``generator`` must be a CPU generator); the tensors
    are then moved to ``device``.

    Args:
        batch_size (int): B, >= 1.
        alpha (float): Beta concentration, > 0. Defaults to 1.0.
        grids (Sequence[int]): Grid sizes to choose from. Defaults to (2, 4).
        quantile_levels (Sequence[float], optional): Levels in [0, 1].
            Defaults to None (the official ten levels).
        partner (str): ``'randperm'`` or ``'flip'``. Defaults to
            ``'randperm'``.
        quantiles (Tensor, optional): Per-image levels (B,) chosen by the
            caller (RL-Mix's agent); then none is drawn. Defaults to None.
        generator (torch.Generator, optional): CPU generator. Defaults to
            None (the global RNG).
        device (str | torch.device, optional): Where ``quantiles``, ``index``
            and ``lam`` go. Defaults to None (CPU).

    Returns:
        RMixParams: ``(grid, quantiles, index, lam)``; saliency and masks
        None.
    """
    check_int('batch_size', batch_size, 1)
    check_positive('alpha', alpha)
    grids = check_grids(grids)
    levels = torch.tensor(check_quantile_levels(quantile_levels),
                          dtype=torch.float32)
    check_choice('partner', partner, PARTNERS)
    grid = sample_choice(grids, generator=generator)
    if quantiles is None:
        quantiles = levels[torch.randint(len(levels), (batch_size, ),
                                         generator=generator)]
    else:
        quantiles = _check_quantiles(quantiles, batch_size).float()
    if partner == 'randperm':
        index = torch.randperm(batch_size, generator=generator)
    else:
        index = torch.arange(batch_size - 1, -1, -1)
    lam = sample_beta(alpha, generator=generator)
    if device is not None:
        quantiles, index, lam = (t.to(device, non_blocking=True)
                                 for t in (quantiles, index, lam))
    return RMixParams(grid, quantiles, index, lam)
