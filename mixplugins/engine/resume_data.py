"""The data side of exact resume: RNG states, per-sample seeds and loaders
that start at the first untrained batch.

Used by :class:`~mixplugins.engine.exact_resume.ExactResumeHook` (see its
module docstring for the whole mechanism); kept apart so that each file
stays readable.
"""
import random
from typing import Any, Dict, Iterator, List

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

#: Seeds are 64-bit.
_MASK64 = (1 << 64) - 1

__all__ = [
    'get_rng_state', 'set_rng_state', 'sample_seed', 'SeededDataset',
    'PerSampleSeeds'
]


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
        self._start = 0

    def advance(self, num_samples: int) -> None:
        """The sampler's index stream was moved ``num_samples`` indices on
        outside this wrapper (onedl-mmengine's sampler-level
        ``InfiniteSampler.skip``): the next ``__iter__`` counts the samples,
        and so the passes over the data, from there."""
        self._start = int(num_samples)

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
        seen, self._start = self._start, 0
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


def _loader_samplers(loader) -> List[Any]:
    """The index samplers of ``loader``: its ``sampler`` and the
    ``sampler`` of its batch sampler (mmengine builds either), in that
    order, those that exist."""
    candidates = (getattr(loader, 'sampler', None),
                  getattr(getattr(loader, 'batch_sampler', None), 'sampler',
                          None))
    return [s for s in candidates if s is not None]


def _set_epoch(loader, epoch: int) -> None:
    """What mmengine's ``_InfiniteDataloaderIterator`` does at the end of
    an epoch."""
    for sampler in _loader_samplers(loader):
        if hasattr(sampler, 'set_epoch'):
            sampler.set_epoch(epoch)
            return


def _release_loop_iterator(loop) -> None:
    """Retire the ``dataloader_iterator`` that mmengine 0.10.7's
    ``IterBasedTrainLoop`` created when it was built, before the hook
    replaces it.

    That iterator already started the loader (with ``num_workers > 0`` it
    prefetched batches), and mmengine's ``InfiniteSampler`` keeps *one*
    index generator (``sampler.indices``) that every ``iter(sampler)``
    delegates to: the prefetch consumed indices of it, and closing the
    retired iterator (at garbage collection) closes that shared generator,
    so every later iterator stops at once. The workers are shut down and
    the sampler gets a fresh index stream from its seed -- the order an
    unwrapped run starts with.
    """
    old = getattr(getattr(loop, 'dataloader_iterator', None), '_iterator',
                  None)
    shutdown = getattr(old, '_shutdown_workers', None)
    if shutdown is not None:
        shutdown()
    for sampler in _loader_samplers(loop.dataloader):
        restart = getattr(sampler, '_indices_of_rank', None)
        if callable(restart) and hasattr(sampler, 'indices'):
            sampler.indices = restart()


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
        loader = self.loop.dataloader
        seeds = getattr(loader, 'batch_sampler', None)
        if num_iters > 0 and isinstance(seeds, PerSampleSeeds) and getattr(
                self.inner, '_iterator', True) is None:
            # the fork's fast path moved the sampler (and dropped the
            # iterator); the slow path went through the wrapper and counted
            seeds.advance(num_iters * loader.batch_size)
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
