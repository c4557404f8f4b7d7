"""Training-step time of R-Mix and RecursiveMix relative to CutMix.

Every method trains the same classifier (same backbone, head, batch and
optimizer) through mmengine's ``train_step`` (data preprocessor + batch
augment + forward + backward + SGD step). The methods run interleaved, one
step each per round in alternating order, so that machine noise hits all of
them alike; a second CutMix model is the noise control (its ratio should be
~1.00). Medians of the per-step times are compared.

    python benchmarks/step_overhead.py [--steps 20] [--batch-size 32]
        [--backbone PreActResNet] [--size 32] [--device cpu|cuda]
        [--json out.json]

``run`` and ``time_train_steps`` are reused by ``run_all.py`` and
``rlmix_overhead.py``.

Goals (issue 3): RecursiveMix <= 1.05x CutMix; R-Mix <= 1.75x (an input-only
gradient skips the weight-gradient kernels of the clean pass).
"""
import argparse
import json
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.logging import MessageHub
from mmengine.optim import OptimWrapper
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

import mixplugins  # noqa: F401  (registers the augments)
from _common import default_device, interleave, machine_info, summarize

METHODS = {
    'cutmix': dict(type='CutMix', alpha=1.0),
    'cutmix (control)': dict(type='CutMix', alpha=1.0),
    'rmix': dict(type='RMix', alpha=1.0, grids=(2, 4)),
    'recursivemix': dict(type='RecursiveMix', alpha=0.5, omega=0.5),
}


def backbone_cfg(name: str) -> dict:
    """The backbone config of ``--backbone``: PreActResNet-18, ResNet-50 or
    WideResNet-28-10; any other registered name with its defaults."""
    backbone = dict(type=name)
    if name == 'PreActResNet':
        backbone['depth'] = 18
    elif name == 'ResNet':
        backbone['depth'] = 50
    elif name == 'WideResNet':
        backbone.update(depth=28, widen_factor=10)
    return backbone


def build(augment: dict,
          args,
          backbone: Optional[dict] = None) -> torch.nn.Module:
    """A ``MixImageClassifier`` with ``augment``, on ``args.device``."""
    model = MODELS.build(
        dict(type='MixImageClassifier',
             backbone=backbone or backbone_cfg(args.backbone),
             neck=dict(type='GlobalAveragePooling'),
             head=dict(type='LinearClsHead',
                       num_classes=args.num_classes,
                       in_channels=args.in_channels,
                       loss=dict(type='CrossEntropyLoss', use_soft=True)),
             data_preprocessor=dict(num_classes=args.num_classes),
             train_cfg=dict(augments=[augment])))
    model.init_weights()
    return model.to(args.device).train()


def make_batch(args, seed: int) -> dict:
    """A random uint8 batch as the data loader gives it."""
    g = torch.Generator().manual_seed(seed)
    inputs = [
        torch.randint(0,
                      256, (3, args.size, args.size),
                      generator=g,
                      dtype=torch.uint8) for _ in range(args.batch_size)
    ]
    labels = torch.randint(args.num_classes, (args.batch_size, ), generator=g)
    return dict(
        inputs=inputs,
        data_samples=[DataSample().set_gt_label(int(y)) for y in labels])


def time_train_steps(methods: Dict[str, dict],
                     args,
                     backbone: Optional[dict] = None
                     ) -> Tuple[Dict[str, List[float]], dict]:
    """Time ``train_step`` of one model per method, interleaved.

    Every round draws one batch (seeded by the round) that all methods
    train on; the order of the methods alternates from round to round.

    Args:
        methods (dict[str, dict]): Name -> batch-augment config.
        args: ``steps``, ``warmup``, ``batch_size``, ``size``,
            ``num_classes``, ``in_channels``, ``device`` (and ``backbone``
            unless ``backbone`` is given).
        backbone (dict, optional): Backbone config. Defaults to None
            (``backbone_cfg(args.backbone)``).

    Returns:
        tuple[dict[str, list[float]], dict]: Seconds per timed step per
        method, and the models by name.
    """
    torch.manual_seed(0)
    # RL-Mix reads the epoch from the message hub; the others ignore it.
    MessageHub.get_current_instance().update_info('epoch', 0)
    models, optims = {}, {}
    for name, aug in methods.items():
        models[name] = build(aug, args, backbone)
        optims[name] = OptimWrapper(
            torch.optim.SGD(models[name].parameters(), lr=0.01, momentum=0.9))
    batches: Dict[int, dict] = {}

    def task(name: str):

        def prepare(i: int):
            if i not in batches:
                batches.clear()
                batches[i] = make_batch(args, i)
            batch = batches[i]
            data = dict(
                inputs=list(batch['inputs']),
                data_samples=[s.clone() for s in batch['data_samples']])
            return lambda: models[name].train_step(data, optims[name])

        return prepare

    times = interleave({name: task(name)
                        for name in methods},
                       args.steps,
                       args.device,
                       warmup=args.warmup)
    return times, models


def run(args,
        methods: Optional[Dict[str, dict]] = None,
        baseline: str = 'cutmix',
        backbone: Optional[dict] = None) -> dict:
    """Median step time of every method and its ratio to ``baseline``.

    Args:
        args: See :func:`time_train_steps`.
        methods (dict[str, dict], optional): Name -> augment config.
            Defaults to None (``METHODS``).
        baseline (str): The method the ratios divide by. Defaults to
            ``'cutmix'``.
        backbone (dict, optional): Backbone config. Defaults to None
            (``backbone_cfg(args.backbone)``).

    Returns:
        dict: ``{name: dict(median_s, min_s, max_s, n, ratio, times)}``.
    """
    times, _ = time_train_steps(methods or METHODS, args, backbone)
    return summarize_steps(times, baseline)


def summarize_steps(times: Dict[str, List[float]], baseline: str) -> dict:
    """Per-method summary with the ratio of medians to ``baseline``."""
    base = summarize(times[baseline])['median_s']
    result = {}
    for name, ts in times.items():
        stats = summarize(ts)
        result[name] = dict(stats, ratio=stats['median_s'] / base, times=ts)
    return result


def print_table(result: dict, args, base_label: str = 'CutMix') -> None:
    """Print one row per method: median seconds per step and the ratio."""
    info = machine_info(args.device)
    print(f'{args.backbone}, batch {args.batch_size}, {args.size}px, '
          f'{args.steps} interleaved steps, device {info["device"]}, torch '
          f'{info["torch"]}, {info["threads"]} threads')
    print(f'{"method":<18}{"median s/step":>14}{"x " + base_label:>10}')
    for name, r in result.items():
        if 'ratio' in r and 'times' in r:
            print(f'{name:<18}{r["median_s"]:>14.4f}{r["ratio"]:>10.3f}')


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--steps', type=int, default=20)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument('--size', type=int, default=32)
    parser.add_argument('--backbone', default='PreActResNet')
    parser.add_argument('--in-channels', type=int, default=512)
    parser.add_argument('--num-classes', type=int, default=100)
    parser.add_argument('--device', default=default_device())
    parser.add_argument('--json', help='write the results here')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    result = run(args)
    print_table(result, args)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(args=vars(args), results=result), f, indent=2)


if __name__ == '__main__':
    main()
