"""Training-step time of R-Mix and RecursiveMix relative to CutMix.

Every method trains the same classifier (same backbone, head, batch and
optimizer) through mmengine's ``train_step`` (data preprocessor + batch
augment + forward + backward + SGD step). The methods run interleaved, one
step each per round, so that machine noise hits all of them alike; a second
CutMix model is the noise control (its ratio should be ~1.00). Medians of the
per-step times are compared.

    python benchmarks/step_overhead.py [--steps 20] [--batch-size 32]
        [--backbone PreActResNet] [--size 32] [--json out.json]

Goals (issue 3): RecursiveMix <= 1.05x CutMix; R-Mix <= 1.75x (an input-only
gradient skips the weight-gradient kernels of the clean pass).
"""
import argparse
import json
import statistics
import time

import torch

import mixplugins  # noqa: F401  (registers the augments)
from mmengine.optim import OptimWrapper
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

METHODS = {
    'cutmix': dict(type='CutMix', alpha=1.0),
    'cutmix (control)': dict(type='CutMix', alpha=1.0),
    'rmix': dict(type='RMix', alpha=1.0, grids=(2, 4)),
    'recursivemix': dict(type='RecursiveMix', alpha=0.5, omega=0.5),
}


def build(augment: dict, args) -> torch.nn.Module:
    backbone = dict(type=args.backbone)
    if args.backbone == 'PreActResNet':
        backbone['depth'] = 18
    elif args.backbone == 'ResNet':
        backbone['depth'] = 50
    model = MODELS.build(
        dict(
            type='MixImageClassifier',
            backbone=backbone,
            neck=dict(type='GlobalAveragePooling'),
            head=dict(
                type='LinearClsHead',
                num_classes=args.num_classes,
                in_channels=args.in_channels,
                loss=dict(type='CrossEntropyLoss', use_soft=True)),
            data_preprocessor=dict(num_classes=args.num_classes),
            train_cfg=dict(augments=[augment])))
    model.init_weights()
    return model.train()


def make_batch(args, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    inputs = [
        torch.randint(0, 256, (3, args.size, args.size), generator=g,
                      dtype=torch.uint8) for _ in range(args.batch_size)
    ]
    labels = torch.randint(args.num_classes, (args.batch_size, ), generator=g)
    return dict(
        inputs=inputs,
        data_samples=[DataSample().set_gt_label(int(y)) for y in labels])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--steps', type=int, default=20)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument('--size', type=int, default=32)
    parser.add_argument('--backbone', default='PreActResNet')
    parser.add_argument('--in-channels', type=int, default=512)
    parser.add_argument('--num-classes', type=int, default=100)
    parser.add_argument('--json', help='write the results here')
    args = parser.parse_args()
    torch.manual_seed(0)
    models, optims = {}, {}
    for name, aug in METHODS.items():
        models[name] = build(aug, args)
        optims[name] = OptimWrapper(
            torch.optim.SGD(models[name].parameters(), lr=0.01, momentum=0.9))
    times = {name: [] for name in METHODS}
    for step in range(args.warmup + args.steps):
        batch = make_batch(args, step)
        for name, model in models.items():
            data = dict(inputs=list(batch['inputs']),
                        data_samples=[s.clone()
                                      for s in batch['data_samples']])
            start = time.perf_counter()
            model.train_step(data, optims[name])
            elapsed = time.perf_counter() - start
            if step >= args.warmup:
                times[name].append(elapsed)
    base = statistics.median(times['cutmix'])
    print(f'{args.backbone}, batch {args.batch_size}, {args.size}px, '
          f'{args.steps} interleaved steps, torch '
          f'{torch.__version__}, {torch.get_num_threads()} threads')
    print(f'{"method":<18}{"median s/step":>14}{"x CutMix":>10}')
    result = {}
    for name, ts in times.items():
        med = statistics.median(ts)
        result[name] = dict(median_s=med, ratio=med / base, times=ts)
        print(f'{name:<18}{med:>14.4f}{med / base:>10.3f}')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(args=vars(args), results=result), f, indent=2)


if __name__ == '__main__':
    main()
