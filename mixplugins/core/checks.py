"""Argument checks shared by every layer of mixplugins.

One place for the rules that a config value must follow, so that every
augment, hook, scheduler and kernel refuses bad input the same way: early
(at build time where possible), with a ``ValueError``/``TypeError`` whose
message names the argument and the allowed values (``docs/bad_input.md``).

``bool`` is refused where a number is expected (``True`` is an ``int`` in
Python, but ``alpha=True`` is a typo, not a value); ``int`` is accepted
where a float is expected and returned as ``float``. NumPy scalars count
as numbers (``numbers.Real`` / ``numbers.Integral``, which NumPy registers);
``numpy.bool_`` does not. No ``assert`` (asserts vanish under
``python -O``).
"""
import math
import numbers
from collections.abc import Mapping
from typing import Any, Callable, Optional, Sequence, Tuple

import torch
from torch import Tensor

__all__ = [
    'check_number', 'check_positive', 'check_int', 'check_bool',
    'check_choice', 'check_images', 'check_fraction', 'check_int_boxes',
    'check_float_boxes', 'check_box', 'check_paste_alpha', 'check_grids',
    'check_quantile_levels', 'check_sequence', 'DEFAULT_QUANTILE_LEVELS'
]

#: The official R-Mix quantile levels ``linspace(0, 0.99, 10)``
#: (``num_action=10``).
DEFAULT_QUANTILE_LEVELS: Tuple[float, ...] = tuple(
    round(0.99 * i / 9, 10) for i in range(10))


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, numbers.Real)


def _is_int(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, numbers.Integral)


def check_number(name: str,
                 value: Any,
                 low: float = -math.inf,
                 high: float = math.inf,
                 *,
                 low_open: bool = False,
                 high_open: bool = False,
                 finite: bool = True) -> float:
    """Return ``float(value)`` if it is a number in the given interval.

    Args:
        name (str): Argument name used in the error message.
        value (Any): The value to check.
        low (float): Lower bound. Defaults to -inf.
        high (float): Upper bound. Defaults to inf.
        low_open (bool): Exclude ``low``. Defaults to False.
        high_open (bool): Exclude ``high``. Defaults to False.
        finite (bool): Refuse inf (NaN is always refused). Defaults to True.

    Raises:
        TypeError: ``value`` is not an int or float (or is a bool).
        ValueError: ``value`` is outside the interval, NaN, or infinite
            when ``finite``.
    """
    if not _is_number(value):
        raise TypeError(f'`{name}` must be a number, got {value!r}')
    v = float(value)
    ok = not math.isnan(v) and (math.isfinite(v) or not finite)
    ok = ok and (low < v if low_open else low <= v)
    ok = ok and (v < high if high_open else v <= high)
    if not ok:
        left = '(' if low_open or low == -math.inf else '['
        right = ')' if high_open or high == math.inf else ']'
        kind = 'a finite number' if finite else 'a number'
        raise ValueError(f'`{name}` must be {kind} in {left}{low:g}, '
                         f'{high:g}{right}, got {value!r}')
    return v


def check_positive(name: str, value: Any) -> float:
    """Return ``float(value)`` if it is a number > 0 (inf allowed)."""
    if not _is_number(value):
        raise TypeError(f'`{name}` must be a number, got {value!r}')
    if not value > 0:
        raise ValueError(f'`{name}` must be > 0, got {value!r}')
    return float(value)


def check_fraction(name: str, value: Any) -> float:
    """Return ``float(value)`` if it is a number in [0, 1]."""
    return check_number(name, value, 0.0, 1.0)


def check_int(name: str,
              value: Any,
              minimum: Optional[int] = None,
              maximum: Optional[int] = None) -> int:
    """Return ``int(value)`` if it is an int (not a bool) in the range.

    The range is [minimum, maximum]; NumPy integers are accepted and
    returned as ``int``.

    Raises:
        ValueError: naming ``name`` and the allowed range.
    """
    ok = _is_int(value)
    ok = ok and (minimum is None or value >= minimum)
    ok = ok and (maximum is None or value <= maximum)
    if not ok:
        if minimum is not None and maximum is not None:
            allowed = f'an int in [{minimum}, {maximum}]'
        elif minimum is not None:
            allowed = f'an int >= {minimum}'
        elif maximum is not None:
            allowed = f'an int <= {maximum}'
        else:
            allowed = 'an int'
        raise ValueError(f'`{name}` must be {allowed}, got {value!r}')
    return int(value)


def check_bool(name: str, value: Any) -> bool:
    """Return ``value`` if it is a bool; raise ``TypeError`` naming it."""
    if not isinstance(value, bool):
        raise TypeError(f'`{name}` must be a bool, got {value!r}')
    return value


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> Any:
    """Return ``value`` if it is one of ``choices``."""
    if value not in tuple(choices):
        raise ValueError(f'`{name}` must be one of {tuple(choices)}, got '
                         f'{value!r}')
    return value


def check_images(name: str, x: Any, dims: Tuple[int, ...] = (4, )) -> None:
    """Raise ``ValueError`` unless ``x`` is a tensor with ``dims`` dims.

    With the default ``dims=(4,)`` the message asks for (B, C, H, W).
    """
    if not isinstance(x, Tensor) or x.dim() not in dims:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        want = ('a (B, C, H, W) tensor' if dims == (4, ) else
                f'a {" or ".join(map(str, dims))}-D tensor')
        raise ValueError(f'`{name}` must be {want}, got {shape}')


def check_int_boxes(name: str, boxes: Any, n: int, height: int,
                  width: int) -> Tensor:
    """Validate ``(n, 4)`` integer boxes inside an ``height x width`` image.

    Returns a CPU long tensor (boxes given on an accelerator are copied to
    the CPU, which synchronises with it).
    """
    try:
        t = torch.as_tensor(boxes).cpu()
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f'`{name}` must be ({n}, 4) integers, got '
                         f'{boxes!r}') from None
    if t.shape != (n, 4):
        raise ValueError(f'`{name}` must have shape ({n}, 4), got '
                         f'{tuple(t.shape)}')
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        if not bool((t == t.round()).all()):
            raise ValueError(f'`{name}` must hold integers, got {t.tolist()}')
    t = t.long()
    x1, y1, x2, y2 = t.unbind(1)
    ok = ((0 <= x1) & (x1 <= x2) & (x2 <= width) & (0 <= y1) & (y1 <= y2)
          & (y2 <= height))
    if not bool(ok.all()):
        bad = t[~ok].tolist()
        raise ValueError(f'`{name}` rows must satisfy 0 <= x1 <= x2 <= '
                         f'{width} and 0 <= y1 <= y2 <= {height}, got {bad}')
    return t


def check_float_boxes(name: str, boxes: Tensor) -> None:
    if (not isinstance(boxes, Tensor) or boxes.dim() != 2
            or boxes.shape[-1] != 4 or not boxes.is_floating_point()):
        shape = (tuple(boxes.shape)
                 if isinstance(boxes, Tensor) else type(boxes).__name__)
        raise ValueError(f'`{name}` must be a float (k, 4) xyxy tensor, got '
                         f'{shape}')


def check_box(name: str, box: Any) -> Tuple[float, float, float, float]:
    try:
        x1, y1, x2, y2 = (float(v) for v in box)
    except (TypeError, ValueError):
        raise ValueError(f'`{name}` must be four numbers (x1, y1, x2, y2), '
                         f'got {box!r}') from None
    if not (x1 <= x2 and y1 <= y2):
        raise ValueError(f'`{name}` must satisfy x1 <= x2 and y1 <= y2, got '
                         f'{(x1, y1, x2, y2)}')
    return x1, y1, x2, y2


def check_paste_alpha(alpha: Any) -> float:
    """Validate RecursiveMix's ``alpha`` (max paste area fraction, (0, 1])."""
    alpha = check_positive('alpha', alpha)
    if alpha > 1:
        raise ValueError(f'`alpha` must be in (0, 1], got {alpha!r}')
    return alpha


def check_grids(grids: Sequence[int], name: str = 'grids') -> Tuple[int, ...]:
    """Validate grid sizes (an int or ints >= 1); the error names ``name``."""
    if isinstance(grids, int):
        grids = (grids, )
    try:
        grids = tuple(grids)
    except TypeError:
        grids = (grids, )
    if not grids or any(not _is_int(g) or g < 1 for g in grids):
        raise ValueError(f'`{name}` must be a non-empty sequence of ints >= '
                         f'1, got {grids!r}')
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


def check_sequence(name: str,
                   values: Any,
                   check: Callable[..., Any],
                   *args: Any,
                   length: Optional[int] = None,
                   **kwargs: Any) -> Tuple[Any, ...]:
    """Check every item of a non-empty sequence with one of the checks above.

    ``check(f'{name}[{i}]', item, *args, **kwargs)`` is called on each item,
    so an error names the argument and the index, e.g.
    ``check_sequence('widths', widths, check_int, 1)`` refuses
    ``widths=(16, 0)`` with "`widths[1]` must be an int >= 1, got 0".

    Args:
        name (str): Argument name used in the error messages.
        values (Any): Any iterable but a str, bytes or mapping.
        check (Callable): The item check, e.g. :func:`check_int`.
        *args: Extra positional arguments of ``check`` (its bounds).
        length (int, optional): Required number of items. Defaults to None
            (any non-zero number).
        **kwargs: Extra keyword arguments of ``check``.

    Returns:
        tuple: What ``check`` returned for each item.

    Raises:
        TypeError: ``values`` is not an iterable (or is a str, bytes or
            mapping).
        ValueError: ``values`` is empty or has not ``length`` items.
        TypeError | ValueError: From ``check`` on an item.
    """
    want = ('a non-empty sequence'
            if length is None else f'a sequence of {length} items')
    items: Optional[Tuple[Any, ...]] = None
    if not isinstance(values, (str, bytes, Mapping)):
        try:
            items = tuple(values)
        except TypeError:
            items = None
    if items is None:
        raise TypeError(f'`{name}` must be {want}, got {values!r}')
    if not items or (length is not None and len(items) != length):
        raise ValueError(f'`{name}` must be {want}, got {values!r}')
    return tuple(
        check(f'{name}[{i}]', v, *args, **kwargs) for i, v in enumerate(items))
