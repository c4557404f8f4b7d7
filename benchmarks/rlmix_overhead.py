"""Training-step time of RL-Mix relative to R-Mix.

Both methods train the same classifier (same backbone, head, batch and
optimizer) through mmengine's ``train_step`` (data preprocessor + batch
augment + forward + backward + SGD step). They run interleaved, one step
each per round, in alternating order, so that machine noise hits them
alike; a second R-Mix model is the noise control (its ratio should be
~1.00). Medians of the per-step times are compared.

RL-Mix's step adds a policy forward (with a device-to-host copy of the
observation and the actions) and the reward; every ``n_steps`` (official:
1000) steps it also runs a PPO update, which the timed steps do not reach.
The update is timed separately on the same agent, with its rollout buffer
filled to ``n_steps`` synthetic transitions of the right shapes, and
amortised over ``n_steps``:

    ratio = (median RL-Mix step + median update / n_steps) / median R-Mix

    python benchmarks/rlmix_overhead.py [--steps 20] [--batch-size 100]
        [--backbone PreActResNet] [--num-classes 100] [--updates 3]
        [--device cpu|cuda] [--json out.json]

The official README reports about 2x the wall-clock of R-Mix for RL-Mix
(8 h vs 4 h on one P100, CIFAR-100).
"""
import argparse
import json
import statistics
import time

import numpy as np
import torch
from mmengine.logging import MessageHub
from mmengine.optim import OptimWrapper
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

import mixplugins  # noqa: F401  (registers the augments)

RMIX = dict(type='RMix', alpha=1.0, grids=(2, 4))
RLMIX = dict(
    type='RLMix',
    alpha=1.0,
    mix_grids=(2, 4),
    n_steps=1000,
    batch_size=250,
    n_epochs=10,
    agent_lr=1e-3,
    total_timesteps=150000)
METHODS = {'rmix': RMIX, 'rmix (control)': RMIX, 'rlmix': RLMIX}


def build(augment: dict, args) -> torch.nn.Module:
    backbone = dict(type=args.backbone)
    if args.backbone == 'PreActResNet':
        backbone['depth'] = 18
    elif args.backbone == 'WideResNet':
        backbone.update(depth=28, widen_factor=10)
    elif args.backbone == 'ResNet':
        backbone.update(depth=18, stem_channels=8, base_channels=8)
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
    return model.to(args.device).train()


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


def sync(device: str) -> None:
    if device.startswith('cuda'):
        torch.cuda.synchronize()


def time_updates(agent, args) -> list:
    """Time PPO updates on a rollout buffer filled with synthetic
    transitions (the agent's policy and shapes, random values)."""
    buffer = agent.ppo.rollout_buffer
    rng = np.random.default_rng(0)
    b, g, c = agent.batch_images, agent.agent_grid, agent.num_classes
    obs_device = dict(
        saliency=torch.rand(1, b, g, g, device=agent.ppo.device),
        logits=torch.randn(1, b, c, device=agent.ppo.device))
    times = []
    for _ in range(args.updates):
        buffer.reset()
        while not buffer.full:
            obs = dict(
                saliency=rng.random((1, b, g, g), dtype=np.float32),
                logits=rng.standard_normal((1, b, c), dtype=np.float32))
            buffer.add(obs, rng.integers(0, agent.num_levels, (1, b)),
                       np.array([rng.random()], dtype=np.float32),
                       np.array([0.0], dtype=np.float32),
                       torch.zeros(1, 1, device=agent.ppo.device),
                       torch.full((1, ), -b * np.log(10.0),
                                  device=agent.ppo.device))
        sync(args.device)
        start = time.perf_counter()
        with torch.no_grad():
            last = agent.ppo.policy.predict_values(obs_device)
        buffer.compute_returns_and_advantage(last, np.array([False]))
        agent._update()
        sync(args.device)
        times.append(time.perf_counter() - start)
    buffer.reset()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--steps', type=int, default=20)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--batch-size', type=int, default=100)
    parser.add_argument('--size', type=int, default=32)
    parser.add_argument('--backbone', default='PreActResNet')
    parser.add_argument('--in-channels', type=int, default=512)
    parser.add_argument('--num-classes', type=int, default=100)
    parser.add_argument('--updates', type=int, default=3)
    parser.add_argument(
        '--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--json', help='write the results here')
    args = parser.parse_args()
    torch.manual_seed(0)
    MessageHub.get_current_instance().update_info('epoch', 0)
    models, optims = {}, {}
    for name, aug in METHODS.items():
        models[name] = build(aug, args)
        optims[name] = OptimWrapper(
            torch.optim.SGD(models[name].parameters(), lr=0.01, momentum=0.9))
    times = {name: [] for name in METHODS}
    names = list(METHODS)
    for step in range(args.warmup + args.steps):
        batch = make_batch(args, step)
        order = names if step % 2 == 0 else names[::-1]
        for name in order:
            data = dict(
                inputs=list(batch['inputs']),
                data_samples=[s.clone() for s in batch['data_samples']])
            sync(args.device)
            start = time.perf_counter()
            models[name].train_step(data, optims[name])
            sync(args.device)
            elapsed = time.perf_counter() - start
            if step >= args.warmup:
                times[name].append(elapsed)
    agent = models['rlmix'].rl_agent
    update_times = time_updates(agent, args)
    base = statistics.median(times['rmix'])
    update = statistics.median(update_times)
    n_steps = RLMIX['n_steps']
    print(f'{args.backbone}, batch {args.batch_size}, {args.size}px, '
          f'{args.num_classes} classes, {args.steps} interleaved steps, '
          f'device {args.device}, torch {torch.__version__}, '
          f'{torch.get_num_threads()} threads')
    print(f'{"method":<18}{"median s/step":>14}{"x R-Mix":>10}')
    result = {}
    for name, ts in times.items():
        med = statistics.median(ts)
        result[name] = dict(median_s=med, ratio=med / base, times=ts)
        print(f'{name:<18}{med:>14.4f}{med / base:>10.3f}')
    amortised = statistics.median(times['rlmix']) + update / n_steps
    result['ppo_update'] = dict(median_s=update, times=update_times)
    result['rlmix_amortised'] = dict(
        median_s=amortised, ratio=amortised / base)
    print(f'PPO update ({n_steps} transitions, 10 epochs x 4 minibatches): '
          f'median {update:.3f} s over {len(update_times)}')
    print(f'RL-Mix / R-Mix, update amortised over {n_steps} steps: '
          f'{amortised / base:.3f}')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(args=vars(args), results=result), f, indent=2)


if __name__ == '__main__':
    main()
