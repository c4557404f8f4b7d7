"""Exact resume for mmengine runners.

mmengine 0.10.7 resumes the weights, the optimiser, the parameter schedulers
and the message hub, but three things a mix-up run depends on are lost:

1. **RNG state.** No random / numpy / torch (CPU and CUDA) RNG state is
   saved, so the mixing parameters (λ, boxes, R-Mix thresholds) and the
   random transforms drawn after a resume differ from an uninterrupted run.
2. **Position in the epoch.** ``EpochBasedTrainLoop`` restarts a partially
   trained epoch at batch 0: the batches trained before the checkpoint are
   trained again. (``IterBasedTrainLoop`` loads and discards them.)
3. **Per-rank state.** ``Runner.save_checkpoint`` runs on rank 0 only, so the
   state that differs between ranks -- the RecursiveMix history (each rank
   mixes its own previous batch), the RL-Mix agent and the BatchNorm running
   statistics (mmengine wraps models with ``broadcast_buffers=False``, so
   each rank keeps its own, and evaluates its validation shard with them)
   -- is rank 0's for every rank after a resume.

:class:`ExactResumeHook` fixes the three. With it, a run that is stopped at a
checkpoint and resumed produces, on CPU, bitwise the same mixed batches,
losses and weights as a run that was never stopped (``tests/test_utils/
test_exact_resume.py``). It needs the same number of processes. What it
does:

- Every checkpoint gets an ``'exact_resume'`` entry: the world size, the
  number of batches trained in the current epoch, the train sampler's seed
  and, for every rank, its RNG states, the ``get_extra_state()`` of every
  module of the model that defines one and the model's buffers (the
  per-rank states above). Under DDP the ranks' entries are
  gathered to rank 0 when :class:`~mmengine.hooks.CheckpointHook` saves.
- On resume each rank takes its own entry: module states are restored before
  training starts; a partially trained epoch starts at the next untrained
  batch (the trained ones are skipped by index, without loading them); and
  the RNG states are restored just before the first untrained batch is
  loaded, i.e. after the data loader iterator is created (which draws from
  the torch RNG) and after ``IterBasedTrainLoop``'s catch-up.
- Validation runs do not consume the training RNG stream (the state is put
  aside in ``before_val`` and restored in ``after_val``), so where the
  validation falls relative to the checkpoint makes no difference.

Limits (each is logged when it applies):

- Random transforms that run in data-loader worker processes
  (``num_workers > 0``) are seeded by mmengine per worker, not restored: the
  data order and every draw of the main process (all mixing) are exact, the
  worker-side augmentations after a resume are not.
- ``best_*`` checkpoints are written by ``CheckpointHook`` outside its
  regular saving path; under DDP they hold rank 0's entry only, and the
  other ranks resume from them with their current RNG and model state.
- ``IterBasedTrainLoop`` still loads the trained batches once to catch up
  (mmengine's own behaviour); nothing is trained twice.
"""
import random
import types
from typing import Any, Dict, Iterator, List, Optional

import numpy as np
import torch
from mmengine.dist import gather_object, get_rank, get_world_size
from mmengine.hooks import CheckpointHook, Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS
from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop
from torch import nn
from torch.utils.data import DataLoader

__all__ = ['ExactResumeHook', 'get_rng_state', 'set_rng_state']

#: Key of the hook's entry in a checkpoint.
CHECKPOINT_KEY = 'exact_resume'


def get_rng_state() -> Dict[str, Any]:
    """The process's random, numpy and torch (CPU and, if initialised, the
    current CUDA device) RNG states."""
    state = dict(
        random=random.getstate(),
        numpy=np.random.get_state(),
        torch=torch.get_rng_state())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restore what :func:`get_rng_state` returned.

    Tensors may come back on another device (checkpoints are loaded with a
    ``map_location``); they are moved to the CPU first, as torch needs.
    """
    random.setstate(state['random'])
    np.random.set_state(state['numpy'])
    torch.set_rng_state(state['torch'].cpu())
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state['cuda'].cpu())


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def _stateful_modules(model: nn.Module) -> Dict[str, nn.Module]:
    """Modules of ``model`` that define ``get_extra_state`` (the per-rank
    states: RecursiveMix history, RL-Mix agent, ...), by name."""
    if is_model_wrapper(model):
        model = model.module
    return {
        name: m
        for name, m in model.named_modules()
        if type(m).get_extra_state is not nn.Module.get_extra_state
    }


def _persistent_buffers(model: nn.Module) -> Dict[str, torch.Tensor]:
    """The buffers of ``model`` that its ``state_dict`` holds (BatchNorm
    running statistics, ...), by their ``state_dict`` key."""
    if is_model_wrapper(model):
        model = model.module
    buffers = {}
    for prefix, module in model.named_modules():
        for name, buf in module.named_buffers(recurse=False):
            if name not in module._non_persistent_buffers_set:
                buffers[f'{prefix}.{name}' if prefix else name] = buf
    return buffers


def _seeded_sampler(loader):
    """The sampler of ``loader`` that has an int ``seed`` (mmengine's
    ``DefaultSampler``, possibly inside a batch sampler), or None."""
    if loader is None:
        return None
    for sampler in (getattr(loader, 'sampler', None),
                    getattr(getattr(loader, 'batch_sampler', None), 'sampler',
                            None)):
        if isinstance(getattr(sampler, 'seed', None), int):
            return sampler
    return None


def _sampler_seed(runner) -> Optional[int]:
    """The train sampler's seed, where a train loop is built."""
    loop = getattr(runner, '_train_loop', None)
    sampler = _seeded_sampler(getattr(loop, 'dataloader', None))
    return None if sampler is None else sampler.seed


class _SkipFirstBatches:
    """A batch sampler that leaves out the first ``n`` batches of
    ``batch_sampler`` (by index: nothing is loaded for them)."""

    def __init__(self, batch_sampler, n: int) -> None:
        self.batch_sampler = batch_sampler
        self.n = n

    def __iter__(self) -> Iterator[List[int]]:
        it = iter(self.batch_sampler)
        for _ in range(self.n):
            if next(it, None) is None:
                return
        yield from it

    def __len__(self) -> int:
        return max(len(self.batch_sampler) - self.n, 0)


def _skip_first_batches(loader: DataLoader, n: int) -> DataLoader:
    """A one-epoch copy of ``loader`` that starts at batch ``n``.

    It shares the dataset, the batch sampler (so ``set_epoch`` on the
    original's sampler applies), the collate and worker-init functions.
    """
    if loader.batch_sampler is None:
        raise ValueError('ExactResumeHook needs a data loader with a batch '
                         'sampler (batch_size or batch_sampler set) to skip '
                         'trained batches')
    kwargs = dict(
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn,
        multiprocessing_context=loader.multiprocessing_context,
        generator=loader.generator,
        pin_memory_device=loader.pin_memory_device)
    if loader.num_workers > 0:
        kwargs['prefetch_factor'] = loader.prefetch_factor
    return DataLoader(
        loader.dataset,
        batch_sampler=_SkipFirstBatches(loader.batch_sampler, n),
        **kwargs)


class _AfterCatchUp:
    """Wraps ``IterBasedTrainLoop.dataloader_iterator``: after ``n`` batches
    (mmengine's catch-up) it calls ``on_done`` and puts the original
    iterator back before the next batch is loaded."""

    def __init__(self, loop, n: int, on_done) -> None:
        self.loop, self.n, self.on_done = loop, n, on_done
        self.inner = loop.dataloader_iterator

    def __iter__(self):
        return self

    def __next__(self):
        if self.n > 0:
            self.n -= 1
            return next(self.inner)
        self.loop.dataloader_iterator = self.inner
        self.on_done()
        return next(self.inner)


@HOOKS.register_module()
class ExactResumeHook(Hook):
    """Make ``--resume`` continue a run exactly where its checkpoint was taken.

    See the module docstring for what is saved and restored. Add it to a
    config with ``custom_hooks = [dict(type='ExactResumeHook')]``; registered in mmengine's ``HOOKS``, so
    mmpretrain, mmdet and mmseg configs find it.

    Args:
        per_rank_modules (bool): Save and restore, per rank, the
            ``get_extra_state()`` of the model's modules that define it
            (RecursiveMix history, RL-Mix agent) and the model's buffers
            (BatchNorm running statistics). Under DDP the checkpoint
            then holds one copy per rank (for RecursiveMix on ImageNet:
            world size × one batch of images). Defaults to True.
        isolate_val (bool): Keep validation from consuming the training RNG
            stream. Defaults to True.
    """

    priority = 'NORMAL'  # before CheckpointHook (VERY_LOW) in every stage

    def __init__(self,
                 per_rank_modules: bool = True,
                 isolate_val: bool = True) -> None:
        for name, value in (('per_rank_modules', per_rank_modules),
                            ('isolate_val', isolate_val)):
            if not isinstance(value, bool):
                raise TypeError(f'{name} must be a bool, got {value!r}')
        self.per_rank_modules = per_rank_modules
        self.isolate_val = isolate_val
        self._batch_in_epoch = 0
        self._train_rng: Optional[Dict[str, Any]] = None  # during val
        self._gathered: Optional[List[Dict[str, Any]]] = None
        self._loaded: Optional[Dict[str, Any]] = None

    # ------------------------------------------------------------- saving
    def _local_state(self, runner) -> Dict[str, Any]:
        rng = self._train_rng if self._train_rng is not None else \
            get_rng_state()
        modules, buffers = {}, {}
        if self.per_rank_modules:
            modules = {
                name: m.get_extra_state()
                for name, m in _stateful_modules(runner.model).items()
            }
            buffers = _persistent_buffers(runner.model)
        # CPU tensors: gathered (pickled) or saved right away, never kept
        return _to_cpu(dict(rng=rng, modules=modules, buffers=buffers))

    def _gather(self, runner) -> None:
        """Collective: every rank's state to rank 0 (all ranks call it)."""
        self._gathered = gather_object(self._local_state(runner), dst=0)

    def _wrap_checkpoint_hooks(self, runner) -> None:
        """Under DDP, gather the ranks' states each time a
        ``CheckpointHook`` saves: its ``_save_checkpoint_with_step`` runs on
        every rank, ``Runner.save_checkpoint`` (and so
        ``before_save_checkpoint``) on rank 0 only."""
        for hook in runner.hooks:
            if not isinstance(hook, CheckpointHook) or getattr(
                    hook, '_exact_resume_wrapped', False):
                continue
            save = hook._save_checkpoint_with_step

            def save_with_states(runner, step, meta, _save=save):
                self._gather(runner)
                return _save(runner, step, meta)

            hook._save_checkpoint_with_step = save_with_states
            hook._exact_resume_wrapped = True

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        ranks = self._gathered
        self._gathered = None
        if ranks is None:  # one process, or a save outside CheckpointHook
            ranks = [self._local_state(runner)]
        checkpoint[CHECKPOINT_KEY] = dict(
            world_size=get_world_size(),
            batch_in_epoch=self._batch_in_epoch,
            sampler_seed=_sampler_seed(runner),
            ranks=ranks)

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        self._batch_in_epoch = batch_idx + 1

    def after_train_epoch(self, runner) -> None:
        self._batch_in_epoch = 0

    def before_val(self, runner) -> None:
        if self.isolate_val:
            self._train_rng = get_rng_state()

    def after_val(self, runner) -> None:
        if self._train_rng is not None:
            set_rng_state(self._train_rng)
            self._train_rng = None

    # ----------------------------------------------------------- resuming
    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        self._loaded = None
        entry = checkpoint.get(CHECKPOINT_KEY, None)
        if entry is None:
            return
        self._loaded = dict(entry, iter=checkpoint['meta'].get('iter'))

    def before_train(self, runner) -> None:
        if get_world_size() > 1:
            self._wrap_checkpoint_hooks(runner)
        loaded, self._loaded = self._loaded, None
        loop = runner.train_loop
        # ``load_from`` (fine-tuning) loads a checkpoint too; only a resume
        # sets the loop's iteration to the checkpoint's.
        if loaded is None or not loaded['iter'] or loop.iter != loaded['iter']:
            return
        rank, world_size = get_rank(), get_world_size()
        state = None
        if loaded['world_size'] != world_size:
            runner.logger.warning(
                f'ExactResumeHook: the checkpoint was written by '
                f'{loaded["world_size"]} process(es), this run has '
                f'{world_size}; RNG and per-rank states are not restored.')
        elif rank >= len(loaded['ranks']):
            runner.logger.warning(
                f'ExactResumeHook: the checkpoint holds no state of rank '
                f'{rank} (a best_* checkpoint of a DDP run?); this rank '
                'keeps its current RNG and rank 0\'s module states.')
        else:
            state = loaded['ranks'][rank]
            if self.per_rank_modules:
                self._restore_modules(runner, state['modules'],
                                      state.get('buffers', {}))
        self._check_data(runner, loaded)
        restore = (lambda: set_rng_state(state['rng'])) if state else \
            (lambda: None)

        skip = loaded['batch_in_epoch']
        if isinstance(loop, IterBasedTrainLoop):
            loop.dataloader_iterator = _AfterCatchUp(loop, loop.iter, restore)
        elif skip == 0:
            restore()
        elif type(loop).run_epoch is EpochBasedTrainLoop.run_epoch:
            self._batch_in_epoch = skip
            loop.run_epoch = types.MethodType(
                _partial_epoch(skip, restore), loop)
            runner.logger.info(
                f'ExactResumeHook: epoch {loop.epoch + 1} continues at batch '
                f'{skip + 1}; the {skip} trained batch(es) are skipped.')
        else:
            restore()
            runner.logger.warning(
                f'ExactResumeHook: {type(loop).__name__} overrides '
                'run_epoch; the partially trained epoch restarts at batch 0.')

    def _restore_modules(self, runner, states: Dict[str, Any],
                         buffers: Dict[str, torch.Tensor]) -> None:
        own = _persistent_buffers(runner.model)
        with torch.no_grad():
            for name, value in buffers.items():
                if name in own and own[name].shape == value.shape:
                    own[name].copy_(value)
        modules = _stateful_modules(runner.model)
        for name, module_state in states.items():
            if name in modules:
                modules[name].set_extra_state(module_state)
            else:
                runner.logger.warning(
                    f'ExactResumeHook: the checkpoint has a state for module '
                    f'{name!r}, which the model does not have; ignored.')

    @staticmethod
    def _check_data(runner, loaded: Dict[str, Any]) -> None:
        """The sampler's seed decides the data order: take the checkpoint's
        (the samplers are built with ``randomness.seed`` or, when it is None
        or ``diff_rank_seed`` is set, a fresh random seed)."""
        loader = runner.train_dataloader
        sampler = _seeded_sampler(loader)
        seed = loaded['sampler_seed']
        if sampler is not None and isinstance(
                seed, int) and sampler.seed != seed:
            runner.logger.warning(
                f'ExactResumeHook: the train sampler\'s seed {sampler.seed} '
                f'is set to the checkpoint\'s, {seed}, so that '
                'the data order continues.')
            sampler.seed = seed
        if loader.num_workers > 0:
            runner.logger.info(
                'ExactResumeHook: random transforms in data-loader workers '
                '(num_workers > 0) are reseeded, not restored; the data '
                'order and the mixing are exact.')


def _partial_epoch(skip: int, restore):
    """``run_epoch`` for the epoch a checkpoint was taken in: it starts at
    batch ``skip`` and restores the RNG after the loader iterator is
    created (as the uninterrupted run had it when it reached that batch).
    Runs once, then the loop's own ``run_epoch`` is back."""

    def run_epoch(loop) -> None:
        del loop.run_epoch  # later epochs: the class's method
        loop.runner.call_hook('before_train_epoch')
        loop.runner.model.train()
        batches = iter(_skip_first_batches(loop.dataloader, skip))
        restore()
        for idx, data_batch in enumerate(batches, start=skip):
            loop.run_iter(idx, data_batch)
        loop.runner.call_hook('after_train_epoch')
        loop._epoch += 1

    return run_epoch
