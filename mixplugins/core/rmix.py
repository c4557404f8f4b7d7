r"""R-Mix kernels: saliency, grid masks and mask mixing.

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
``lam`` with the official defaults. The kernels are stateless, vectorised
over the batch and keep the input's device and dtype.
"""
from typing import Callable, NamedTuple, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from .sampling import check_positive, sample_beta, sample_choice

__all__ = [
    'input_saliency', 'saliency_from_grad', 'grid_masks', 'mix_by_masks',
    'RMixParams', 'sample_rmix_params', 'DEFAULT_QUANTILE_LEVELS',
    'check_quantile_levels', 'check_grids'
]

#: The official quantile levels ``linspace(0, 0.99, 10)`` (``num_action=10``).
DEFAULT_QUANTILE_LEVELS: Tuple[float, ...] = tuple(
    round(0.99 * i / 9, 10) for i in range(10))

Lam = Union[float, Tensor]


def _check_images(name: str, x: Tensor) -> None:
    if not isinstance(x, Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f'`{name}` must be a (B, C, H, W) tensor, got {shape}')


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


def saliency_from_grad(grad: Tensor) -> Tensor:
    r"""Reduce an input gradient to a saliency map.

    :math:`s_{b,h,w} = \sqrt{\frac{1}{C}\sum_c g_{b,c,h,w}^2}`, the RMS over
    channels as in the official ``compute_saliency``; computed in float32 and
    returned in ``grad``'s dtype.

    Args:
        grad (Tensor): Input gradient of shape (B, C, H, W).

    Returns:
        Tensor: Saliency of shape (B, H, W).
    """
    _check_images('grad', grad)
    return grad.float().square().mean(1).sqrt().to(grad.dtype)


def input_saliency(forward: Callable[[Tensor], Tensor],
                   inputs: Tensor,
                   labels: Tensor,
                   *,
                   return_logits: bool = False
                   ) -> Union[Tensor, Tuple[Tensor, Tensor]]:
    r"""Saliency of each pixel: the input gradient of the clean-batch loss.

    :math:`L = \frac{1}{B}\sum_b \mathrm{CE}(f(x)_b, y_b)` and the saliency is
    :func:`saliency_from_grad` of :math:`\partial L / \partial x`. The
    gradient is taken with :func:`torch.autograd.grad` with respect to the
    inputs only, so no parameter ``.grad`` is created or changed and no
    ``AccumulateGrad`` (or DDP reducer) hook fires. The official code runs a
    full ``loss.backward()`` and discards the parameter gradients; the
    saliency is the same, the weight-gradient kernels are skipped.

    Args:
        forward (Callable[[Tensor], Tensor]): Maps inputs (B, C, H, W) to
            logits (B, K). Its mode (train/eval BN) is the caller's choice.
        inputs (Tensor): Normalised images of shape (B, C, H, W).
        labels (Tensor): Integer class indices of shape (B,).
        return_logits (bool): Also return the (detached) clean logits, e.g.
            for RL-Mix's observation. Defaults to False.

    Returns:
        Tensor | tuple[Tensor, Tensor]: Saliency (B, H, W) in ``inputs``'
        dtype, and the logits (B, K) if ``return_logits``.
    """
    _check_images('inputs', inputs)
    if (not isinstance(labels, Tensor) or labels.dim() != 1
            or labels.dtype.is_floating_point or labels.dtype == torch.bool):
        raise ValueError('`labels` must be an integer tensor of shape (B,), '
                         f'got {getattr(labels, "shape", labels)!r}')
    if labels.shape[0] != inputs.shape[0]:
        raise ValueError(f'`labels` has {labels.shape[0]} entries but '
                         f'`inputs` has batch size {inputs.shape[0]}')
    x = inputs.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = forward(x)
        loss = F.cross_entropy(logits.float(), labels)
        (grad, ) = torch.autograd.grad(loss, x)
    saliency = saliency_from_grad(grad)
    if return_logits:
        return saliency, logits.detach()
    return saliency


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


def grid_masks(saliency: Tensor, grid: int, quantiles: Tensor) -> Tensor:
    """Binary masks of the salient cells of a ``grid x grid`` grid.

    Each map is average-pooled to ``grid x grid`` cells
    (:func:`~torch.nn.functional.adaptive_avg_pool2d`, so H and W need not be
    divisible by ``grid``); image b keeps the cells whose value is at or above
    the ``quantiles[b]`` quantile of its own cells (linear interpolation, as
    :func:`torch.quantile`, in float32 -- the official code computes a B x B
    quantile matrix and keeps its diagonal; this is the same values per row).
    ``q = 0`` keeps every cell; about ``1 - q`` of the cells are kept (ties
    can add cells). The cell mask is nearest-upsampled to (H, W): pixel row
    ``i`` belongs to cell row ``i * grid // H``.

    Args:
        saliency (Tensor): Saliency maps of shape (B, H, W).
        grid (int): Cells per side, ``1 <= grid <= min(H, W)``.
        quantiles (Tensor): Per-image quantile levels in [0, 1], shape (B,).

    Returns:
        Tensor: Bool masks of shape (B, 1, H, W), True on salient cells.
    """
    if not isinstance(saliency, Tensor) or saliency.dim() != 3:
        raise ValueError('`saliency` must be a (B, H, W) tensor, got '
                         f'{getattr(saliency, "shape", saliency)!r}')
    b, h, w = saliency.shape
    if isinstance(grid, bool) or not isinstance(grid, int) or not (
            1 <= grid <= min(h, w)):
        raise ValueError(f'`grid` must be an int in [1, min(H, W)={min(h, w)}]'
                         f', got {grid!r}')
    quantiles = torch.as_tensor(quantiles)
    if quantiles.shape != (b, ):
        raise ValueError(f'`quantiles` must have shape ({b},) (one level per '
                         f'image), got {tuple(quantiles.shape)}')
    if quantiles.device.type == 'cpu' and b > 0:
        low, high = torch.aminmax(quantiles)
        if not (float(low) >= 0 and float(high) <= 1):  # NaN fails too
            raise ValueError('`quantiles` must lie in [0, 1], got '
                             f'{quantiles.tolist()}')
    saliency = saliency.float()
    divisible = h % grid == 0 and w % grid == 0
    kh, kw = h // grid, w // grid
    if divisible:
        # Block means (the bins of adaptive pooling when ``grid`` divides H
        # and W): sums over the rows of each block, which reads the map once
        # with contiguous row adds, then over its columns, / (kh * kw).
        cells = saliency.reshape(b, grid, kh, w).sum(2)
        cells = cells.view(b, grid * grid, kw).sum(2).div_(kh * kw)
    else:
        cells = F.adaptive_avg_pool2d(saliency[:, None], grid).flatten(1)
    q = quantiles.to(device=cells.device, dtype=torch.float32,
                     non_blocking=True)
    keep = cells >= _rowwise_quantile(cells, q)[:, None]
    if divisible:
        # Nearest upsampling by (kh, kw) as two broadcast copies: every
        # cell repeated kw times along its row, then every row kh times.
        rows = keep.view(b, grid, grid, 1).expand(b, grid, grid, kw)
        rows = rows.reshape(b, grid, 1, w).expand(b, grid, kh, w)
        return rows.reshape(b, 1, h, w)
    keep = keep.view(b, 1, grid, grid)
    rows = torch.arange(h, device=keep.device) * grid // h
    cols = torch.arange(w, device=keep.device) * grid // w
    return keep[:, :, rows][:, :, :, cols]


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
    _check_images('inputs', inputs)
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
    """The random parameters of one R-Mix step.

    Attributes:
        grid (int): Cells per side of the mixing grid.
        quantiles (Tensor): Per-image quantile levels, shape (B,), float32.
        index (Tensor): Partner indices, shape (B,), int64.
        lam (Tensor): Blend weight, a float32 scalar tensor.
    """
    grid: int
    quantiles: Tensor
    index: Tensor
    lam: Tensor


def check_grids(grids: Sequence[int]) -> Tuple[int, ...]:
    """Validate the grid choices; raise ``ValueError`` naming ``grids``."""
    if isinstance(grids, int):
        grids = (grids, )
    grids = tuple(grids)
    if not grids or any(
            isinstance(g, bool) or not isinstance(g, int) or g < 1
            for g in grids):
        raise ValueError('`grids` must be a non-empty sequence of ints >= 1, '
                         f'got {grids!r}')
    return grids


def check_quantile_levels(levels: Optional[Sequence[float]]
                          ) -> Tuple[float, ...]:
    """Validate quantile levels; ``None`` gives the official ten levels."""
    if levels is None:
        return DEFAULT_QUANTILE_LEVELS
    try:
        if isinstance(levels, (str, bytes)):
            raise TypeError
        levels = tuple(float(q) for q in levels)
    except (TypeError, ValueError):
        raise TypeError('`quantile_levels` must be None or a sequence of '
                        f'numbers in [0, 1], got {levels!r}') from None
    if not levels or any(not 0.0 <= q <= 1.0 for q in levels):
        raise ValueError('`quantile_levels` must be a non-empty sequence of '
                         f'values in [0, 1], got {levels!r}')
    return levels


def sample_rmix_params(batch_size: int,
                       *,
                       alpha: float = 1.0,
                       grids: Sequence[int] = (2, 4),
                       quantile_levels: Optional[Sequence[float]] = None,
                       partner: str = 'randperm',
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
        generator (torch.Generator, optional): CPU generator. Defaults to
            None (the global RNG).
        device (str | torch.device, optional): Where ``quantiles``, ``index``
            and ``lam`` go. Defaults to None (CPU).

    Returns:
        RMixParams: ``(grid, quantiles, index, lam)``.
    """
    if isinstance(batch_size, bool) or not isinstance(
            batch_size, int) or batch_size < 1:
        raise ValueError(f'`batch_size` must be an int >= 1, got '
                         f'{batch_size!r}')
    check_positive('alpha', alpha)
    grids = check_grids(grids)
    levels = torch.tensor(check_quantile_levels(quantile_levels),
                          dtype=torch.float32)
    if partner not in ('randperm', 'flip'):
        raise ValueError("`partner` must be 'randperm' or 'flip', got "
                         f'{partner!r}')
    grid = sample_choice(grids, generator=generator)
    quantiles = levels[torch.randint(len(levels), (batch_size, ),
                                     generator=generator)]
    if partner == 'randperm':
        index = torch.randperm(batch_size, generator=generator)
    else:
        index = torch.arange(batch_size - 1, -1, -1)
    lam = sample_beta(alpha, generator=generator)
    if device is not None:
        quantiles, index, lam = (t.to(device, non_blocking=True)
                                 for t in (quantiles, index, lam))
    return RMixParams(grid, quantiles, index, lam)
