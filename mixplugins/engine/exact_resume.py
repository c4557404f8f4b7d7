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
from torch.utils.data import DataLoader, Dataset, get_worker_info

from ..core.checks import check_bool

__all__ = [
    'ExactResumeHook', 'get_rng_state', 'set_rng_state', 'sample_seed',
    'SeededDataset', 'PerSampleSeeds'
]

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


_MASK64 = (1 << 64) - 1


def sample_seed(*values: int) -> int:
    """A 64-bit seed that depends only on ``values`` (splitmix64 over them):
    the per-sample seed of (seed, epoch, pass, sample index, rank)."""
    h = 0
    for v in values:
        h = (h ^ (int(v) & _MASK64)) + 0x9E3779B97F4A7C15 & _MASK64
        h = (h ^ (h >> 30)) * 0xBF58476D1CE4E5B9 & _MASK64
        h = (h ^ (h >> 27)) * 0x94D049BB133111EB & _MASK64
        h ^= h >> 31
    return h


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed & 0xFFFFFFFF)
    # the CPU generator only: torch.manual_seed also seeds every CUDA
    # device (milliseconds per call), which data transforms do not use
    torch.default_generator.manual_seed(seed >> 1)


class SeededDataset(Dataset):
    """Wraps a map-style dataset: a key ``(index, seed)`` (what
    :class:`PerSampleSeeds` yields) seeds the random, numpy and torch RNGs
    with ``seed`` and returns ``dataset[index]``; any other key is passed
    through. In the main process (``num_workers=0``) the RNG states are
    put back after the sample is loaded. Attributes (``metainfo``,
    ``pipeline``, ...) are the wrapped dataset's."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str):
        if name == 'dataset' or name.startswith('__'):
            raise AttributeError(name)  # (unpickling in a worker)
        return getattr(self.dataset, name)

    def __getitem__(self, key):
        if not isinstance(key, tuple):
            return self.dataset[key]
        index, seed = key
        if get_worker_info() is not None:
            _seed_all(seed)
            return self.dataset[index]
        state = (random.getstate(), np.random.get_state(),
                 torch.get_rng_state())
        try:
            _seed_all(seed)
            return self.dataset[index]
        finally:
            random.setstate(state[0])
            np.random.set_state(state[1])
            torch.set_rng_state(state[2])


class PerSampleSeeds:
    """Wraps a batch sampler: yields ``[(index, seed), ...]`` where ``seed``
    is :func:`sample_seed` of (``base_seed``, the sampler's epoch, the pass
    over the data -- for infinite samplers --, the sample index, ``rank``).
    It runs in the main process, so the epoch is always current (also with
    ``persistent_workers``), and a batch skipped by index gets the seed it
    would have had."""

    def __init__(self, batch_sampler, base_seed: int, rank: int) -> None:
        self.batch_sampler = batch_sampler
        self.base_seed = int(base_seed)
        self.rank = rank

    @property
    def sampler(self):
        return getattr(self.batch_sampler, 'sampler', None)

    def __getattr__(self, name: str):
        if name == 'batch_sampler' or name.startswith('__'):
            raise AttributeError(name)
        return getattr(self.batch_sampler, name)

    def __iter__(self) -> Iterator[List[tuple]]:
        sampler = self.sampler
        epoch = int(getattr(sampler, 'epoch', 0) or 0)
        try:
            size = max(len(sampler), 1)
        except TypeError:
            size = 1 << 62
        seen = 0
        for batch in self.batch_sampler:
            out = []
            for index in batch:
                out.append((index,
                            sample_seed(self.base_seed, epoch, seen // size,
                                        index, self.rank)))
                seen += 1
            yield out

    def __len__(self) -> int:
        return len(self.batch_sampler)


def _install_sample_seeds(loader, base_seed: int, rank: int) -> bool:
    """Wrap ``loader``'s dataset and batch sampler in place (every holder
    of the loader sees them); a worker pool already started by
    ``persistent_workers`` holds the unwrapped dataset and is shut down.
    Returns False when the loader has no batch sampler."""
    if isinstance(loader.batch_sampler, PerSampleSeeds):
        loader.batch_sampler.base_seed = int(base_seed)
        return True
    if loader.batch_sampler is None or isinstance(
            loader.dataset, torch.utils.data.IterableDataset):
        return False
    started = getattr(loader, '_iterator', None)
    if started is not None:
        loader._iterator = None
        shutdown = getattr(started, '_shutdown_workers', None)
        if shutdown is not None:
            shutdown()
    # DataLoader refuses to set these after __init__; the two wrappers keep
    # its length, sampler and collation
    object.__setattr__(loader, 'dataset', SeededDataset(loader.dataset))
    object.__setattr__(loader, 'batch_sampler',
                       PerSampleSeeds(loader.batch_sampler, base_seed, rank))
    return True


def _first_iterator_draws_nothing(loader) -> None:
    """A resume starts its partial epoch on a one-shot copy of ``loader``.
    With ``persistent_workers`` the uninterrupted run created the loader's
    worker pool (drawing a base seed from torch's RNG) at that epoch's start
    and only resets it afterwards (no draw); the resumed run creates the
    pool at the next epoch. This makes that creation leave torch's RNG (and
    the loader's generator) as it found them, so both runs continue with
    the same stream."""
    if not (loader.num_workers > 0 and loader.persistent_workers) or \
            getattr(loader, '_iterator', None) is not None:
        return
    make = loader._get_iterator

    def get_iterator():
        del loader._get_iterator  # once: the class's method afterwards
        state = torch.get_rng_state()
        gen = loader.generator
        gen_state = None if gen is None else gen.get_state()
        try:
            return make()
        finally:
            torch.set_rng_state(state)
            if gen is not None:
                gen.set_state(gen_state)

    loader._get_iterator = get_iterator


def _set_epoch(loader, epoch: int) -> None:
    """What mmengine's ``_InfiniteDataloaderIterator`` does at the end of
    an epoch."""
    sampler = getattr(loader, 'sampler', None)
    if not hasattr(sampler, 'set_epoch'):
        sampler = getattr(getattr(loader, 'batch_sampler', None), 'sampler',
                          None)
    if hasattr(sampler, 'set_epoch'):
        sampler.set_epoch(epoch)


class _Started:
    """A one-shot batch sampler that continues an iterator that was already
    advanced (by index only)."""

    def __init__(self, it, length: int) -> None:
        self.it, self.length = it, length

    def __iter__(self):
        return self.it

    def __len__(self) -> int:
        return self.length


class _FastForwardIterator:
    """``IterBasedTrainLoop.dataloader_iterator`` of mmengine 0.10.7 under
    the hook (fresh and resumed runs).

    On a resume after ``catch_up`` iterations, mmengine calls ``next`` that
    many times and discards the batches: those calls return None and load
    nothing. At the first real batch the trained batches are skipped in the
    batch sampler (indices only; across epoch ends as mmengine's
    ``_InfiniteDataloaderIterator`` does, with ``set_epoch``), the loader's
    iterator is created at that position, then ``on_start`` restores the
    RNG. Later epochs: ``set_epoch(epoch + 1)`` and a new iterator, as
    mmengine.
    """

    def __init__(self, loader, catch_up: int, on_start) -> None:
        self.loader = loader
        self.catch_up = self.skip = catch_up
        self.on_start = on_start
        self._epoch = 0
        self._iterator = None

    def __iter__(self):
        return self

    def __next__(self):
        if self.catch_up > 0:
            self.catch_up -= 1
            return None
        if self._iterator is None:
            self._start()
        try:
            return next(self._iterator)
        except StopIteration:
            self._epoch += 1
            _set_epoch(self.loader, self._epoch)
            self._iterator = iter(self.loader)
            return next(self._iterator)

    def _start(self) -> None:
        batches = self.loader.batch_sampler
        n, it, left = self.skip, iter(batches), len(batches)
        while n > 0:
            if next(it, None) is None:
                self._epoch += 1
                _set_epoch(self.loader, self._epoch)
                it, left = iter(batches), len(batches)
                continue
            n -= 1
            left -= 1
        if self.skip == 0:
            self._iterator = iter(self.loader)
        else:
            self._iterator = iter(
                _loader_with(self.loader, _Started(it, max(left, 0))))
            _first_iterator_draws_nothing(self.loader)
        self.on_start()


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
    return _loader_with(loader, _SkipFirstBatches(loader.batch_sampler, n))


def _loader_with(loader: DataLoader, batch_sampler) -> DataLoader:
    """A copy of ``loader`` (same dataset, collate, workers) that takes its
    batches from ``batch_sampler``."""
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
    return DataLoader(loader.dataset, batch_sampler=batch_sampler, **kwargs)


# -- onedl-mmengine (>= 0.10.11) fast-forward: kept apart from the upstream
# path (``_FastForwardIterator`` above).
class _SkipIterThenRestore:
    """Wraps the ``dataloader_iterator`` of onedl-mmengine's
    ``IterBasedTrainLoop``, which resumes with
    ``dataloader_iterator.skip_iter(n)`` (a sampler-level skip when the
    sampler has ``skip``, else ``n`` loaded batches) and creates the loader's
    iterator lazily, on the next batch -- which draws a base seed from
    torch's global RNG. The wrapper skips, creates the iterator (the draw the
    uninterrupted run made at its first batch), then calls ``on_done`` (the
    RNG restore) and puts the original iterator back.

    With the fork's ``fast_forward_on_resume=True`` the loop skips nothing;
    the wrapper then skips the ``n`` trained batches itself on the first
    batch (an exact resume needs the data order; with a ``skip``-able
    sampler this loads nothing).
    """

    def __init__(self, loop, n: int, on_done) -> None:
        self.loop, self.n, self.on_done = loop, n, on_done
        self.inner = loop.dataloader_iterator

    def skip_iter(self, num_iters: int) -> None:
        self._finish(num_iters)

    def __iter__(self):
        return self

    def __next__(self):
        # the loop did not call skip_iter: fast_forward_on_resume=True
        self._finish(self.n)
        return next(self.inner)

    def _finish(self, num_iters: int) -> None:
        self.loop.dataloader_iterator = self.inner
        self.inner.skip_iter(num_iters)
        ensure = getattr(self.inner, '_ensure_iterator', None)
        if ensure is not None:
            ensure()
        self.on_done()


def _iter_loop_resume(loop, restore):
    """The ``dataloader_iterator`` wrapper for ``loop``'s resume: the fork's
    (``skip_iter``) or upstream mmengine's (catch-up by ``next``)."""
    if callable(getattr(loop.dataloader_iterator, 'skip_iter', None)):
        return _SkipIterThenRestore(loop, loop.iter, restore)
    return _FastForwardIterator(loop.dataloader, loop.iter, restore)


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
        _first_iterator_draws_nothing(loop.dataloader)
        restore()
        for idx, data_batch in enumerate(batches, start=skip):
            loop.run_iter(idx, data_batch)
        loop.runner.call_hook('after_train_epoch')
        loop._epoch += 1

    return run_epoch
