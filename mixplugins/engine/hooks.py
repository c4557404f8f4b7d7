"""Hooks for the progressive-resolution ImageNet recipe of R-Mix.

R-Mix (Luu et al., "Expeditious Saliency-guided Mix-up through Random
Gradient Thresholding", https://arxiv.org/abs/2212.04875, code
https://github.com/minhlong94/Random-Mixup) trains ResNet-50 on ImageNet with
the 100-epoch "fast ImageNet" recipe it takes from Co-Mixup
(https://github.com/snu-mllab/Co-Mixup): three phases run as three
processes, each resuming the previous checkpoint::

    phase  epochs   data (shorter side)  crop  batch  RandomResizedCrop scale
    1      0-15     160 px copy          128   1024   (0.08, 1)
    2      15-40    352 px copy          224   448    (0.087, 1)
    3      40-100   352 px copy          224   448    (0.087, 1)

and the learning rate of every parameter group is set before each iteration
to ``np.interp(epoch + (i + 1) / len(loader), lr_epochs, lr_values)`` with a
separate ``(lr_epochs, lr_values)`` table per phase.

Two hooks express this inside one mmengine run:

* :class:`DataloaderSwitchHook` rebuilds the training dataloader from
  overrides of ``train_dataloader`` when a phase starts (and when a run is
  resumed inside a later phase);
* :class:`PiecewiseLinearLRHook` sets the learning rate before each
  iteration from the fractional epoch, with one interpolation table per
  phase. It needs the length of the *current* dataloader, which an mmengine
  parameter scheduler cannot see, hence a hook rather than a scheduler.

Both hold no state of their own: everything derives from ``runner.epoch``
and the batch index, so checkpoints and resuming need nothing extra. Both
are registered in ``mmpretrain.registry.HOOKS`` (a child of mmengine's), so
``custom_hooks`` of configs with ``default_scope='mmpretrain'`` find them.
"""
import copy
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.runner import EpochBasedTrainLoop
from mmengine.registry import HOOKS

from ..core.checks import check_int, check_number, check_sequence

__all__ = ['DataloaderSwitchHook', 'PiecewiseLinearLRHook']


def _merge(base: Any, override: Any) -> Any:
    """Recursively merge ``override`` into a copy of ``base``.

    Dicts are merged key by key; any other value (lists such as a
    ``pipeline`` included) replaces the base value.
    """
    if isinstance(base, dict) and isinstance(override, dict):
        out = copy.deepcopy(base)
        for key, value in override.items():
            out[key] = _merge(base[key], value) if key in base else \
                copy.deepcopy(value)
        return out
    return copy.deepcopy(override)


def _check_phases(phases: Any,
                  keys: Sequence[str]) -> Iterator[Tuple[int, dict]]:
    """Iterate over ``enumerate(phases)``, checking that ``phases`` is a
    non-empty list of dicts with exactly ``keys`` (each phase when it is
    reached; the values are the caller's to check).
    """
    names = ' and '.join(repr(k) for k in keys)
    if isinstance(phases, dict) or not isinstance(phases, Sequence) \
            or len(phases) == 0:
        raise TypeError(f'`phases` must be a non-empty list of dicts with '
                        f'{names}, got {phases!r}')
    for i, phase in enumerate(phases):
        if not isinstance(phase, dict) or set(phase) != set(keys):
            raise ValueError(f'`phases[{i}]` must be a dict with exactly the '
                             f'keys {names}, got {phase!r}')
        yield i, phase


def _check_epoch_loop(runner, hook: Hook) -> EpochBasedTrainLoop:
    loop = runner.train_loop
    if not isinstance(loop, EpochBasedTrainLoop):
        raise TypeError(f'{type(hook).__name__} needs an epoch-based train '
                        f'loop, got {type(loop).__name__}')
    return loop


@HOOKS.register_module()
class DataloaderSwitchHook(Hook):
    """Rebuild the training dataloader at given epochs (training phases).

    Implements the progressive resizing of the R-Mix ImageNet recipe
    (`Expeditious Saliency-guided Mix-up through Random Gradient
    Thresholding <https://arxiv.org/abs/2212.04875>`_; phases from Co-Mixup's
    fast-ImageNet recipe) in a single run: from ``phases[k]['epoch']`` on,
    training uses the config's ``train_dataloader`` merged with the
    ``dataloader`` overrides of ``phases[0..k]`` (applied in order). Dicts
    are merged key by key, anything else (e.g. the ``pipeline`` list or
    ``batch_size``) is replaced. Before the first switch epoch the config's
    own ``train_dataloader`` is used unchanged.

    The switch happens in ``before_train_epoch`` (and in ``before_train``,
    so that a run resumed inside a later phase starts with that phase's
    data); the new loader is built with ``runner.build_dataloader`` and the
    runner's seed, exactly like the first one. The hook runs before
    ``DistSamplerSeedHook``, which then sets the new sampler's epoch. The
    old loader's workers stop when it is garbage-collected.
    ``runner.max_iters`` (used for the ETA only) is re-estimated as if all
    remaining epochs had the new length.

    Example (phase 2 of the R-Mix recipe)::

        custom_hooks = [dict(
            type='DataloaderSwitchHook',
            phases=[dict(epoch=15, dataloader=dict(
                batch_size=112,
                dataset=dict(data_root='data/imagenet/size352',
                             pipeline=phase2_pipeline)))])]

    Args:
        phases (Sequence[dict]): One dict per switch, with ``epoch`` (int,
            > 0, strictly increasing over the list; 0-based epoch index from
            which the phase applies) and ``dataloader`` (dict of overrides of
            ``train_dataloader``).
    """

    priority = 'ABOVE_NORMAL'

    def __init__(self, phases: Sequence[Dict[str, Any]]) -> None:
        last = 0
        checked = []
        for i, phase in _check_phases(phases, ('epoch', 'dataloader')):
            # epochs strictly increasing from 1
            epoch = check_int(f'phases[{i}].epoch', phase['epoch'], last + 1)
            if not isinstance(phase['dataloader'], dict):
                raise TypeError(f'`phases[{i}].dataloader` must be a dict '
                                f'of overrides, got {phase["dataloader"]!r}')
            last = epoch
            checked.append(
                dict(epoch=epoch, dataloader=dict(phase['dataloader'])))
        self.phases: List[Dict[str, Any]] = checked
        self._base_cfg: Optional[dict] = None
        self._active: Optional[int] = None

    def phase_index(self, epoch: int) -> int:
        """Phase active at 0-based ``epoch``: 0 before the first switch,
        ``k + 1`` from ``phases[k]['epoch']`` on."""
        return sum(1 for phase in self.phases if phase['epoch'] <= epoch)

    def dataloader_cfg(self, index: int) -> dict:
        """The dataloader config of phase ``index`` (0 = the base one)."""
        if self._base_cfg is None:
            raise RuntimeError('the base train_dataloader is only known '
                               'after before_train')
        cfg = copy.deepcopy(self._base_cfg)
        for phase in self.phases[:index]:
            cfg = _merge(cfg, phase['dataloader'])
        return cfg

    def before_train(self, runner) -> None:
        """Record the base ``train_dataloader`` config and build the
        dataloader of the phase the run starts (or resumes) in."""
        _check_epoch_loop(runner, self)
        base = runner.cfg.get('train_dataloader')
        if base is None:
            base = getattr(runner, '_train_dataloader', None)
        if not isinstance(base, dict):
            raise TypeError(
                'DataloaderSwitchHook needs `train_dataloader` as a config '
                f'dict (in the runner cfg), got {type(base).__name__}')
        self._base_cfg = copy.deepcopy(dict(base))
        self._active = 0  # the train loop built the base loader
        self._switch(runner)

    def before_train_epoch(self, runner) -> None:
        """Switch the dataloader if a new phase starts at this epoch."""
        self._switch(runner)

    def _switch(self, runner) -> None:
        index = self.phase_index(runner.epoch)
        if index == self._active:
            return
        loop = _check_epoch_loop(runner, self)
        randomness = getattr(runner, '_randomness_cfg', None) or {}
        loader = runner.build_dataloader(
            self.dataloader_cfg(index),
            seed=runner.seed,
            diff_rank_seed=randomness.get('diff_rank_seed', False))
        loop.dataloader = loader
        loop._max_iters = runner.iter + \
            (loop.max_epochs - runner.epoch) * len(loader)
        self._active = index
        print_log(
            f'DataloaderSwitchHook: epoch {runner.epoch} starts phase '
            f'{index} (batch_size={loader.batch_size}, '
            f'{len(loader)} iterations per epoch)',
            logger='current')


@HOOKS.register_module()
class PiecewiseLinearLRHook(Hook):
    """Set the learning rate per iteration by piecewise-linear interpolation
    over fractional epochs.

    The learning-rate schedule of the R-Mix ImageNet recipe
    (`Expeditious Saliency-guided Mix-up through Random Gradient
    Thresholding <https://arxiv.org/abs/2212.04875>`_, from Co-Mixup's fast
    ImageNet recipe). Before iteration ``i`` of 0-based epoch ``e`` it sets
    the ``lr`` of **every** parameter group to

    ``np.interp(e + (i + 1) / len(dataloader), epochs, values)``

    using the ``(epochs, values)`` table of the phase that contains ``e``
    (the last phase whose first epoch is ``<= e``; the first phase before
    that). ``np.interp`` holds the end values outside a table. Separate
    tables per phase reproduce the jumps between the reference's phase
    configs (e.g. 0.125 at the end of phase 1, then 0.2 at the start of
    phase 2). The optimizer's configured ``lr`` (and any ``lr_mult``) is
    overwritten, as in the reference; use no LR ``param_scheduler`` with
    this hook. It runs with the highest priority so that the LR logged by
    ``RuntimeInfoHook`` is the one used by the iteration.

    Example (the R-Mix recipe)::

        custom_hooks = [dict(type='PiecewiseLinearLRHook', phases=[
            dict(epochs=(0, 8, 15), values=(0.5, 1.0, 0.125)),
            dict(epochs=(15, 40), values=(0.2, 0.02)),
            dict(epochs=(40, 65, 90, 100),
                 values=(0.02, 0.002, 0.0002, 0.00002))])]

    Args:
        phases (Sequence[dict]): One dict per phase with ``epochs``
            (strictly increasing numbers) and ``values`` (learning rates
            >= 0, same length). The first epochs of the phases must be
            strictly increasing.
    """

    priority = 'HIGHEST'

    def __init__(self, phases: Sequence[Dict[str, Sequence[float]]]) -> None:
        checked = []
        for i, phase in _check_phases(phases, ('epochs', 'values')):
            epochs = list(
                check_sequence(f'phases[{i}].epochs', phase['epochs'],
                               check_number))
            values = list(
                check_sequence(f'phases[{i}].values', phase['values'],
                               check_number, 0.0))
            if len(epochs) != len(values):
                raise ValueError(f'`phases[{i}]`: {len(epochs)} epochs but '
                                 f'{len(values)} values')
            if any(b <= a for a, b in zip(epochs, epochs[1:])):
                raise ValueError(f'`phases[{i}].epochs` must be strictly '
                                 f'increasing, got {epochs}')
            if checked and epochs[0] <= checked[-1]['epochs'][0]:
                raise ValueError('the phases must start at strictly '
                                 'increasing epochs')
            checked.append(dict(epochs=epochs, values=values))
        self.phases: List[Dict[str, List[float]]] = checked

    def lr_at(self, epoch: int, progress: float) -> float:
        """Learning rate at fractional epoch ``epoch + progress``.

        Args:
            epoch (int): 0-based epoch; selects the phase.
            progress (float): Fraction of the epoch done after this
                iteration, ``(i + 1) / len(dataloader)``.

        Returns:
            float: The interpolated learning rate.
        """
        phase = self.phases[0]
        for candidate in self.phases:
            if candidate['epochs'][0] <= epoch:
                phase = candidate
        return float(
            np.interp(epoch + progress, phase['epochs'], phase['values']))

    def before_train(self, runner) -> None:
        """Check that the train loop is epoch-based."""
        _check_epoch_loop(runner, self)

    def before_train_iter(self,
                          runner,
                          batch_idx: int,
                          data_batch: Optional[Any] = None) -> None:
        """Set the LR of all parameter groups for this iteration."""
        num_iters = len(runner.train_loop.dataloader)
        lr = self.lr_at(runner.epoch, (batch_idx + 1) / num_iters)
        groups = runner.optim_wrapper.param_groups
        if isinstance(groups, dict):  # OptimWrapperDict
            groups = [g for gs in groups.values() for g in gs]
        for group in groups:
            group['lr'] = lr
