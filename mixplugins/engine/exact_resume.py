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

- Random transforms (``seed_per_sample=True``, the default): the random,
  numpy and torch RNGs are seeded for every sample from (seed, epoch, sample
  index, rank) right before the dataset loads it, in whichever process
  loads it (main process or data-loader worker; in the main process the
  RNG state is put back afterwards, so the mixing draws are untouched). A
  resumed epoch therefore draws the same crops and flips with any
  ``num_workers`` and ``persistent_workers``. The train loader's dataset and
  batch sampler are wrapped in place for that (:class:`SeededDataset`,
  :class:`PerSampleSeeds`); the pipeline is unchanged.
- ``IterBasedTrainLoop`` (mmengine 0.10.7): mmengine's catch-up ``next``
  calls load nothing; the index stream is fast-forwarded in the sampler.
- ``best_*`` checkpoints hold every rank's entry, as the regular ones.

Limits (each is logged when it applies): the same number of processes; the
forked ``IterBasedTrainLoop`` with ``skip_iter`` keeps its own skip.
"""
import types
from typing import Any, Dict, List, Optional

import torch
from mmengine.dist import gather_object, get_rank, get_world_size
from mmengine.hooks import CheckpointHook, Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS
from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop
from torch import nn

from ..core.checks import check_bool
from .resume_data import (PerSampleSeeds, SeededDataset, _FastForwardIterator,
                          _install_sample_seeds, _iter_loop_resume,
                          _loader_samplers, _release_loop_iterator,
                          _partial_epoch, get_rng_state, sample_seed,
                          set_rng_state)

__all__ = [
    'ExactResumeHook', 'get_rng_state', 'set_rng_state', 'sample_seed',
    'SeededDataset', 'PerSampleSeeds'
]

#: Key of the hook's entry in a checkpoint.
CHECKPOINT_KEY = 'exact_resume'


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
    for sampler in _loader_samplers(loader):
        if isinstance(getattr(sampler, 'seed', None), int):
            return sampler
    return None


def _sampler_seed(runner) -> Optional[int]:
    """The train sampler's seed, where a train loop is built."""
    loop = getattr(runner, '_train_loop', None)
    sampler = _seeded_sampler(getattr(loop, 'dataloader', None))
    return None if sampler is None else sampler.seed




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
        seed_per_sample (bool): Seed the random transforms of every training
            sample from (seed, epoch, sample index, rank), so that they do
            not depend on the data-loader worker that loads the sample and
            a resumed epoch draws the same ones with ``num_workers > 0``.
            Costs a reseed of three RNGs per sample (see
            ``benchmarks/seed_per_sample.py``). Defaults to True.
    """

    priority = 'NORMAL'  # before CheckpointHook (VERY_LOW) in every stage

    def __init__(self,
                 per_rank_modules: bool = True,
                 isolate_val: bool = True,
                 seed_per_sample: bool = True) -> None:
        self.per_rank_modules = check_bool('per_rank_modules',
                                           per_rank_modules)
        self.isolate_val = check_bool('isolate_val', isolate_val)
        self.seed_per_sample = check_bool('seed_per_sample', seed_per_sample)
        self._sample_seed: Optional[int] = None
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
            save_best = hook._save_best_checkpoint

            def save_with_states(runner, step, meta, _save=save):
                self._gather(runner)
                try:
                    return _save(runner, step, meta)
                finally:
                    self._gathered = None

            def save_best_with_states(runner, metrics, _hook=hook,
                                      _save=save_best):
                # every rank calls it with the same (broadcast) metrics
                if not _hook.save_best:
                    return _save(runner, metrics)
                self._gather(runner)
                try:
                    return _save(runner, metrics)
                finally:
                    self._gathered = None

            hook._save_checkpoint_with_step = save_with_states
            hook._save_best_checkpoint = save_best_with_states
            hook._exact_resume_wrapped = True

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        # (a best_* save and the regular save it triggers use one gather)
        ranks = self._gathered
        if ranks is None:  # one process, or a save outside CheckpointHook
            ranks = [self._local_state(runner)]
        checkpoint[CHECKPOINT_KEY] = dict(
            world_size=get_world_size(),
            batch_in_epoch=self._batch_in_epoch,
            sampler_seed=_sampler_seed(runner),
            sample_seed=self._sample_seed,
            batch_size=getattr(runner.train_dataloader, 'batch_size', None),
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
        resuming = not (loaded is None or not loaded['iter']
                        or loop.iter != loaded['iter'])
        if resuming:
            self._check_data(runner, loaded)
        self._install_seeding(runner, loop, loaded if resuming else None)
        upstream_iter_loop = isinstance(loop, IterBasedTrainLoop) and \
            not callable(getattr(loop.dataloader_iterator, 'skip_iter', None))
        if upstream_iter_loop:
            _release_loop_iterator(loop)
        if not resuming:
            if upstream_iter_loop and loop.iter == 0:
                # mmengine created the iterator before the wrappers existed
                loop.dataloader_iterator = _FastForwardIterator(
                    loop.dataloader, 0, lambda: None)
            return
        rank, world_size = get_rank(), get_world_size()
        state = None
        if loaded['world_size'] != world_size:
            runner.logger.warning(
                f'ExactResumeHook: the checkpoint was written by '
                f'{loaded["world_size"]} process(es), this run has '
                f'{world_size}; RNG and per-rank states are not restored: '
                'every rank continues with the checkpoint\'s state_dict, i.e. '
                'rank 0\'s RecursiveMix history / RL-Mix agent / BatchNorm '
                'statistics, and the data order and draws differ from the '
                'interrupted run.')
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
        restore = (lambda: set_rng_state(state['rng'])) if state else \
            (lambda: None)

        skip = loaded['batch_in_epoch']
        if isinstance(loop, IterBasedTrainLoop):
            loop.dataloader_iterator = _iter_loop_resume(loop, restore)
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

    def _install_seeding(self, runner, loop, loaded) -> None:
        """Wrap the train loader for per-sample seeding (fresh and resumed
        runs alike, so that both draw the same transforms)."""
        if not self.seed_per_sample:
            return
        seed = None if loaded is None else loaded.get('sample_seed')
        if not isinstance(seed, int):
            sampler = _seeded_sampler(loop.dataloader)
            seed = sampler.seed if sampler is not None else runner.seed
        if not isinstance(seed, int):
            seed = 0
        if _install_sample_seeds(loop.dataloader, seed, get_rank()):
            self._sample_seed = seed
        else:
            runner.logger.warning(
                'ExactResumeHook: the train data loader has no batch sampler '
                '(or an iterable dataset); random transforms are not seeded '
                'per sample.')

    def _check_data(self, runner, loaded: Dict[str, Any]) -> None:
        """The sampler's seed decides the data order: take the checkpoint's
        (the samplers are built with ``randomness.seed`` or, when it is None
        or ``diff_rank_seed`` is set, a fresh random seed)."""
        loader = runner.train_dataloader
        sampler = _seeded_sampler(loader)
        seed = loaded['sampler_seed']
        saved_bs = loaded.get('batch_size')
        if isinstance(saved_bs, int) and saved_bs != getattr(
                loader, 'batch_size', saved_bs):
            runner.logger.warning(
                f'ExactResumeHook: the checkpoint was written with '
                f'{saved_bs} images per batch and process, this run has '
                f'{loader.batch_size}: the data order and the draws differ '
                'from the interrupted run; RecursiveMix pastes its saved '
                f'history of {saved_bs} images as documented (a smaller '
                'batch takes its first images, a larger one cycles it) and '
                'RL-Mix refuses the batch (docs/bad_input.md).')
        if sampler is not None and isinstance(
                seed, int) and sampler.seed != seed:
            runner.logger.warning(
                f'ExactResumeHook: the train sampler\'s seed {sampler.seed} '
                f'is set to the checkpoint\'s, {seed}, so that '
                'the data order continues.')
            sampler.seed = seed
        if loader.num_workers > 0 and not self.seed_per_sample:
            runner.logger.info(
                'ExactResumeHook: random transforms in data-loader workers '
                '(num_workers > 0) are reseeded, not restored; the data '
                'order and the mixing are exact.')
