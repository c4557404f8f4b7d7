"""Timing helpers shared by the benchmark scripts.

The scripts compare methods by ratios of medians measured in one run,
interleaved (one call of every method per round, the order alternating from
round to round) so that machine noise hits all methods alike. On CUDA every
timed call is bracketed by ``torch.cuda.synchronize`` so that the clock
measures the kernels, not their launch.
"""
import contextlib
import gc
import os
import statistics
import sys
import time
from typing import (Any, Callable, Dict, Iterator, List, Optional, Sequence,
                    Tuple)

# Quieten kineto's start/stop and device-probe lines (profile_memory).
os.environ.setdefault('KINETO_LOG_LEVEL', '5')

import torch  # noqa: E402

__all__ = [
    'default_device', 'sync', 'timed', 'interleave', 'summarize',
    'peak_memory', 'machine_info', 'ratio_to', 'gc_paused'
]

#: A task prepares round ``i`` (outside the clock) and returns what to time.
Task = Callable[[int], Callable[[], Any]]


def default_device() -> str:
    """``'cuda'`` when a CUDA device is available, else ``'cpu'``."""
    return 'cuda' if torch.cuda.is_available() else 'cpu'


def sync(device: Any) -> None:
    """Wait for the pending kernels of ``device`` (a no-op off CUDA).

    Args:
        device (str | torch.device): The device the timed work runs on.
    """
    device = torch.device(device)
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: Any, collect: bool = True) -> float:
    """Wall-clock seconds of one call of ``fn``, synchronised on CUDA.

    Args:
        fn (Callable[[], Any]): The work to time.
        device (str | torch.device): The device it runs on.
        collect (bool): Run the garbage collector first, so that no
            collection of earlier garbage lands inside the timing. Defaults
            to True.

    Returns:
        float: Elapsed seconds.
    """
    if collect:
        gc.collect()
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def interleave(tasks: Dict[str, Task],
               rounds: int,
               device: Any,
               warmup: int = 0,
               alternate: bool = True,
               collect: bool = True) -> Dict[str, List[float]]:
    """Time several tasks interleaved: one call of each per round.

    Round ``i`` calls ``tasks[name](i)`` for every task (untimed set-up, e.g.
    building the batch) and times the callable it returns. With
    ``alternate`` the order of the tasks is reversed every other round, so
    that no task always runs right after the same neighbour.

    Args:
        tasks (dict[str, Task]): Name -> ``prepare(round) -> thunk``.
        rounds (int): Timed rounds.
        device (str | torch.device): Device for the synchronisation.
        warmup (int): Untimed rounds first. Defaults to 0.
        alternate (bool): Reverse the order every other round. Defaults to
            True.
        collect (bool): Garbage-collect before each timed call (for long
            calls such as training steps). False disables the collector
            for the whole loop instead: a full collection walks every
            Python object and evicts the caches, which slows the next
            sub-millisecond kernel call several-fold. Defaults to True.

    Returns:
        dict[str, list[float]]: Seconds per timed call, per task.
    """
    names = list(tasks)
    times: Dict[str, List[float]] = {name: [] for name in names}
    with contextlib.nullcontext() if collect else gc_paused():
        for i in range(warmup + rounds):
            order = names if not alternate or i % 2 == 0 else names[::-1]
            for name in order:
                thunk = tasks[name](i)
                elapsed = timed(thunk, device, collect)
                if i >= warmup:
                    times[name].append(elapsed)
    return times


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Collect once, then keep the garbage collector off inside the block.

    For timing short calls: no collection lands inside them, and none
    evicts the caches right before them (as ``gc.collect`` per call does).
    """
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def summarize(times: Sequence[float]) -> Dict[str, float]:
    """Median, min, max and count of a list of timings (seconds)."""
    return dict(median_s=statistics.median(times),
                min_s=min(times),
                max_s=max(times),
                n=len(times))


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null (kineto prints its start and
    stop lines there from C++, past ``sys.stderr``)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, 'w') as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _cpu_peak_bytes(fn: Callable[[], Any]) -> int:
    """Peak of the CPU bytes allocated (and not yet freed) during ``fn``.

    Replays the allocation / free events that the torch profiler records
    with ``profile_memory=True`` in time order; blocks freed before ``fn``
    returns count only while alive. Tensors that existed before the call do
    not count; ``fn``'s result does, until it is dropped.
    """
    from torch.profiler import ProfilerActivity, profile
    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU],
                                  profile_memory=True) as prof:
        out = fn()
        del out
    events = [
        e for e in prof.profiler.kineto_results.events()
        if e.name() == '[memory]' and e.device_type().name == 'CPU'
    ]
    events.sort(key=lambda e: e.start_ns())
    live = peak = 0
    for e in events:
        live += e.nbytes()
        peak = max(peak, live)
    return peak


def peak_memory(fn: Callable[[], Any], device: Any) -> Tuple[int, str]:
    """Peak extra memory that one call of ``fn`` allocates.

    On CUDA: ``torch.cuda.max_memory_allocated`` after a reset of the peak
    statistics, minus the memory allocated before the call. On the CPU
    (``tracemalloc`` does not see torch's allocator): the running sum of
    the allocation and free events of the torch profiler
    (``profile_memory=True``), in time order. Both count the returned
    tensors.

    Args:
        fn (Callable[[], Any]): The work to measure.
        device (str | torch.device): The device it runs on.

    Returns:
        tuple[int, str]: Peak extra bytes and a word on how they were
        measured.
    """
    device = torch.device(device)
    gc.collect()
    if device.type == 'cuda':
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        out = fn()
        sync(device)
        peak = torch.cuda.max_memory_allocated(device) - before
        del out
        return peak, 'torch.cuda.max_memory_allocated - memory_allocated'
    return _cpu_peak_bytes(fn), 'torch.profiler CPU allocation events'


def machine_info(device: Any) -> Dict[str, Any]:
    """The device, torch build, threads and load average of this run."""
    device = torch.device(device)
    info: Dict[str, Any] = dict(device=str(device),
                                torch=torch.__version__,
                                threads=torch.get_num_threads(),
                                cpus=os.cpu_count())
    if device.type == 'cuda':
        info['gpu'] = torch.cuda.get_device_name(device)
    try:
        info['loadavg'] = list(os.getloadavg())
    except OSError:  # not on every platform
        info['loadavg'] = None
    return info


def ratio_to(times: Dict[str, List[float]],
             base: str,
             names: Optional[Sequence[str]] = None) -> Dict[str, float]:
    """Median of each task's times over the median of ``base``'s."""
    ref = statistics.median(times[base])
    return {
        name: statistics.median(times[name]) / ref
        for name in (names or times)
    }
