#!/usr/bin/env python
"""Multi-seed reproduction on real, bundled data: scikit-learn's digits.

Trains baseline, Mixup, CutMix, R-Mix, RL-Mix and RecursiveMix under one
protocol (:data:`PROTOCOL`, fixed in this file before any result was
looked at) with 5 seeds each, through mmengine's ``Runner`` and the
package's registered augments, and reports mean +- std over the seeds of

- top-1 on the 300 test digits,
- ECE (15 bins, :class:`mixplugins.classification.CalibrationError`'s
  numbers),
- mean accuracy over the 15 ImageNet-C corruptions x 5 severities,
- accuracy with one 8 x 8 px occluding square,
- accuracy under FGSM at eps = 8 (pixel units, 8/255),

all measured by :func:`mixplugins.classification.robustness.
evaluate_robustness` (what ``tools/analysis/robustness.py`` runs), as a
markdown table, a JSON file and a plot. Whatever the ordering, it is
reported as measured; no method's hyper-parameters were tuned here: every
method uses its paper's CIFAR values (:data:`METHODS`).

Usage (from the repository root)::

    # the full run: 6 methods x 5 seeds, about 40 min on 2 busy CPU cores;
    # writes benchmarks/results/reproduce_digits.{md,json,png}
    .venv/bin/python benchmarks/reproduce_digits.py
    # smoke test (CI): 1 seed, 2 epochs, 2 corruptions x 2 severities;
    # writes outputs/reproduce_digits_quick/
    .venv/bin/python benchmarks/reproduce_digits.py --quick

Finished runs are kept under ``<work-dir>/runs/`` and reused by a rerun
with the same protocol (``--fresh`` retrains everything).
"""
import argparse
import copy
import json
import os
import os.path as osp
import platform
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

#: The protocol, the same for every method; fixed before looking at results.
PROTOCOL: Dict[str, Any] = dict(
    # scikit-learn's digits, 32 px bilinear RGB (mixplugins.datasets): the
    # 1497 / 300 split of prepare_digits; training uses a stratified 20 %
    # of the 1497 training images (drawn once with seed 0, the same images
    # for every run), the low-data regime where regularisers should matter
    train_fraction=0.2,
    split_seed=0,
    # the demo's model and optimiser (configs/classification/_base_/
    # demo_digits.py): DemoCNN (16, 32, 64) + global pooling + linear head,
    # SGD lr 0.05, momentum 0.9, Nesterov, weight decay 5e-4, cosine to 0,
    # RandomCrop(32, padding=2); batch 32 with drop_last (RL-Mix's policy
    # needs a fixed batch), so 9 iterations per epoch
    epochs=40,
    batch_size=32,
    lr=0.05,
    seeds=(0, 1, 2, 3, 4),
    # evaluation of the last epoch's model (no checkpoint selection)
    n_bins=15,
    corruptions='all 15 ImageNet-C corruptions',
    severities=(1, 2, 3, 4, 5),
    occlusion=(4, 8, 16),
    occlusion_reported=8,
    fgsm=(2, 4, 8),
    fgsm_reported=8,
    # PGD is not in the table; it costs 20 forward-backward passes per run,
    # which this schedule's budget on 2 shared cores does not afford
    pgd=(),
    pgd_steps=10,
    eval_seed=0,
)

#: Each method's ``model.train_cfg`` (None: no batch augment) with its
#: paper's CIFAR hyper-parameters; nothing is tuned on this data. RL-Mix's
#: rollout is scaled to the schedule (see :func:`method_train_cfg`).
METHODS: Dict[str, Optional[dict]] = {
    # plain cross-entropy
    'baseline': None,
    # Zhang et al. (ICLR'18), CIFAR: alpha = 1, every batch
    'mixup': dict(augments=[dict(type='Mixup', alpha=1.0)]),
    # Yun et al. (ICCV'19), CIFAR: alpha = 1, applied with probability 0.5
    # (this repo's CutMix+ config)
    'cutmix': dict(augments=[dict(type='CutMix', alpha=1.0)], probs=[0.5]),
    # Luu et al. (2023), CIFAR: alpha = 1, grids 2 / 4, randperm partner
    'rmix': dict(augments=[
        dict(type='RMix', alpha=1.0, grids=(2, 4), partner='randperm')
    ]),
    # R-Mix with the PPO agent (official n_epochs 10, agent lr 1e-3)
    'rlmix': dict(augments=[
        dict(type='RLMix',
             alpha=1.0,
             mix_grids=(2, 4),
             agent_grid=8,
             n_epochs=10,
             agent_lr=1e-3)
    ]),
    # Yang et al. (NeurIPS'22), CIFAR-10: alpha = 0.5, omega = 0.1
    'recursivemix': dict(augments=[
        dict(type='RecursiveMix',
             alpha=0.5,
             omega=0.1,
             interpolation='nearest')
    ]),
}

#: What ``--quick`` changes (a smoke test of the machinery, not a result).
QUICK: Dict[str, Any] = dict(epochs=2,
                             seeds=(0, ),
                             corruptions=('gaussian_noise', 'fog'),
                             severities=(1, 5),
                             occlusion=(8, ),
                             fgsm=(0, 8),
                             pgd=(8, ),
                             pgd_steps=2)

#: Table columns: (key in a run's numbers, header).
COLUMNS = (('top1', 'top-1 (%)'), ('ece', 'ECE (%)'),
           ('corruption', 'corruption acc. (%)'),
           ('occlusion', 'occlusion 8 px (%)'), ('fgsm', 'FGSM eps=8 (%)'))


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Multi-seed mixing benchmark on scikit-learn digits')
    parser.add_argument('--quick',
                        action='store_true',
                        help='smoke test: 1 seed, 2 epochs, 2 corruptions x '
                        '2 severities (numbers are not a result)')
    parser.add_argument('--methods',
                        nargs='+',
                        choices=list(METHODS),
                        default=list(METHODS),
                        help='methods to run (default: all six)')
    parser.add_argument('--out-dir',
                        default=None,
                        help='table, JSON and plot (default: '
                        'benchmarks/results, or outputs/'
                        'reproduce_digits_quick with --quick)')
    parser.add_argument('--work-dir',
                        default=None,
                        help='data, runs and logs (default: '
                        'outputs/reproduce_digits[_quick])')
    parser.add_argument('--threads',
                        type=int,
                        default=1,
                        help='torch CPU threads (default: 1)')
    parser.add_argument('--fresh',
                        action='store_true',
                        help='retrain runs that are already finished')
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f'--threads must be >= 1, got {args.threads}')
    name = 'reproduce_digits_quick' if args.quick else 'reproduce_digits'
    if args.out_dir is None:
        args.out_dir = (osp.join(REPO, 'outputs', name)
                        if args.quick else osp.join(REPO, 'benchmarks',
                                                    'results'))
    if args.work_dir is None:
        args.work_dir = osp.join(REPO, 'outputs', name)
    return args


def protocol(quick: bool) -> Dict[str, Any]:
    """The protocol of this run (:data:`PROTOCOL`, shrunk by ``--quick``)."""
    from mixplugins.classification.robustness import CORRUPTIONS
    p = dict(PROTOCOL, corruptions=CORRUPTIONS)
    if quick:
        p.update(QUICK)
        p['occlusion_reported'] = 8
        p['fgsm_reported'] = 8
    return p


# ------------------------------------------------------------------ data
def prepare_data(work_dir: str, proto: Dict[str, Any]) -> Dict[str, Any]:
    """Write the digits and the annotation file of the 20 % split."""
    from mixplugins.datasets import DIGITS_CLASSES, prepare_digits
    root = osp.join(work_dir, 'data', 'digits')
    info = prepare_digits(root)
    rng = np.random.default_rng(proto['split_seed'])
    lines: List[str] = []
    for label, cls in enumerate(DIGITS_CLASSES):
        names = sorted(os.listdir(osp.join(root, 'train', cls)))
        k = int(round(proto['train_fraction'] * len(names)))
        for name in sorted(rng.choice(names, size=k, replace=False)):
            lines.append(f'{cls}/{name} {label}')
    ann = osp.join(root, f'train_{int(proto["train_fraction"] * 100)}.txt')
    with open(ann, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    return dict(data_root=root,
                ann_file=ann,
                num_train=len(lines),
                num_train_full=info['num_train'],
                num_test=info['num_val'])


# ---------------------------------------------------------------- config
def method_train_cfg(name: str, total_iters: int) -> Optional[dict]:
    """``model.train_cfg`` of a method for a schedule of ``total_iters``.

    RL-Mix's official rollout is 1000 iterations of a 150k-iteration run
    (150 PPO updates); a 1000-iteration rollout would never update the
    agent here, so the rollout is a tenth of the run (10 updates) and the
    minibatch a quarter of the rollout (the official 1000 / 250).
    """
    cfg = copy.deepcopy(METHODS[name])
    if name == 'rlmix':
        n_steps = max(total_iters // 10, 4)
        cfg['augments'][0].update(n_steps=n_steps,
                                  batch_size=max(n_steps // 4, 2),
                                  total_timesteps=total_iters)
    return cfg


def build_config(name: str, seed: int, data: Dict[str, Any],
                 proto: Dict[str, Any], work_dir: str):
    """The mmengine config of one run (the demo's base config + the
    protocol)."""
    from mmengine.config import Config

    from mixplugins.datasets import DIGITS_CLASSES

    cfg = Config.fromfile(
        osp.join(REPO, 'configs', 'classification', '_base_',
                 'demo_digits.py'))
    epochs, batch = proto['epochs'], proto['batch_size']
    iters_per_epoch = data['num_train'] // batch
    train_cfg = method_train_cfg(name, epochs * iters_per_epoch)
    if train_cfg is not None:
        cfg.model.train_cfg = train_cfg
        cfg.model.head.loss = dict(type='CrossEntropyLoss',
                                   loss_weight=1.0,
                                   use_soft=True)
        cfg.model.head.cal_acc = False
    cfg.train_dataloader.batch_size = batch
    cfg.train_dataloader.dataset.data_root = data['data_root']
    cfg.train_dataloader.dataset.ann_file = data['ann_file']
    cfg.train_dataloader.dataset.metainfo = dict(classes=DIGITS_CLASSES)
    cfg.train_dataloader.drop_last = True
    for key in ('val_dataloader', 'test_dataloader'):
        cfg[key].dataset.data_root = data['data_root']
    cfg.val_evaluator = [
        dict(type='Accuracy', topk=(1, )),
        dict(type='CalibrationError', n_bins=proto['n_bins'])
    ]
    cfg.optim_wrapper.optimizer.lr = proto['lr']
    cfg.train_cfg = dict(by_epoch=True,
                         max_epochs=epochs,
                         val_interval=epochs)
    cfg.param_scheduler = [
        dict(type='CosineAnnealingLR',
             by_epoch=True,
             begin=0,
             end=epochs,
             convert_to_iter_based=True)
    ]
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook',
                                        interval=-1,
                                        save_last=False)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=50)
    cfg.custom_hooks = []
    cfg.randomness = dict(seed=seed, deterministic=False)
    cfg.work_dir = work_dir
    cfg.experiment_name = f'{name}_seed{seed}'
    cfg.log_level = 'WARNING'
    return cfg


# ------------------------------------------------------------------- run
def _val_recorder_class():
    from mmengine.hooks import Hook

    class ValRecorder(Hook):
        """Keep the Runner's last validation metrics (a cross-check: its
        top-1 and ECE must equal the robustness evaluation's clean ones)."""
        priority = 'VERY_LOW'

        def __init__(self) -> None:
            self.metrics: Dict[str, float] = {}

        def after_val_epoch(self, runner, metrics=None) -> None:
            self.metrics = {k: float(v) for k, v in (metrics or {}).items()}

    return ValRecorder


def _ValRecorder():
    return _val_recorder_class()()


def run_one(name: str, seed: int, data: Dict[str, Any],
            proto: Dict[str, Any], work_dir: str, batches, corrupt,
            seconds_per_eval: List[float]) -> Dict[str, Any]:
    """Train one method with one seed, then evaluate it."""
    from mmengine.runner import Runner

    from mixplugins.classification.robustness import (PixelClassifier,
                                                      RobustnessPlan,
                                                      evaluate_robustness)

    cfg = build_config(name, seed, data, proto, work_dir)
    runner = Runner.from_cfg(cfg)
    recorder = _ValRecorder()
    runner.register_hook(recorder)
    start = time.perf_counter()
    runner.train()
    train_seconds = time.perf_counter() - start
    model = runner.model
    model = getattr(model, 'module', model)
    plan = RobustnessPlan(corruptions=tuple(proto['corruptions']),
                          severities=tuple(proto['severities']),
                          occlusion=tuple(proto['occlusion']),
                          fgsm=tuple(proto['fgsm']),
                          pgd=tuple(proto['pgd']),
                          pgd_steps=proto['pgd_steps'],
                          seed=proto['eval_seed'],
                          n_bins=proto['n_bins'])
    start = time.perf_counter()
    report = evaluate_robustness(PixelClassifier(model),
                                 batches,
                                 plan,
                                 corrupt=corrupt)
    seconds_per_eval.append(time.perf_counter() - start)
    r = report.results
    numbers = dict(
        top1=r['clean']['accuracy'],
        ece=r['clean']['ece'],
        corruption=r['mean_corruption_accuracy'],
        occlusion=r['occlusion'][str(proto['occlusion_reported'])],
        fgsm=r['fgsm'][f'{proto["fgsm_reported"]:g}'],
    )
    return dict(method=name,
                seed=seed,
                numbers=numbers,
                train_seconds=train_seconds,
                eval_seconds=seconds_per_eval[-1],
                iterations=runner.iter,
                runner_val=recorder.metrics,
                details=r)


# ------------------------------------------------------------- summary
def summarize_runs(runs: List[Dict[str, Any]],
                   methods: Sequence[str]) -> Dict[str, Dict[str, Any]]:
    """Mean and sample std (ddof 1) over the seeds of each method."""
    out: Dict[str, Dict[str, Any]] = {}
    for name in methods:
        mine = [r for r in runs if r['method'] == name]
        if not mine:
            continue
        entry: Dict[str, Any] = dict(seeds=[r['seed'] for r in mine])
        for key, _ in COLUMNS:
            values = np.array([r['numbers'][key] for r in mine], float)
            entry[key] = dict(
                mean=float(values.mean()),
                std=float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                values=values.tolist())
        entry['train_seconds'] = float(
            np.mean([r['train_seconds'] for r in mine]))
        out[name] = entry
    return out


def format_table(summary: Dict[str, Dict[str, Any]], proto: Dict[str, Any],
                 data: Dict[str, Any]) -> str:
    """The markdown table (mean +- std over seeds)."""
    seeds = len(proto['seeds'])
    lines = [
        '| method | ' + ' | '.join(h for _, h in COLUMNS) +
        ' | train s / run |', '|---|' + '---|' * (len(COLUMNS) + 1)
    ]
    for name, entry in summary.items():
        cells = [
            f'{entry[k]["mean"]:.2f} ± {entry[k]["std"]:.2f}'
            for k, _ in COLUMNS
        ]
        lines.append(f'| {name} | ' + ' | '.join(cells) +
                     f' | {entry["train_seconds"]:.0f} |')
    corr = (f'{len(proto["corruptions"])} corruptions x '
            f'{len(proto["severities"])} severities')
    notes = [
        '',
        f'Mean ± sample std over {seeds} seed(s) '
        f'({", ".join(map(str, proto["seeds"]))}); scikit-learn digits '
        f'(32 px), trained on {data["num_train"]} images (a stratified '
        f'{proto["train_fraction"]:.0%} of the {data["num_train_full"]} '
        f'training images), tested on the {data["num_test"]} test images; '
        f'DemoCNN, {proto["epochs"]} epochs of batch {proto["batch_size"]}, '
        'SGD + cosine, the last epoch evaluated. ECE: 15 bins. Corruption '
        f'accuracy: mean over {corr} (ImageNet-C, imagecorruptions-imaug). '
        f'Occlusion: one {proto["occlusion_reported"]} x '
        f'{proto["occlusion_reported"]} px square at a random position. '
        f'FGSM: eps = {proto["fgsm_reported"]} in pixel units (8/255). '
        'Protocol and hyper-parameters: `benchmarks/reproduce_digits.py` '
        '(`PROTOCOL`, `METHODS`); per-seed numbers and the other budgets in '
        '`reproduce_digits.json`.',
    ]
    return '\n'.join(lines + notes)


def plot_summary(summary: Dict[str, Dict[str, Any]], path: str,
                 title: str) -> None:
    """One panel per metric: each seed as a dot, mean +- std as a square
    with error bars (no bars: the axes do not start at 0)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    names = list(summary)
    fig, axes = plt.subplots(1,
                             len(COLUMNS),
                             figsize=(3.3 * len(COLUMNS), 3.6),
                             squeeze=False)
    colours = plt.rcParams['axes.prop_cycle'].by_key()['color']
    for ax, (key, header) in zip(axes[0], COLUMNS):
        for i, name in enumerate(names):
            entry = summary[name][key]
            colour = colours[i % len(colours)]
            ax.errorbar(i,
                        entry['mean'],
                        yerr=entry['std'],
                        fmt='s',
                        ms=6,
                        color=colour,
                        capsize=4)
            ax.plot([i + 0.18] * len(entry['values']),
                    entry['values'],
                    'o',
                    ms=3,
                    alpha=0.6,
                    color=colour)
        ax.set_xlim(-0.6, len(names) - 0.4)
        ax.grid(axis='y', alpha=0.3)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=45, ha='right', fontsize=8)
        ax.set_title(header, fontsize=9)
        values = [v for n in names for v in summary[n][key]['values']]
        low, high = min(values), max(values)
        pad = max(1.0, 0.15 * (high - low))
        ax.set_ylim(max(0.0, low - pad), min(100.0, high + pad))
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)
    import mixplugins  # noqa: F401
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner

    from mixplugins.classification.robustness import (CachedCorruptions,
                                                      dataloader_batches)

    init_default_scope('mmpretrain')
    proto = protocol(args.quick)
    t0 = time.perf_counter()
    data = prepare_data(args.work_dir, proto)
    print(f'[reproduce] digits: {data["num_train"]} training images '
          f'({proto["train_fraction"]:.0%} of {data["num_train_full"]}), '
          f'{data["num_test"]} test images; {len(args.methods)} methods x '
          f'{len(proto["seeds"])} seeds x {proto["epochs"]} epochs',
          flush=True)
    test_cfg = build_config('baseline', 0, data, proto,
                            args.work_dir).test_dataloader
    batches = list(dataloader_batches(Runner.build_dataloader(test_cfg)))
    corrupt = CachedCorruptions()
    key = json.dumps(
        dict(proto, corruptions=list(proto['corruptions'])),
        sort_keys=True,
        default=list)
    runs_dir = osp.join(args.work_dir, 'runs')
    os.makedirs(runs_dir, exist_ok=True)
    runs: List[Dict[str, Any]] = []
    eval_seconds: List[float] = []
    for seed in proto['seeds']:
        for name in args.methods:
            path = osp.join(runs_dir, f'{name}_seed{seed}.json')
            if osp.isfile(path) and not args.fresh:
                with open(path) as f:
                    run = json.load(f)
                if run.get('protocol_key') == key:
                    runs.append(run)
                    print(f'[reproduce] {name} seed {seed}: kept '
                          f'({path})',
                          flush=True)
                    continue
            run = run_one(name, seed, data, proto,
                          osp.join(args.work_dir, 'work', f'{name}_s{seed}'),
                          batches, corrupt, eval_seconds)
            run['protocol_key'] = key
            with open(path + '.tmp', 'w') as f:
                json.dump(run, f)
            os.replace(path + '.tmp', path)
            runs.append(run)
            n = run['numbers']
            print(f'[reproduce] {name} seed {seed}: top-1 {n["top1"]:.2f} '
                  f'ECE {n["ece"]:.2f} corruption {n["corruption"]:.2f} '
                  f'occlusion {n["occlusion"]:.2f} FGSM {n["fgsm"]:.2f} '
                  f'(train {run["train_seconds"]:.0f} s, eval '
                  f'{run["eval_seconds"]:.0f} s; '
                  f'{time.perf_counter() - t0:.0f} s so far)',
                  flush=True)
    summary = summarize_runs(runs, args.methods)
    table = format_table(summary, proto, data)
    stem = 'reproduce_digits_quick' if args.quick else 'reproduce_digits'
    os.makedirs(args.out_dir, exist_ok=True)
    minutes = sum(r['train_seconds'] + r['eval_seconds'] for r in runs) / 60
    header = (f'# Multi-seed reproduction on scikit-learn digits'
              f'{" (--quick smoke test, not a result)" if args.quick else ""}'
              '\n\nCommand: `.venv/bin/python benchmarks/reproduce_digits.py'
              f'{" --quick" if args.quick else ""}` ({len(runs)} runs: '
              f'{minutes:.0f} min of training and evaluation, '
              f'{args.threads} torch '
              f'thread(s), {platform.machine()})\n\n')
    with open(osp.join(args.out_dir, f'{stem}.md'), 'w') as f:
        f.write(header + table + '\n')
    with open(osp.join(args.out_dir, f'{stem}.json'), 'w') as f:
        json.dump(dict(protocol=dict(
            proto, corruptions=list(proto['corruptions'])),
                       methods={
                           n: METHODS[n]
                           for n in args.methods
                       },
                       data=data,
                       summary=summary,
                       runs=[{k: v
                              for k, v in r.items() if k != 'protocol_key'}
                             for r in runs],
                       machine=dict(python=platform.python_version(),
                                    torch=torch.__version__,
                                    threads=args.threads,
                                    processor=platform.processor()
                                    or platform.machine()),
                       # this invocation (finished runs are reused) and the
                       # training + evaluation time of all the runs
                       wall_seconds=time.perf_counter() - t0,
                       runs_seconds=sum(r['train_seconds'] +
                                        r['eval_seconds'] for r in runs)),
                  f,
                  indent=1,
                  default=list)
    plot_summary(
        summary, osp.join(args.out_dir, f'{stem}.png'),
        f'digits, {data["num_train"]} training images, '
        f'{len(proto["seeds"])} seed(s): mean ± std (squares), each seed '
        '(dots)')
    print('\n' + table, flush=True)
    print(f'\n[reproduce] wrote {osp.join(args.out_dir, stem)}.md/.json/.png '
          f'in {time.perf_counter() - t0:.0f} s', flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
