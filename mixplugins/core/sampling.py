"""Random draws shared by the samplers, on torch's RNG only.

Every draw takes an optional :class:`torch.Generator`, so that a seeded
generator makes a run reproducible independently of the global RNGs (which
data loaders, models and other augments also consume).
``torch.distributions.Beta.sample`` takes no generator, so :func:`sample_beta`
is built from two Gamma draws.
"""
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

__all__ = ['sample_beta', 'sample_uniform', 'sample_randint', 'sample_choice',
           'check_positive']

Size = Union[int, Tuple[int, ...]]


def check_positive(name: str, value: float) -> float:
    """Return ``float(value)`` or raise a ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f'`{name}` must be a number, got {value!r}')
    if not value > 0:
        raise ValueError(f'`{name}` must be > 0, got {value!r}')
    return float(value)


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
