#!/usr/bin/env python
"""CPU demo: R-Mix and RecursiveMix on scikit-learn's digits, end to end.

1. Writes scikit-learn's bundled digits (no download) to ``data/digits`` in
   mmpretrain's ``CustomDataset`` folder layout (32 px RGB, 1497 / 300).
2. Renders the ``mixplugins.core`` kernels on real digits to
   ``<out-dir>/kernels.png``: originals, input-gradient saliency of a
   quickly trained CNN, R-Mix grid masks, R-Mix results and three recursive
   RecursiveMix steps; the mixed label weights are printed.
3. Trains each demo config (``configs/classification/demo_digits_*.py``)
   through the real mmengine ``Runner`` (work dirs ``<out-dir>/<method>``)
   and prints a table: method | top-1 | ECE | corruption accuracy |
   seconds/iter. ECE (15 bins) is the ``CalibrationError`` metric of the
   validation run; the corruption accuracy is the mean over the 15
   ImageNet-C corruptions x 5 severities of the 300 validation digits
   (:mod:`mixplugins.classification.robustness`; corrupted once, shared by
   the methods). The multi-seed comparison of the methods on a low-data
   split is ``benchmarks/reproduce_digits.py`` (table in
   ``benchmarks/results/reproduce_digits.md``).

R-Mix: `Expeditious Saliency-guided Mix-up through Random Gradient
Thresholding <https://arxiv.org/abs/2212.04875>`_ (Luu et al., 2023).
RecursiveMix: `RecursiveMix: Mixed Learning with History
<https://arxiv.org/abs/2203.06844>`_ (Yang et al., NeurIPS 2022).

Usage (from a clone, after ``bash tools/install.sh``)::

    .venv/bin/python tools/demo.py                      # everything
    .venv/bin/python tools/demo.py --skip-train         # figure only
    .venv/bin/python tools/demo.py --methods baseline rmix --epochs 4
"""
import argparse
import os
import os.path as osp
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))

#: Demo method -> config file under configs/classification.
METHODS: Dict[str, str] = {
    'baseline': 'demo_digits_baseline.py',
    'cutmix': 'demo_digits_cutmix.py',
    'rmix': 'demo_digits_rmix.py',
    'rm': 'demo_digits_rm.py',
}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        description='R-Mix / RecursiveMix demo on scikit-learn digits (CPU)')
    parser.add_argument('--methods',
                        nargs='+',
                        choices=list(METHODS),
                        default=list(METHODS),
                        help='methods to train, in this order (default: all)')
    parser.add_argument(
        '--epochs',
        type=int,
        default=None,
        help='training epochs per method (default: the configs\' value)')
    parser.add_argument('--skip-train',
                        action='store_true',
                        help='only prepare the data and render the figure')
    parser.add_argument(
        '--out-dir',
        default=osp.join(REPO, 'outputs', 'demo'),
        help='figure and work dirs (default: <repo>/outputs/demo)')
    parser.add_argument(
        '--data-root',
        default=osp.join(REPO, 'data', 'digits'),
        help='where the digits folders go (default: <repo>/data/digits)')
    parser.add_argument('--seed',
                        type=int,
                        default=0,
                        help='random seed (default: 0)')
    args = parser.parse_args(argv)
    if args.epochs is not None and args.epochs < 1:
        parser.error(f'--epochs must be >= 1, got {args.epochs}')
    return args


# --------------------------------------------------------------------------
# Figure
# --------------------------------------------------------------------------
def _label_weights(row, k: int = 3) -> List[Tuple]:
    """The ``k`` largest (class, weight) pairs of a soft target row."""
    from mixplugins.engine.visualization import label_weights
    return label_weights(row, k)


def _fmt(weights: List[Tuple]) -> str:
    return '  '.join(f'{c}:{w:.2f}' for c, w in weights)


def _quick_model(images,
                 labels,
                 mean: float,
                 std: float,
                 seed: int,
                 epochs: int = 2):
    """Train DemoCNN + pooling + linear with plain torch for a few epochs."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    from mixplugins.classification.backbones.demo_cnn import DemoCNN

    class Net(nn.Module):

        def __init__(self) -> None:
            super().__init__()
            self.backbone = DemoCNN()
            self.fc = nn.Linear(self.backbone.out_channels, 10)

        def forward(self, x):
            feat = self.backbone(x)[-1]
            return self.fc(feat.mean((2, 3)))

    torch.manual_seed(seed)
    net = Net()
    x = (torch.from_numpy(images).permute(0, 3, 1, 2).float() - mean) / std
    y = torch.from_numpy(labels)
    opt = torch.optim.SGD(net.parameters(),
                          lr=0.05,
                          momentum=0.9,
                          nesterov=True,
                          weight_decay=5e-4)
    g = torch.Generator().manual_seed(seed)
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 32):
            idx = order[i:i + 32]
            loss = F.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


def render_kernels(out_path: str, seed: int = 0, num: int = 8) -> None:
    """Draw the core kernels on real digits and print the label weights.

    Args:
        out_path (str): PNG file to write.
        seed (int): Seed of the quick model and of every draw. Defaults to 0.
        num (int): Images per row (one per class, classes 0..num-1).
            Defaults to 8.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import numpy as np
    import torch
    import torch.nn.functional as F
    from matplotlib.patches import Rectangle

    from mixplugins.core import (grid_masks, input_saliency, mix_by_masks,
                                 paste_history, sample_box, sample_rmix_params)
    from mixplugins.datasets import load_digits_split
    from mixplugins.engine.visualization import tint_outside

    def draw_grid_lines(ax, grid: int, height: int, width: int) -> None:
        for k in range(1, grid):
            ax.axhline(k * height / grid - 0.5,
                       color='white',
                       lw=0.6,
                       alpha=0.7)
            ax.axvline(k * width / grid - 0.5,
                       color='white',
                       lw=0.6,
                       alpha=0.7)

    def draw_box(ax, xyxy, colour: str) -> None:
        x1, y1, x2, y2 = (float(v) for v in xyxy)
        ax.add_patch(
            Rectangle((x1 - 0.5, y1 - 0.5),
                      x2 - x1,
                      y2 - y1,
                      fill=False,
                      edgecolor=colour,
                      lw=1.2))

    t0 = time.perf_counter()
    train_x, train_y, _ = load_digits_split('train')
    val_x, val_y, _ = load_digits_split('val')
    mean, std = float(train_x.mean()), float(train_x.std())
    net = _quick_model(train_x, train_y, mean, std, seed)
    with torch.no_grad():
        val_logits = net(
            (torch.from_numpy(val_x).permute(0, 3, 1, 2).float() - mean) / std)
    acc = float(
        (val_logits.argmax(1) == torch.from_numpy(val_y)).float().mean()) * 100
    print(f'[demo] saliency model (DemoCNN, 2 epochs, plain torch) trained '
          f'in {time.perf_counter() - t0:.1f} s: val top-1 {acc:.1f}%')

    def batch(k: int):
        """Val images of classes ``(b + 3k) % 10`` (column b), in [0, 1].

        Every step shows other digits, so that each column of the figure
        mixes different classes.
        """
        picks = [
            np.flatnonzero(val_y == (b + 3 * k) % 10)[k] for b in range(num)
        ]
        x = torch.from_numpy(val_x[picks]).permute(0, 3, 1, 2).float() / 255
        y = torch.from_numpy(val_y[picks])
        return x, y

    def normalise(x):
        return (x * 255 - mean) / std

    g = torch.Generator().manual_seed(seed)
    x, y = batch(0)
    onehot = F.one_hot(y, 10).float()
    saliency = input_saliency(net, normalise(x), y)
    # R-Mix parameters from the real sampler (CIFAR settings); the grid is
    # shown at 4 x 4 and the partner is the next column, so that every image
    # visibly mixes with another digit.
    params = sample_rmix_params(num, alpha=1.0, grids=(2, 4), generator=g)
    grid = 4
    index = torch.roll(torch.arange(num), -1)
    masks = grid_masks(saliency, grid, params.quantiles)
    rmixed, rmix_targets = mix_by_masks(x, onehot, masks, index, params.lam)

    # RecursiveMix: the previous step's mixed batch is pasted into a box of
    # the current batch (alpha = 0.5), three steps in a row.
    rm_steps = []
    hist_x, hist_t = x, onehot
    for step in range(1, 4):
        cur_x, cur_y = batch(step)
        box = sample_box(32, 32, alpha=0.5, generator=g)
        hist_x, hist_t, lam = paste_history(cur_x,
                                            F.one_hot(cur_y, 10).float(),
                                            hist_x, hist_t, box)
        rm_steps.append((hist_x, hist_t, box, lam))

    # --- stdout --------------------------------------------------------
    print(f'[demo] R-Mix: grid {grid}x{grid}, lam = {float(params.lam):.3f}'
          ', partner = next column')
    for b in range(num):
        q = float(params.quantiles[b])
        print(f'  image {b} (digit {int(y[b])}, q={q:.2f}) + digit '
              f'{int(y[index[b]])} -> {_fmt(_label_weights(rmix_targets[b]))}')
    for step, (_, targets, box, lam) in enumerate(rm_steps, 1):
        print(f'[demo] RecursiveMix step {step}: box (x1, y1, x2, y2) = '
              f'{box}, lam = {lam:.3f}')
        for b in range(num):
            print(f'  image {b} -> '
                  f'{_fmt(_label_weights(targets[b], k=10))}')

    # --- figure --------------------------------------------------------
    def show(ax, img, cmap=None):
        if img.dim() == 3:
            img = img.permute(1, 2, 0)
        ax.imshow(img.clamp(0, 1).numpy(),
                  cmap=cmap,
                  vmin=0,
                  vmax=1,
                  interpolation='nearest')
        ax.set_xticks([])
        ax.set_yticks([])

    rows = [
        'input', 'saliency', f'R-Mix mask\n({grid}x{grid}, blue < q)',
        f'R-Mix\n(lam={float(params.lam):.2f})'
    ] + [f'RecursiveMix\nstep {s}' for s in (1, 2, 3)]
    fig, axes = plt.subplots(len(rows),
                             num,
                             figsize=(1.45 * num + 1.2, 1.75 * len(rows)))
    for r, name in enumerate(rows):
        axes[r, 0].set_ylabel(name, fontsize=11, rotation=90, labelpad=8)
    for b in range(num):
        show(axes[0, b], x[b])
        axes[0, b].set_title(f'digit {int(y[b])}', fontsize=10)
        s = saliency[b]
        show(axes[1, b], (s - s.min()) / (s.max() - s.min() + 1e-12),
             cmap='inferno')
        rgb = (x[b].permute(1, 2, 0) * 255).round().byte().numpy()
        tinted = torch.from_numpy(tint_outside(rgb, masks[b]))
        show(axes[2, b], tinted.permute(2, 0, 1) / 255)
        axes[2, b].set_title(f'q={float(params.quantiles[b]):.2f}',
                             fontsize=10)
        draw_grid_lines(axes[2, b], grid, 32, 32)
        show(axes[3, b], rmixed[b])
        axes[3, b].set_title(_fmt(_label_weights(rmix_targets[b], k=2)),
                             fontsize=9)
        for s_i, (imgs, targets, box, _) in enumerate(rm_steps):
            ax = axes[4 + s_i, b]
            show(ax, imgs[b])
            draw_box(ax, box, 'red')
            ax.set_title(_fmt(_label_weights(targets[b], k=3)), fontsize=8)
    fig.suptitle(
        'mixplugins.core on scikit-learn digits (32 px): R-Mix partner = '
        'next column; RecursiveMix pastes the previous step (red box)',
        fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    os.makedirs(osp.dirname(osp.abspath(out_path)), exist_ok=True)
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    print(f'[demo] wrote {out_path}')


# --------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------
def train_method(name: str,
                 work_dir: str,
                 data_root: str,
                 epochs: Optional[int],
                 seed: int,
                 corrupt: Optional[Callable] = None) -> Dict[str, float]:
    """Train one demo config with mmengine's Runner; return its numbers.

    ``corrupt`` is the corruption function of the robustness evaluation (a
    :class:`~mixplugins.classification.robustness.CachedCorruptions` shared
    by the methods, so the validation digits are corrupted once).
    """
    from mmengine.config import Config
    from mmengine.hooks import Hook
    from mmengine.runner import Runner

    from mixplugins.classification.robustness import (CachedCorruptions,
                                                      PixelClassifier,
                                                      RobustnessPlan,
                                                      dataloader_batches,
                                                      evaluate_robustness)

    class Recorder(Hook):
        """Record the last validation metrics and the train iteration times.

        The time of an iteration runs from the end of the previous one (or
        the start of the epoch), so it includes data loading, as mmengine's
        ``IterTimerHook``, and excludes validation.
        """

        priority = 'VERY_LOW'

        def __init__(self) -> None:
            self.metrics: Dict[str, float] = {}
            self.iter_times: List[float] = []
            self._t = 0.0

        def before_train_epoch(self, runner) -> None:
            self._t = time.perf_counter()

        def after_train_iter(self,
                             runner,
                             batch_idx,
                             data_batch=None,
                             outputs=None) -> None:
            now = time.perf_counter()
            self.iter_times.append(now - self._t)
            self._t = now

        def after_val_epoch(self, runner, metrics=None) -> None:
            self.metrics = dict(metrics or {})

    cfg = Config.fromfile(
        osp.join(REPO, 'configs', 'classification', METHODS[name]))
    cfg.work_dir = work_dir
    cfg.randomness = dict(seed=seed, deterministic=False)
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[key].dataset.data_root = data_root
    cfg.val_evaluator = [
        dict(type='Accuracy', topk=(1, )),
        dict(type='CalibrationError', n_bins=15)
    ]
    if epochs is not None:
        cfg.train_cfg.max_epochs = epochs
        for scheduler in cfg.param_scheduler:
            scheduler.end = epochs
    runner = Runner.from_cfg(cfg)
    recorder = Recorder()
    runner.register_hook(recorder)
    start = time.perf_counter()
    runner.train()
    seconds = time.perf_counter() - start
    times = recorder.iter_times[1:] or recorder.iter_times
    model = getattr(runner.model, 'module', runner.model)
    robustness = evaluate_robustness(
        PixelClassifier(model),
        dataloader_batches(runner.val_dataloader),
        RobustnessPlan(),  # 15 corruptions x 5 severities, seed 0
        corrupt=corrupt or CachedCorruptions()).results
    metrics = recorder.metrics
    return dict(top1=float(metrics.get('accuracy/top1', float('nan'))),
                ece=float(metrics.get('calibration/ece', float('nan'))),
                corruption=robustness['mean_corruption_accuracy'],
                sec_per_iter=sum(times) / max(len(times), 1),
                seconds=seconds,
                iters=len(recorder.iter_times))


def format_table(results: Dict[str, Dict[str, float]]) -> str:
    """The final markdown table: method | top-1 | ECE | corruption
    accuracy | seconds/iter | ..."""
    lines = [
        '| method | top-1 (%) | ECE (%) | corruption acc. (%) | '
        'seconds/iter | iters | train seconds |',
        '|---|---|---|---|---|---|---|'
    ]
    for name, r in results.items():
        lines.append(f'| {name} | {r["top1"]:.2f} | {r["ece"]:.2f} | '
                     f'{r["corruption"]:.2f} | {r["sec_per_iter"]:.3f} '
                     f'| {r["iters"]} | {r["seconds"]:.1f} |')
    return '\n'.join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the demo; return the exit status."""
    args = parse_args(argv)
    from mixplugins.datasets import prepare_digits

    t0 = time.perf_counter()
    info = prepare_digits(args.data_root)
    print(f'[demo] digits in {info["data_root"]}: {info["num_train"]} train '
          f'/ {info["num_val"]} val images, {len(info["classes"])} classes '
          f'({"written" if info["created"] else "already there"}, '
          f'{time.perf_counter() - t0:.1f} s)')
    render_kernels(osp.join(args.out_dir, 'kernels.png'), seed=args.seed)
    if args.skip_train:
        return 0
    from mixplugins.classification.robustness import CachedCorruptions

    results: Dict[str, Dict[str, float]] = {}
    corrupt = CachedCorruptions()  # the val digits are corrupted once
    for name in args.methods:
        print(f'[demo] training {name} ({METHODS[name]})', flush=True)
        results[name] = train_method(name, osp.join(args.out_dir, name),
                                     args.data_root, args.epochs, args.seed,
                                     corrupt)
    table = format_table(results)
    with open(osp.join(args.out_dir, 'results.md'), 'w') as f:
        f.write(table + '\n')
    print('\n' + table, flush=True)
    print('\n(on the 300 val digits after the last epoch, one seed: top-1, '
          'expected calibration error (15 bins, lower is better) and the mean '
          'top-1 over the 15 ImageNet-C corruptions x 5 severities. A few '
          'epochs on the full, easy training set check the machinery; they '
          'are not a comparison of the methods. For that: 5 seeds on a 20% '
          'low-data split, with occlusion and FGSM accuracy, in '
          'benchmarks/results/reproduce_digits.md (benchmarks/'
          'reproduce_digits.py; docs/evaluation.md))')
    return 0


if __name__ == '__main__':
    sys.exit(main())
