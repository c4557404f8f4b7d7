"""Base class and argument checks shared by the CIFAR backbones (private)."""
from numbers import Real
from typing import Iterable, Sequence, Tuple, Union

from mmpretrain.models.backbones.base_backbone import BaseBackbone


class CifarBackbone(BaseBackbone):
    """mmpretrain ``BaseBackbone`` whose ``train()`` returns ``self``.

    mmpretrain's ``BaseBackbone.train`` returns None, which breaks the
    ``nn.Module`` idiom ``net = net.eval()``; this restores it.
    """

    def train(self, mode: bool = True) -> 'CifarBackbone':
        """Set the training mode.

        Args:
            mode (bool): Training (True) or evaluation (False) mode.
                Defaults to True.

        Returns:
            CifarBackbone: ``self``.
        """
        super().train(mode)
        return self


def check_int(name: str,
              value: object,
              minimum: int = 1,
              allowed: Union[Iterable[int], str, None] = None) -> int:
    """Return ``value`` if it is an ``int`` not below ``minimum``.

    Args:
        name (str): Argument name used in the error message.
        value (object): The value to check.
        minimum (int): Smallest accepted value. Defaults to 1.
        allowed (Iterable[int] | str, optional): Description of the
            allowed values for the message. Defaults to None.

    Returns:
        int: ``value`` unchanged.

    Raises:
        TypeError: If ``value`` is not an ``int`` (``bool`` is rejected).
        ValueError: If ``value`` is below ``minimum``.
    """
    hint = f' (allowed: {allowed})' if allowed is not None else ''
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f'{name} must be an int{hint}, '
                        f'got {value!r} of type {type(value).__name__}')
    if value < minimum:
        raise ValueError(f'{name} must be >= {minimum}{hint}, got {value}')
    return value


def check_real(name: str, value: object, minimum: float = 0.0) -> float:
    """Return ``value`` as a ``float`` if it is a real number >= minimum.

    Args:
        name (str): Argument name used in the error message.
        value (object): The value to check.
        minimum (float): Smallest accepted value. Defaults to 0.0.

    Returns:
        float: ``float(value)``.

    Raises:
        TypeError: If ``value`` is not a real number (``bool`` is rejected).
        ValueError: If ``value`` is below ``minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f'{name} must be a real number, got {value!r} of '
                        f'type {type(value).__name__}')
    if not value >= minimum:  # also rejects NaN
        raise ValueError(f'{name} must be >= {minimum}, got {value}')
    return float(value)


def normalize_out_indices(out_indices: Union[int, Sequence[int]],
                          num_stages: int) -> Tuple[int, ...]:
    """Validate ``out_indices`` and map negative indices to positive ones.

    Args:
        out_indices (int | Sequence[int]): Stage indices whose outputs the
            backbone returns; negative values count from the last stage.
        num_stages (int): Number of stages of the backbone.

    Returns:
        tuple[int]: Sorted, de-duplicated, non-negative stage indices.

    Raises:
        TypeError: If ``out_indices`` is not an int or a sequence of ints.
        ValueError: If it is empty or an index is out of range.
    """
    if isinstance(out_indices, int) and not isinstance(out_indices, bool):
        out_indices = (out_indices, )
    if isinstance(out_indices,
                  (str, bytes)) or not isinstance(out_indices, Sequence):
        raise TypeError('out_indices must be an int or a sequence of ints, '
                        f'got {out_indices!r}')
    if len(out_indices) == 0:
        raise ValueError('out_indices must not be empty')
    result = set()
    for index in out_indices:
        if isinstance(index, bool) or not isinstance(index, int):
            raise TypeError('out_indices must contain ints, got '
                            f'{index!r} in {out_indices!r}')
        if not -num_stages <= index < num_stages:
            raise ValueError(f'out_indices entries must be in '
                             f'[{-num_stages}, {num_stages - 1}] for '
                             f'{num_stages} stages, got {index}')
        result.add(index % num_stages)
    return tuple(sorted(result))
