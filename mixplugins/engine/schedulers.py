"""1cycle parameter schedulers for mmengine with checkpoint-safe state.

The R-Mix CIFAR recipe (Luu et al., "Expeditious Saliency-guided Mix-up
through Random Gradient Thresholding", https://arxiv.org/abs/2212.04875,
code https://github.com/minhlong94/Random-Mixup) trains with
``torch.optim.lr_scheduler.OneCycleLR`` stepped once per batch. PyTorch's
scheduler also cycles the SGD momentum (``cycle_momentum=True`` by default:
0.95 -> 0.85 -> 0.95), which mmengine's ``OneCycleLR`` does not do. Two
classes cover the gap:

* :class:`OneCycleMomentum` cycles the momentum (or Adam's ``beta1``) exactly
  as ``torch.optim.lr_scheduler.OneCycleLR(cycle_momentum=True)`` does.
* :class:`SafeOneCycleLR` is mmengine's ``OneCycleLR`` whose ``state_dict``
  holds only plain data. mmengine 0.10.7 keeps the annealing *function*
  (``anneal_func``) in the scheduler's ``__dict__`` and therefore in every
  checkpoint, and ``torch.load(weights_only=True)`` (the default since torch
  2.6) refuses to unpickle a function. The subclass stores the strategy name
  instead, as PyTorch itself does since 2.2 (``_anneal_func_type``).

Use the two together, with the same ``total_steps`` (or the same
``begin``/``end``) and ``by_epoch=False`` (or ``by_epoch=True`` plus
``convert_to_iter_based=True``) to reproduce PyTorch's per-iteration 1cycle
policy::

    param_scheduler = [
        dict(type='SafeOneCycleLR', eta_max=0.29947526988779305,
             div_factor=100, pct_start=0.3, final_div_factor=1e4,
             by_epoch=True, begin=0, end=300, convert_to_iter_based=True),
        dict(type='OneCycleMomentum', base_momentum=0.85, max_momentum=0.95,
             pct_start=0.3, by_epoch=True, begin=0, end=300,
             convert_to_iter_based=True),
    ]

Both are registered in ``mmpretrain.registry.PARAM_SCHEDULERS``, a child of
mmengine's root registry, so configs with ``default_scope='mmpretrain'``
find them next to mmengine's own schedulers.
"""
import math
from typing import Dict, List, Optional, Sequence, Union

from mmengine.optim import BaseOptimWrapper
from mmengine.optim.scheduler import OneCycleLR
from mmengine.optim.scheduler.momentum_scheduler import MomentumSchedulerMixin
from mmengine.optim.scheduler.param_scheduler import INF, _ParamScheduler
from mmengine.registry import PARAM_SCHEDULERS
from torch.optim import Optimizer

from ..core.checks import (check_choice, check_fraction, check_int,
                           check_number, check_sequence)

__all__ = ['OneCycleMomentum', 'SafeOneCycleLR']

OptimizerType = Union[BaseOptimWrapper, Optimizer]

_ANNEAL_STRATEGIES = ('cos', 'linear')


def _anneal(strategy: str, start: float, end: float, pct: float) -> float:
    """Anneal from ``start`` (pct=0) to ``end`` (pct=1).

    Args:
        strategy (str): ``'cos'`` (half cosine) or ``'linear'``.
        start (float): Value at ``pct = 0``.
        end (float): Value at ``pct = 1``.
        pct (float): Progress through the phase.

    Returns:
        float: The annealed value, with the same formulas as PyTorch's
        ``OneCycleLR._annealing_cos`` / ``_annealing_linear``.
    """
    if strategy == 'cos':
        return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
    return (end - start) * pct + start


def _check_cycle_args(total_steps: Optional[int], begin: int, end: int,
                      pct_start: float, anneal_strategy: str) -> int:
    """Validate the arguments shared by both schedulers.

    Returns:
        int: The number of steps of the cycle (``total_steps`` or
        ``end - begin``).
    """
    if total_steps is not None:
        check_int('total_steps', total_steps, 1)
    elif end == INF:
        raise ValueError('Give `total_steps` or a finite `end`: the cycle '
                         'length is `total_steps`, else `end - begin`')
    check_fraction('pct_start', pct_start)
    check_choice('anneal_strategy', anneal_strategy, _ANNEAL_STRATEGIES)
    return total_steps if total_steps is not None else end - begin


@PARAM_SCHEDULERS.register_module()
class SafeOneCycleLR(OneCycleLR):
    r"""mmengine's ``OneCycleLR`` with a plain-data ``state_dict``.

    The schedule is exactly mmengine's (and PyTorch's) 1cycle learning-rate
    policy from `Super-Convergence <https://arxiv.org/abs/1708.07120>`_:
    the LR rises from ``eta_max / div_factor`` to ``eta_max`` over the first
    ``pct_start`` of the cycle, then falls to
    ``eta_max / div_factor / final_div_factor``.

    The only difference is the state: mmengine 0.10.7 stores the annealing
    function in ``self.anneal_func``, and ``state_dict()`` returns the
    whole ``__dict__``, so a checkpoint then contains a function that
    ``torch.load(..., weights_only=True)`` refuses to load. Here
    ``state_dict()`` drops the function and keeps the strategy name
    (``anneal_strategy``); ``load_state_dict()`` restores the function from
    it and also accepts a state written by mmengine's ``OneCycleLR``.

    Args:
        optimizer (Optimizer | BaseOptimWrapper): Wrapped optimizer.
        eta_max (float | list[float]): Peak learning rate of each parameter
            group. Defaults to 0.
        total_steps (int, optional): Steps in the cycle. Defaults to None,
            which means ``end - begin`` (``end`` must then be finite).
        pct_start (float): Fraction of the cycle spent increasing the LR.
            Defaults to 0.3.
        anneal_strategy (str): ``'cos'`` or ``'linear'``. Defaults to
            ``'cos'``.
        begin (int): Step at which the schedule starts. Defaults to 0.
        end (int): Step at which it stops. Defaults to INF.
        **kwargs: The other (keyword) arguments of mmengine's
            ``OneCycleLR``, with its defaults: ``div_factor`` (the initial
            LR is ``eta_max / div_factor``; 25), ``final_div_factor`` (the
            final LR is ``eta_max / div_factor / final_div_factor``; 1e4),
            ``three_phase`` (False), ``last_step`` (-1), ``by_epoch``
            (True) and ``verbose`` (False).
    """

    def __init__(self,
                 optimizer: OptimizerType,
                 eta_max: Union[float, List[float]] = 0,
                 total_steps: Optional[int] = None,
                 pct_start: float = 0.3,
                 anneal_strategy: str = 'cos',
                 *,
                 begin: int = 0,
                 end: int = INF,
                 **kwargs) -> None:
        _check_cycle_args(total_steps, begin, end, pct_start, anneal_strategy)
        self.anneal_strategy = anneal_strategy
        super().__init__(optimizer, eta_max, total_steps, float(pct_start),
                         anneal_strategy, begin=begin, end=end, **kwargs)

    def _restore_anneal_func(self) -> None:
        """Point ``anneal_func`` at the function named by the strategy."""
        self.anneal_func = (
            self._annealing_cos
            if self.anneal_strategy == 'cos' else self._annealing_linear)

    def state_dict(self) -> dict:
        """Return the scheduler state without the annealing function.

        Returns:
            dict: Every attribute except ``optimizer`` and ``anneal_func``;
            only numbers, strings, lists and dicts.
        """
        state = super().state_dict()
        state.pop('anneal_func', None)
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        """Load a state from :meth:`state_dict` or from mmengine's
        ``OneCycleLR`` (whose ``anneal_func`` entry is ignored).

        Args:
            state_dict (dict): Scheduler state.
        """
        state = dict(state_dict)
        func = state.pop('anneal_func', None)
        if 'anneal_strategy' not in state and func is not None:
            name = getattr(func, '__name__', '')
            state['anneal_strategy'] = ('linear' if name == '_annealing_linear'
                                        else 'cos')
        super().load_state_dict(state)
        self._restore_anneal_func()


@PARAM_SCHEDULERS.register_module()
class OneCycleMomentum(MomentumSchedulerMixin, _ParamScheduler):
    r"""Cycle the momentum inversely to the 1cycle learning rate.

    The momentum counterpart of the 1cycle policy (Smith & Topin,
    `Super-Convergence <https://arxiv.org/abs/1708.07120>`_), identical to
    ``torch.optim.lr_scheduler.OneCycleLR(cycle_momentum=True)``: with
    ``N = total_steps`` and ``p = pct_start``, the momentum anneals from
    ``max_momentum`` to ``base_momentum`` over steps ``0 .. pN - 1`` and back
    to ``max_momentum`` at step ``N - 1`` (``three_phase=True``: down over
    ``0 .. pN - 1``, up until ``2pN - 2``, then flat at ``max_momentum``).
    Pair it with :class:`SafeOneCycleLR` (or mmengine's ``OneCycleLR``)
    using the same ``total_steps``/``begin``/``end``/``pct_start``. It
    overwrites the optimizer's configured momentum from the first step on,
    as PyTorch does. For Adam-style optimizers ``beta1`` is cycled.

    Used by the R-Mix CIFAR recipe (https://arxiv.org/abs/2212.04875), whose
    ``OneCycleLR`` keeps PyTorch's default ``cycle_momentum=True``.

    The state holds plain data only (numbers, strings, lists and dicts), so
    checkpoints load with ``torch.load(..., weights_only=True)``.

    Args:
        optimizer (Optimizer | BaseOptimWrapper): Wrapped optimizer; it must
            have ``momentum`` or ``betas``.
        base_momentum (float | list[float]): Lowest momentum, reached at the
            LR peak; one value or one per parameter group. Defaults to 0.85.
        max_momentum (float | list[float]): Momentum at the start and end of
            the cycle; one value or one per parameter group. Defaults to
            0.95.
        total_steps (int, optional): Steps in the cycle. Defaults to None,
            which means ``end - begin`` (``end`` must then be finite).
        pct_start (float): Fraction of the cycle spent decreasing the
            momentum. Defaults to 0.3.
        anneal_strategy (str): ``'cos'`` or ``'linear'``. Defaults to
            ``'cos'``.
        three_phase (bool): Use the three-phase variant. Defaults to False.
        begin (int): Step at which the schedule starts. Defaults to 0.
        end (int): Step at which it stops. Defaults to INF.
        last_step (int): Index of the last step, for resuming without a
            state dict. Defaults to -1.
        by_epoch (bool): Whether ``begin``/``end``/``total_steps`` count
            epochs. Defaults to True.
        verbose (bool): Log every update. Defaults to False.
    """

    def __init__(self,
                 optimizer: OptimizerType,
                 base_momentum: Union[float, Sequence[float]] = 0.85,
                 max_momentum: Union[float, Sequence[float]] = 0.95,
                 total_steps: Optional[int] = None,
                 pct_start: float = 0.3,
                 anneal_strategy: str = 'cos',
                 three_phase: bool = False,
                 begin: int = 0,
                 end: int = INF,
                 last_step: int = -1,
                 by_epoch: bool = True,
                 verbose: bool = False) -> None:
        self.total_steps = _check_cycle_args(total_steps, begin, end,
                                             pct_start, anneal_strategy)
        num_groups = len(optimizer.param_groups)
        self.base_momentums = self._per_group('base_momentum', base_momentum,
                                              num_groups)
        self.max_momentums = self._per_group('max_momentum', max_momentum,
                                             num_groups)
        self.anneal_strategy = anneal_strategy
        self.pct_start = float(pct_start)
        self.three_phase = bool(three_phase)
        n = self.total_steps
        if self.three_phase:
            self._schedule_phases: List[Dict[str, Union[float, str]]] = [
                dict(
                    end_step=float(pct_start * n) - 1, start='max',
                    end='base'),
                dict(
                    end_step=float(2 * pct_start * n) - 2,
                    start='base',
                    end='max'),
                dict(end_step=n - 1, start='max', end='max'),
            ]
        else:
            self._schedule_phases = [
                dict(
                    end_step=float(pct_start * n) - 1, start='max',
                    end='base'),
                dict(end_step=n - 1, start='base', end='max'),
            ]
        super().__init__(
            optimizer,
            begin=begin,
            end=end,
            last_step=last_step,
            by_epoch=by_epoch,
            verbose=verbose)

    @staticmethod
    def _per_group(name: str, value: Union[float, Sequence[float]],
                   num_groups: int) -> List[float]:
        """Expand ``value`` to one non-negative float per parameter group."""
        if isinstance(value, (list, tuple)):
            values = check_sequence(name, value, check_number, 0.0)
        else:
            values = (check_number(name, value, 0.0), ) * num_groups
        if len(values) != num_groups:
            raise ValueError(f'`{name}` needs {num_groups} values (one per '
                             f'parameter group), got {len(values)}')
        return list(values)

    @classmethod
    def build_iter_from_epoch(cls,
                              *args,
                              begin: int = 0,
                              end: int = INF,
                              total_steps: Optional[int] = None,
                              by_epoch: bool = True,
                              epoch_length: Optional[int] = None,
                              **kwargs) -> 'OneCycleMomentum':
        """Build an iteration-based instance from epoch-based arguments.

        Called by the runner for ``convert_to_iter_based=True``:
        ``begin``, ``end`` and ``total_steps`` are multiplied by
        ``epoch_length`` (iterations per epoch).
        """
        if not by_epoch:
            raise ValueError('Only `by_epoch=True` arguments can be '
                             'converted to iteration-based ones')
        check_int('epoch_length', epoch_length, 1)
        begin = int(begin * epoch_length)
        if end != INF:
            end = int(end * epoch_length)
        if total_steps is not None:
            total_steps = total_steps * epoch_length
        return cls(
            *args,
            begin=begin,
            end=end,
            total_steps=total_steps,
            by_epoch=False,
            **kwargs)

    def _get_value(self) -> List[float]:
        """Momentum of every parameter group at ``self.last_step``."""
        step_num = self.last_step
        if step_num > self.total_steps:
            raise ValueError(f'Tried to step {step_num} times. The specified '
                             f'number of total steps is {self.total_steps}')
        values = []
        for base, peak in zip(self.base_momentums, self.max_momentums):
            ends = dict(base=base, max=peak)
            start_step = 0.
            last = len(self._schedule_phases) - 1
            for i, phase in enumerate(self._schedule_phases):
                end_step = phase['end_step']
                if step_num <= end_step or i == last:
                    pct = (step_num - start_step) / (end_step - start_step)
                    values.append(
                        _anneal(self.anneal_strategy, ends[phase['start']],
                                ends[phase['end']], pct))
                    break
                start_step = end_step
        return values
