"""Cost of ``ExactResumeHook``'s per-sample seeding in data loading.

Loads the same data with the same pipeline through the same ``DataLoader``
twice per round: as configured, and with the train loader wrapped as
``ExactResumeHook(seed_per_sample=True)`` wraps it
(:class:`~mixplugins.engine.exact_resume.SeededDataset` +
:class:`~mixplugins.engine.exact_resume.PerSampleSeeds`). The two run
interleaved, the order alternating, and the medians of the per-epoch times
are compared. Also times the seeding itself (three RNGs reseeded; in the main
process also saved and restored) per sample.

    python benchmarks/seed_per_sample.py [--images 256] [--size 64]
        [--workers 0 2] [--rounds 5] [--json out.json]

Data: ``--images`` random PNGs written to a temporary folder, read by
mmpretrain's ``CustomDataset``; pipeline ``LoadImageFromFile``,
``RandomResizedCrop(32)``, ``RandomFlip``, ``PackInputs`` (the CIFAR/ImageNet
recipes' random transforms).
"""
import argparse
import json
import os
import os.path as osp
import random
import statistics
import tempfile
import time

import numpy as np
import torch
from mmengine.dataset import DefaultSampler, pseudo_collate
from mmengine.registry import init_default_scope
from PIL import Image
from torch.utils.data import DataLoader

import mixplugins  # noqa: F401
from mixplugins.engine.resume_data import (_install_sample_seeds, _seed_all,
                                            sample_seed)


def write_images(root: str, n: int, size: int) -> None:
    rng = np.random.default_rng(0)
    for c in ('a', 'b'):
        os.makedirs(osp.join(root, c), exist_ok=True)
    for i in range(n):
        img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(img).save(osp.join(root, 'ab'[i % 2], f'{i}.png'))


def make_loader(root: str, workers: int, seeded: bool) -> DataLoader:
    from mmpretrain.datasets import CustomDataset
    dataset = CustomDataset(
        data_root=root,
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='RandomResizedCrop', scale=32),
            dict(type='RandomFlip', prob=0.5),
            dict(type='PackInputs')
        ])
    loader = DataLoader(dataset, batch_size=32,
                        sampler=DefaultSampler(dataset, shuffle=True, seed=0),
                        num_workers=workers, collate_fn=pseudo_collate,
                        persistent_workers=workers > 0)
    if seeded:
        assert _install_sample_seeds(loader, 0, 0)
    return loader


def epoch_time(loader: DataLoader) -> float:
    t = time.perf_counter()
    for _ in loader:
        pass
    return time.perf_counter() - t


def seeding_cost(n: int = 2000) -> dict:
    """Microseconds per sample: the reseed (worker) and reseed + save and
    restore of the RNG states (main process)."""
    t = time.perf_counter()
    for i in range(n):
        _seed_all(sample_seed(0, 0, 0, i, 0))
    worker = (time.perf_counter() - t) / n * 1e6
    t = time.perf_counter()
    for i in range(n):
        s = (random.getstate(), np.random.get_state(), torch.get_rng_state())
        _seed_all(sample_seed(0, 0, 0, i, 0))
        random.setstate(s[0])
        np.random.set_state(s[1])
        torch.set_rng_state(s[2])
    main = (time.perf_counter() - t) / n * 1e6
    return dict(worker_us=worker, main_process_us=main)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--images', type=int, default=256)
    parser.add_argument('--size', type=int, default=64)
    parser.add_argument('--workers', type=int, nargs='+', default=[0, 2])
    parser.add_argument('--rounds', type=int, default=5)
    parser.add_argument('--json')
    args = parser.parse_args(argv)
    init_default_scope('mmpretrain')
    torch.set_num_threads(1)
    out = dict(images=args.images, size=args.size, rounds=args.rounds,
               seeding=seeding_cost())
    with tempfile.TemporaryDirectory() as root:
        write_images(root, args.images, args.size)
        for workers in args.workers:
            loaders = dict(plain=make_loader(root, workers, False),
                           seeded=make_loader(root, workers, True))
            for loader in loaders.values():  # warm-up (worker start)
                epoch_time(loader)
            times = dict(plain=[], seeded=[])
            for r in range(args.rounds):
                order = ('plain', 'seeded') if r % 2 == 0 else ('seeded',
                                                               'plain')
                for name in order:
                    loaders[name].sampler.set_epoch(r)
                    times[name].append(epoch_time(loaders[name]))
            med = {k: statistics.median(v) for k, v in times.items()}
            out[f'workers={workers}'] = dict(
                plain_s=med['plain'], seeded_s=med['seeded'],
                ratio=med['seeded'] / med['plain'],
                per_sample_us=(med['seeded'] - med['plain']) / args.images *
                1e6)
    print(json.dumps(out, indent=1))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == '__main__':
    main()
