"""Random draws shared by the samplers, on torch's RNG only.

Every draw takes an optional :class:`torch.Generator`, so that a seeded
generator makes a run reproducible independently of the global RNGs (which
data loaders, models and other augments also consume).
``torch.distributions.Beta.sample`` takes no generator, so :func:`sample_beta`
is built from two Gamma draws.

:func:`rand_bbox` is the one box sampler of the package: CutMix-style boxes
(nominal area ``1 - lam``) and RecursiveMix's paste boxes (nominal area
``U(0, alpha)``) both come from it, one box or ``count`` boxes at a time, as
timm's ``rand_bbox``.
"""
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from .checks import check_int, check_positive

__all__ = ['sample_beta', 'sample_uniform', 'sample_randint', 'sample_choice',
           'rand_bbox']

Size = Union[int, Tuple[int, ...]]


def _shape(size: Size) -> Tuple[int, ...]:
    return (size, ) if isinstance(size, int) else tuple(size)


def sample_beta(alpha: float,
                size: Size = (),
                *,
                generator: Optional[torch.Generator] = None) -> Tensor:
    r"""Draw :math:`\lambda \sim \mathrm{Beta}(\alpha, \alpha)`.

    :math:`\lambda = G_1 / (G_1 + G_2)` with :math:`G_i \sim \Gamma(\alpha)`.
    For small ``alpha`` both Gamma draws can underflow (torch returns the
    smallest normal double, not 0); that case is resolved to 0 or 1 with
    equal probability, which is the limit of the Beta distribution as
    ``alpha`` goes to 0.

    Args:
        alpha (float): Concentration of the symmetric Beta distribution, > 0.
        size (int | tuple[int]): Shape of the draw. Defaults to ``()`` (one
            scalar).
        generator (torch.Generator, optional): Source of randomness; a CPU
            generator. Defaults to None (the global RNG).

    Returns:
        Tensor: float32 CPU tensor of shape ``size`` with values in [0, 1].
    """
    alpha = check_positive('alpha', alpha)
    shape = _shape(size)
    conc = torch.full((2, ) + shape, alpha, dtype=torch.float64)
    gammas = torch._standard_gamma(conc, generator=generator)
    # torch clamps an underflowing Gamma draw to the smallest normal double
    # (not to 0), so "both underflowed" is both at that floor.
    underflow = (gammas <= torch.finfo(torch.float64).tiny).all(0)
    fallback = (torch.rand(shape, generator=generator, dtype=torch.float64)
                < 0.5).double()
    lam = torch.where(underflow, fallback, gammas[0] / gammas.sum(0))
    return lam.float()


def sample_uniform(low: float,
                   high: float,
                   size: Size = (),
                   *,
                   generator: Optional[torch.Generator] = None) -> Tensor:
    """Draw from U(low, high) in float64 on the CPU."""
    shape = _shape(size)
    u = torch.rand(shape, generator=generator, dtype=torch.float64)
    return low + (high - low) * u


def sample_randint(high: int,
                   size: Size = (),
                   *,
                   generator: Optional[torch.Generator] = None) -> Tensor:
    """Draw integers uniformly from ``[0, high)`` on the CPU."""
    return torch.randint(high, _shape(size), generator=generator)


def sample_choice(choices: Sequence,
                  *,
                  generator: Optional[torch.Generator] = None):
    """Pick one element of ``choices`` uniformly."""
    i = int(torch.randint(len(choices), (), generator=generator))
    return choices[i]


def _sizes(name: str, value: Union[int, Tensor], n: int) -> Tensor:
    """Image sizes as a float64 (n,) tensor; ints >= 1 only."""
    if isinstance(value, Tensor):
        if value.shape not in ((), (n, )) or value.is_floating_point() or \
                value.dtype == torch.bool or (value.numel() and
                                              int(value.min()) < 1):
            raise ValueError(f'`{name}` must be an int >= 1 or ({n},) '
                             f'integers >= 1, got {value!r}')
        return value.to('cpu', torch.float64).expand(n)
    check_int(name, value, 1)
    return torch.full((n, ), float(value), dtype=torch.float64)


def rand_bbox(height: Union[int, Tensor],
              width: Union[int, Tensor],
              area: Union[float, Tensor],
              *,
              count: Optional[int] = None,
              generator: Optional[torch.Generator] = None) -> Tensor:
    r"""Draw boxes of a nominal area fraction at uniform random centres.

    The rule of CutMix's ``rand_bbox`` (mmpretrain, timm) and of the official
    RecursiveMix ``rand_bbox``: side ratio :math:`r = \sqrt{area}`, sides
    ``int(H * r)`` and ``int(W * r)``, a centre ``(cy, cx)`` uniform over the
    pixels, and the box ``[c - cut // 2, c + cut // 2]`` clipped to the image
    on each axis (so it can be smaller than nominal, non-square, or empty at
    a border). Height and width are never swapped (the official RecursiveMix
    code swaps them, ``recursivemix_spec.md``).

    Args:
        height (int | Tensor): Image height H >= 1, or (count,) per-image
            heights.
        width (int | Tensor): Image width W >= 1, or (count,) per-image
            widths.
        area (float | Tensor): Nominal area fraction in [0, 1], or (count,)
            per-box fractions. CutMix: ``1 - lam``; RecursiveMix:
            :math:`u \sim U(0, \alpha)`.
        count (int, optional): Number of boxes. Defaults to None (one box).
        generator (torch.Generator, optional): CPU generator. Defaults to
            None (the global RNG).

    Returns:
        Tensor: int64 CPU tensor ``(x1, y1, x2, y2)`` of shape (4,), or
        (count, 4) when ``count`` is given; half-open, ``0 <= x1 <= x2 <= W``
        and ``0 <= y1 <= y2 <= H``.
    """
    n = 1 if count is None else check_int('count', count, 1)
    h, w = _sizes('height', height, n), _sizes('width', width, n)
    area = torch.as_tensor(area, dtype=torch.float64)
    if area.shape not in ((), (n, )) or not bool(
            ((area >= 0) & (area <= 1)).all()):
        raise ValueError(f'`area` must be in [0, 1] (a number or ({n},) '
                         f'values), got {area!r}')
    ratio = area.sqrt()
    cut_h, cut_w = (h * ratio).floor(), (w * ratio).floor()
    u = torch.rand((2, n), generator=generator, dtype=torch.float64)
    cy = torch.minimum((u[0] * h).floor(), h - 1)
    cx = torch.minimum((u[1] * w).floor(), w - 1)
    half_h, half_w = (cut_h / 2).floor(), (cut_w / 2).floor()
    y1, y2 = (cy - half_h).clamp(min=0), torch.minimum(cy + half_h, h)
    x1, x2 = (cx - half_w).clamp(min=0), torch.minimum(cx + half_w, w)
    boxes = torch.stack([x1, y1, x2, y2], 1).long()
    return boxes[0] if count is None else boxes
