"""ExactResumeHook on onedl-mmengine's ``IterBasedTrainLoop`` (>= 0.10.11):
the loop fast-forwards with ``dataloader_iterator.skip_iter(n)`` and creates
the loader's iterator lazily (a draw from torch's global RNG). The wrapper
must skip, create the iterator, and only then restore the RNG -- on either
stack, so the fork's iterator is reproduced here; the end-to-end resume on
the fork is ``tests/test_utils/test_exact_resume.py`` run in .venv-onedl."""
import pytest

pytest.importorskip('mmengine')

from mixplugins.engine.resume_data import (  # noqa: E402
    _FastForwardIterator, _iter_loop_resume, _SkipIterThenRestore)


class _ForkIterator:
    """The shape of onedl-mmengine's ``_InfiniteDataloaderIterator``."""

    def __init__(self, log):
        self.log, self.pos, self.created = log, 0, False

    def _ensure_iterator(self):
        if not self.created:
            self.log.append('create')
            self.created = True

    def skip_iter(self, n):
        self.log.append(f'skip {n}')
        self.pos += n
        self.created = False

    def __next__(self):
        self._ensure_iterator()
        self.log.append(f'batch {self.pos}')
        self.pos += 1
        return self.pos - 1


class _Loop:
    def __init__(self, iterator, it):
        self.dataloader_iterator, self.iter = iterator, it
        self.dataloader = None


def test_the_fork_skips_then_creates_then_restores():
    log = []
    loop = _Loop(_ForkIterator(log), 3)
    wrapper = _iter_loop_resume(loop, lambda: log.append('restore'))
    assert isinstance(wrapper, _SkipIterThenRestore)
    loop.dataloader_iterator = wrapper
    loop.dataloader_iterator.skip_iter(loop.iter)  # what the fork's run does
    assert next(loop.dataloader_iterator) == 3
    assert log == ['skip 3', 'create', 'restore', 'batch 3']
    assert not isinstance(loop.dataloader_iterator, _SkipIterThenRestore)


def test_fast_forward_on_resume_still_skips_exactly():
    # the fork's fast_forward_on_resume=True: the loop never calls skip_iter
    log = []
    loop = _Loop(_ForkIterator(log), 2)
    loop.dataloader_iterator = _iter_loop_resume(
        loop, lambda: log.append('restore'))
    assert next(loop.dataloader_iterator) == 2
    assert next(loop.dataloader_iterator) == 3
    assert log == ['skip 2', 'create', 'restore', 'batch 2', 'batch 3']


def test_upstream_iterator_keeps_its_own_wrapper():
    loop = _Loop(iter(range(10)), 2)
    assert isinstance(_iter_loop_resume(loop, lambda: None),
                      _FastForwardIterator)


def test_per_sample_seeds_continue_after_a_sampler_level_skip():
    """The fork's fast path skips inside ``InfiniteSampler`` (``skip``), not
    through the per-sample-seed wrapper: after ``advance`` the wrapper pairs
    every index with the seed of the uninterrupted run, also across the
    end of a pass over the data (4 images, batch 2: skipping 3 batches
    crosses it)."""
    import itertools

    from mmengine.dataset import InfiniteSampler
    from torch.utils.data import BatchSampler

    from mixplugins.engine.resume_data import PerSampleSeeds

    def batches(skip=0):
        sampler = InfiniteSampler(list(range(4)), shuffle=True, seed=7)
        if skip:
            if hasattr(sampler, 'skip'):  # onedl-mmengine >= 0.10.11
                sampler.skip(skip)
            else:  # what that method does
                sampler.indices = itertools.islice(sampler._indices_of_rank(),
                                                   skip, None)
        seeds = PerSampleSeeds(BatchSampler(sampler, 2, False), 0, 0)
        if skip:
            seeds.advance(skip)
        return list(itertools.islice(iter(seeds), 6 - skip // 2))

    full = batches()
    assert batches(skip=6) == full[3:]
    # without advance the pass counter restarts and the seeds differ
    assert len({seed for batch in full for _, seed in batch}) == 12
    sampler = InfiniteSampler(list(range(4)), shuffle=True, seed=7)
    sampler.indices = itertools.islice(sampler._indices_of_rank(), 6, None)
    plain = list(itertools.islice(
        iter(PerSampleSeeds(BatchSampler(sampler, 2, False), 0, 0)), 3))
    assert plain != full[3:]
