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

``time_updates`` and ``run`` are reused by ``run_all.py``.

The official README reports about 2x the wall-clock of R-Mix for RL-Mix
(8 h vs 4 h on one P100, CIFAR-100).
"""
import argparse
import json
import statistics
from typing import Dict, Optional, Sequence

import numpy as np
import torch

import mixplugins  # noqa: F401  (registers the augments)
from _common import default_device, sync, timed
from step_overhead import print_table, summarize_steps, time_train_steps

RMIX = dict(type='RMix', alpha=1.0, grids=(2, 4))
RLMIX = dict(type='RLMix',
             alpha=1.0,
             mix_grids=(2, 4),
             n_steps=1000,
             batch_size=250,
             n_epochs=10,
             agent_lr=1e-3,
             total_timesteps=150000)
METHODS = {'rmix': RMIX, 'rmix (control)': RMIX, 'rlmix': RLMIX}


def backbone_cfg(name: str) -> dict:
    """PreActResNet-18, WideResNet-28-10 or a tiny ResNet-18 (8 channels)."""
    backbone = dict(type=name)
    if name == 'PreActResNet':
        backbone['depth'] = 18
    elif name == 'WideResNet':
        backbone.update(depth=28, widen_factor=10)
    elif name == 'ResNet':
        backbone.update(depth=18, stem_channels=8, base_channels=8)
    return backbone


def time_updates(agent, args) -> list:
    """Time PPO updates on a rollout buffer filled with synthetic
    transitions (the agent's policy and shapes, random values).

    Args:
        agent: The ``RLMix`` augment (``model.rl_agent``).
        args: ``updates`` (how many updates to time) and ``device``.

    Returns:
        list[float]: Seconds per update.
    """
    buffer = agent.ppo.rollout_buffer
    rng = np.random.default_rng(0)
    b, g, c = agent.batch_images, agent.agent_grid, agent.num_classes
    obs_device = dict(saliency=torch.rand(1, b, g, g, device=agent.ppo.device),
                      logits=torch.randn(1, b, c, device=agent.ppo.device))
    times = []
    for _ in range(args.updates):
        buffer.reset()
        while not buffer.full:
            obs = dict(saliency=rng.random((1, b, g, g), dtype=np.float32),
                       logits=rng.standard_normal((1, b, c), dtype=np.float32))
            buffer.add(
                obs, rng.integers(0, agent.num_levels, (1, b)),
                np.array([rng.random()], dtype=np.float32),
                np.array([0.0], dtype=np.float32),
                torch.zeros(1, 1, device=agent.ppo.device),
                torch.full((1, ), -b * np.log(10.0), device=agent.ppo.device))
        sync(args.device)

        def update():
            with torch.no_grad():
                last = agent.ppo.policy.predict_values(obs_device)
            buffer.compute_returns_and_advantage(last, np.array([False]))
            agent._update()

        times.append(timed(update, args.device))
    buffer.reset()
    return times


def amortise(result: dict, update_times: list, n_steps: int,
             base: str) -> None:
    """Add the PPO update, amortised over ``n_steps``, to RL-Mix's step.

    Adds ``ppo_update`` and ``rlmix_amortised`` (``median RL-Mix step +
    median update / n_steps``, and its ratio to ``base``) to ``result``.
    """
    update = statistics.median(update_times)
    amortised = result['rlmix']['median_s'] + update / n_steps
    result['ppo_update'] = dict(median_s=update,
                                n_steps=n_steps,
                                times=update_times)
    result['rlmix_amortised'] = dict(median_s=amortised,
                                     ratio=amortised /
                                     result[base]['median_s'])


def run(args,
        methods: Optional[Dict[str, dict]] = None,
        baseline: str = 'rmix',
        backbone: Optional[dict] = None) -> dict:
    """Step times (ratios to ``baseline``) and the amortised RL-Mix step.

    Args:
        args: The CLI arguments (see ``parse_args``).
        methods (dict[str, dict], optional): Name -> augment config; must
            hold an ``'rlmix'`` entry. Defaults to None (``METHODS``).
        baseline (str): The method the ratios divide by. Defaults to
            ``'rmix'``.
        backbone (dict, optional): Backbone config. Defaults to None
            (``backbone_cfg(args.backbone)``).

    Returns:
        dict: Per-method summaries plus ``ppo_update`` and
        ``rlmix_amortised``.
    """
    methods = methods or METHODS
    times, models = time_train_steps(methods, args, backbone
                                     or backbone_cfg(args.backbone))
    result = summarize_steps(times, baseline)
    update_times = time_updates(models['rlmix'].rl_agent, args)
    amortise(result, update_times, methods['rlmix']['n_steps'], baseline)
    return result


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--steps', type=int, default=20)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--batch-size', type=int, default=100)
    parser.add_argument('--size', type=int, default=32)
    parser.add_argument('--backbone', default='PreActResNet')
    parser.add_argument('--in-channels', type=int, default=512)
    parser.add_argument('--num-classes', type=int, default=100)
    parser.add_argument('--updates', type=int, default=3)
    parser.add_argument('--device', default=default_device())
    parser.add_argument('--json', help='write the results here')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    result = run(args)
    print(f'{args.num_classes} classes')
    print_table(result, args, base_label='R-Mix')
    n_steps = result['ppo_update']['n_steps']
    print(f'PPO update ({n_steps} transitions, 10 epochs x 4 minibatches): '
          f'median {result["ppo_update"]["median_s"]:.3f} s over '
          f'{len(result["ppo_update"]["times"])}')
    print(f'RL-Mix / R-Mix, update amortised over {n_steps} steps: '
          f'{result["rlmix_amortised"]["ratio"]:.3f}')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(args=vars(args), results=result), f, indent=2)


if __name__ == '__main__':
    main()
