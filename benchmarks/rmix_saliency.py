"""R-Mix's clean pass: float16 safety and the ``saliency_scale`` option.

R-Mix: `Expeditious Saliency-guided Mix-up through Random Gradient
Thresholding <https://arxiv.org/abs/2212.04875>`_ (Luu et al., 2023);
official code https://github.com/minhlong94/Random-Mixup.

Three sections, all in one run (issue 12):

* ``fp16`` -- :func:`mixplugins.core.rmix.input_saliency` under
  ``torch.autocast(dtype=torch.float16)`` against float32, on a
  PreActResNet-18 whose head is tiny (weights N(0, ``--head-std``), bias 0:
  logits near uniform, as early in training), batch ``--fp16-batch`` (256)
  of 32 px normal noise, 100 classes. Rows: the loss scales of
  ``FP16_LOSS_SCALES`` (what the package does), no scale (the code before
  issue 12), the official static apex scale 1024, and bfloat16. Columns:
  pixels exactly 0, all-zero maps, non-finite values, relative L2 error,
  and the fraction of equal cells of the grid masks (grids 2 and 4, the ten
  official quantile levels). Goal: >= 98% of the cells, <= 1% zeros.
* ``speed`` -- training-step time (mmengine ``train_step``: preprocessor,
  batch augment, forward, backward, SGD) of R-Mix at ``saliency_scale``
  1.0, 0.5 and 0.25 over CutMix, with a second CutMix model as the noise
  control, interleaved (one step of every method per round, alternating
  order; ``step_overhead.time_train_steps``), ratios of medians. Settings:
  PreActResNet-18, 32 px, batch 32 (as ``step_overhead.py``), and
  ResNet-50, 224 px, batch ``--r50-batch``. Goal: <= 1.25x at 0.5 (32 px).
* ``agreement`` -- on real images: scikit-learn's bundled digits (32 px
  RGB, ``mixplugins.datasets.load_digits_split``), a PreActResNet-18 and the
  demo CNN trained on the 1497 training digits (plain SGD, a few epochs,
  top-1 on the 300 test digits reported). On the 300 test digits, the
  saliency of the resized clean pass (0.5, 0.25) against the full one
  (train-mode BN, as R-Mix): the fraction of equal cells (grids 2 and 4,
  every official quantile level), and, for R-Mix steps drawn with
  ``sample_rmix_params`` (grid, per-image quantiles, partners, lam; the same
  draw at both resolutions), the fraction of images whose label weights
  (the area fractions of :func:`~mixplugins.core.rmix.mix_by_masks`) are
  identical and the mean absolute difference of the own label's weight.
  References: a random saliency (the chance level), the full-resolution
  pass with eval-mode BN (``saliency_bn='eval'``, an option of the
  package: how much a small change of the pass moves the masks), and, as a
  diagnostic, the full-resolution pass on the 0.5 copy resized back (the
  information lost, without the change of scale). Goal: >= 90% of the
  cells at 0.5.

    python benchmarks/rmix_saliency.py [--sections fp16 speed agreement]
        [--speed-settings preact32 r50_224] [--steps 30] [--r50-batch 8]
        [--r50-steps 8] [--epochs 6] [--threads N]
        [--quick] [--json benchmarks/results/rmix_saliency.json]

The machine's load average is printed before and after every section (the
ratios are measured interleaved so that load hits both sides alike).
"""
import argparse
import copy
import json
import os
import os.path as osp
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import mixplugins  # noqa: E402,F401  (registers the augments)
from _common import default_device, machine_info  # noqa: E402
from mixplugins.core import saliency as saliency_core  # noqa: E402
from mixplugins.core.rmix import (DEFAULT_QUANTILE_LEVELS,  # noqa: E402
                                  cell_masks, input_saliency,
                                  sample_rmix_params)

SCALES = (1.0, 0.5, 0.25)
GRIDS = (2, 4)
#: Pixel statistics of the 1497 training digits (bilinear 32 px, 0..255),
#: as ``configs/classification/_base_/demo_digits.py``.
DIGITS_MEAN, DIGITS_STD = 77.95, 82.54


def loadavg() -> Optional[List[float]]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def cell_agreement(ref: Tensor, other: Tensor,
                   grids: Sequence[int] = GRIDS) -> Dict[int, float]:
    """Per grid: the fraction of equal cells of the masks of two saliencies
    (any sizes), over the ten official quantile levels."""
    n = ref.shape[0]
    out = {}
    for grid in grids:
        same = [(cell_masks(ref, grid, torch.full((n, ), q)) == cell_masks(
            other, grid, torch.full((n, ), q))).float().mean()
                for q in DEFAULT_QUANTILE_LEVELS]
        out[grid] = float(torch.stack(same).mean())
    return out


def train_mode_saliency(model: nn.Module,
                        x: Tensor,
                        y: Tensor,
                        scale: float = 1.0,
                        bn: str = 'train') -> Tensor:
    """The clean pass of R-Mix's default (train-mode BN, batch statistics;
    ``bn='eval'``: running statistics, ``saliency_bn='eval'``); the model's
    running statistics are restored afterwards."""
    state = copy.deepcopy(model.state_dict())
    model.train(bn == 'train')
    sal = input_saliency(lambda t: model(t, mode='tensor'), x, y,
                         scale_factor=scale)
    model.load_state_dict(state)
    return sal


def down_up(x: Tensor, scale: float) -> Tensor:
    """``x`` resized by ``scale`` as the clean pass does, then back to its
    size (bilinear): the information the resized pass loses, at the scale
    the model was trained on."""
    small = F.interpolate(x, scale_factor=scale, mode='bilinear',
                          align_corners=False, antialias=True)
    return F.interpolate(small, size=x.shape[-2:], mode='bilinear',
                         align_corners=False)


# ------------------------------------------------------------------ fp16
def run_fp16(args) -> Dict[str, Any]:
    from mmpretrain.registry import MODELS
    torch.manual_seed(0)
    model = MODELS.build(
        dict(type='ImageClassifier',
             backbone=dict(type='PreActResNet', depth=18),
             neck=dict(type='GlobalAveragePooling'),
             head=dict(type='LinearClsHead', num_classes=100,
                       in_channels=512)))
    with torch.no_grad():
        model.head.fc.weight.normal_(0, args.head_std)
        model.head.fc.bias.zero_()
    g = torch.Generator().manual_seed(1)
    b = args.fp16_batch
    x = torch.randn(b, 3, 32, 32, generator=g)
    y = torch.randint(0, 100, (b, ), generator=g)
    ref = train_mode_saliency(model, x, y)
    rows = []
    cases = [
        ('fp16, FP16_LOSS_SCALES (now)', torch.float16,
         saliency_core.FP16_LOSS_SCALES),
        ('fp16, no loss scale (before)', torch.float16, (1.0, )),
        ('fp16, static 1024 (official apex)', torch.float16, (1024.0, )),
        ('bf16 (unscaled)', torch.bfloat16, None),
    ]
    saved = saliency_core.FP16_LOSS_SCALES
    for name, dtype, scales in cases:
        if scales is not None:
            saliency_core.FP16_LOSS_SCALES = scales
        try:
            start = time.perf_counter()
            with torch.autocast('cpu', dtype=dtype):
                sal = train_mode_saliency(model, x, y)
            seconds = time.perf_counter() - start
        finally:
            saliency_core.FP16_LOSS_SCALES = saved
        agree = cell_agreement(ref, sal)
        rows.append(
            dict(case=name,
                 zeros=float((sal == 0).float().mean()),
                 all_zero_maps=int((sal.flatten(1).amax(1) == 0).sum()),
                 non_finite=int((~torch.isfinite(sal)).sum()),
                 rel_l2=float((sal - ref).norm() / ref.norm()),
                 cells_grid2=agree[2],
                 cells_grid4=agree[4],
                 seconds=seconds))
    return dict(setting=dict(model='PreActResNet-18', batch=b, size=32,
                             classes=100, head_std=args.head_std,
                             fp32_max_saliency=float(ref.max()),
                             fp16_loss_scales=list(saved)),
                rows=rows)


def print_fp16(res: Dict[str, Any]) -> None:
    s = res['setting']
    print(f"\n## fp16: {s['model']}, batch {s['batch']}, {s['size']} px, "
          f"head N(0, {s['head_std']:g}); fp32 max saliency "
          f"{s['fp32_max_saliency']:.2e}")
    print('| case | pixels = 0 | all-zero maps | non-finite | rel. L2 error '
          '| cells equal, grid 2 / grid 4 |')
    print('|---|---|---|---|---|---|')
    for r in res['rows']:
        print(f"| {r['case']} | {100 * r['zeros']:.2f}% | "
              f"{r['all_zero_maps']} | {r['non_finite']} | "
              f"{r['rel_l2']:.3f} | {100 * r['cells_grid2']:.1f}% / "
              f"{100 * r['cells_grid4']:.1f}% |")


# ----------------------------------------------------------------- speed
def speed_methods() -> Dict[str, dict]:
    rmix = dict(type='RMix', alpha=1.0, grids=(2, 4))
    methods = {
        'cutmix': dict(type='CutMix', alpha=1.0),
        'cutmix (control)': dict(type='CutMix', alpha=1.0),
    }
    for scale in SCALES:
        methods[f'rmix s={scale:g}'] = dict(rmix, saliency_scale=scale)
    return methods


def run_speed(args) -> Dict[str, Any]:
    from step_overhead import backbone_cfg, summarize_steps, time_train_steps
    settings = [
        dict(key='preact32',
             name='PreActResNet-18, 32 px',
             backbone='PreActResNet',
             size=32,
             batch_size=args.batch_size,
             steps=args.steps,
             in_channels=512,
             num_classes=100),
        dict(key='r50_224',
             name='ResNet-50, 224 px',
             backbone='ResNet',
             size=224,
             batch_size=args.r50_batch,
             steps=args.r50_steps,
             in_channels=2048,
             num_classes=1000),
    ]
    out = []
    for s in settings:
        if s['key'] not in args.speed_settings:
            continue
        ns = argparse.Namespace(steps=s['steps'], warmup=args.warmup,
                                batch_size=s['batch_size'], size=s['size'],
                                in_channels=s['in_channels'],
                                num_classes=s['num_classes'],
                                device=args.device, backbone=s['backbone'])
        before = loadavg()
        times, _ = time_train_steps(speed_methods(), ns,
                                    backbone_cfg(s['backbone']))
        result = summarize_steps(times, 'cutmix')
        out.append(dict(setting=dict(s, warmup=args.warmup,
                                     loadavg_before=before,
                                     loadavg_after=loadavg()),
                        results=result))
    return dict(settings=out)


def print_speed(res: Dict[str, Any]) -> None:
    for entry in res['settings']:
        s = entry['setting']
        print(f"\n## speed: {s['name']}, batch {s['batch_size']}, "
              f"{s['steps']} interleaved steps (+{s['warmup']} warm-up); "
              f"load average {s['loadavg_before']} -> "
              f"{s['loadavg_after']}")
        print('| method | median s/step | x CutMix |')
        print('|---|---|---|')
        for name, r in entry['results'].items():
            print(f"| {name} | {r['median_s']:.4f} | {r['ratio']:.3f} |")


# ------------------------------------------------------------- agreement
def _digits(split: str):
    from mixplugins.datasets.digits import load_digits_split
    images, labels, _ = load_digits_split(split, size=32)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    return (x - DIGITS_MEAN) / DIGITS_STD, torch.from_numpy(labels)


def _build(arch: str) -> nn.Module:
    from mmpretrain.registry import MODELS
    backbone = dict(type='PreActResNet', depth=18) if arch == 'preact18' \
        else dict(type='DemoCNN', widths=(16, 32, 64))
    channels = 512 if arch == 'preact18' else 64
    return MODELS.build(
        dict(type='ImageClassifier',
             backbone=backbone,
             neck=dict(type='GlobalAveragePooling'),
             head=dict(type='LinearClsHead', num_classes=10,
                       in_channels=channels)))


def _accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    model.eval()
    with torch.no_grad():
        pred = torch.cat([
            model(x[i:i + 100], mode='tensor').argmax(1)
            for i in range(0, len(x), 100)
        ])
    return float((pred == y).float().mean())


def train_digits(arch: str, epochs: int, x: Tensor, y: Tensor,
                 xv: Tensor, yv: Tensor, seed: int = 0) -> Dict[str, Any]:
    """Plain SGD on the training digits (random 2 px shifts, as the demo
    configs), batch 32; returns the model and its top-1 per epoch."""
    torch.manual_seed(seed)
    model = _build(arch)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9,
                          nesterov=True, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=0.05, total_steps=epochs * ((len(x) + 31) // 32))
    g = torch.Generator().manual_seed(seed)
    top1 = []
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 32):
            idx = order[i:i + 32]
            if len(idx) < 2:
                continue
            batch = F.pad(x[idx], (2, 2, 2, 2), value=-DIGITS_MEAN /
                          DIGITS_STD)
            dy, dx = torch.randint(0, 5, (2, ), generator=g).tolist()
            batch = batch[..., dy:dy + 32, dx:dx + 32]
            loss = F.cross_entropy(model(batch, mode='tensor'), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        top1.append(_accuracy(model, xv, yv))
    return dict(model=model, top1=top1,
                seconds=time.perf_counter() - start)


def label_weight_agreement(ref: Tensor, other: Tensor, draws: int,
                           seed: int = 0) -> Dict[str, float]:
    """R-Mix steps drawn with the official defaults, the same draw applied
    to both saliencies: the fraction of images whose area fractions
    (a_eq, a_own, a_other) are identical, and the mean |difference| of the
    own label's weight ``a_eq * lam + a_own``."""
    g = torch.Generator().manual_seed(seed)
    n = ref.shape[0]
    equal, diff = [], []
    for _ in range(draws):
        p = sample_rmix_params(n, grids=GRIDS, generator=g)
        weights = []
        for sal in (ref, other):
            own = cell_masks(sal, p.grid, p.quantiles).flatten(1)
            other_m = own[p.index]
            cells = own.shape[1]
            a_eq = (own == other_m).sum(1) / cells
            a_own = (own & ~other_m).sum(1) / cells
            weights.append(torch.stack([a_eq, a_own], 1))
        equal.append((weights[0] == weights[1]).all(1).float().mean())
        w_own = [w[:, 0] * p.lam + w[:, 1] for w in weights]
        diff.append((w_own[0] - w_own[1]).abs().mean())
    return dict(images_equal=float(torch.stack(equal).mean()),
                mean_abs_diff=float(torch.stack(diff).mean()))


def run_agreement(args) -> Dict[str, Any]:
    x, y = _digits('train')
    xv, yv = _digits('val')
    out = []
    for arch in args.archs:
        before = loadavg()
        trained = train_digits(arch, args.epochs, x, y, xv, yv)
        model = trained['model']
        # the 300 test digits in batches of 100 (train-mode BN statistics)
        names = [f'{s:g}' for s in SCALES[1:]] + [
            "reference: 1, saliency_bn='eval'",
            'diagnostic: 0.5 resized back to full size (no scale change)'
        ]
        full, maps = [], {name: [] for name in names}
        for i in range(0, len(xv), 100):
            xb, yb = xv[i:i + 100], yv[i:i + 100]
            full.append(train_mode_saliency(model, xb, yb))
            for s in SCALES[1:]:
                maps[f'{s:g}'].append(train_mode_saliency(model, xb, yb, s))
            maps[names[-2]].append(
                train_mode_saliency(model, xb, yb, bn='eval'))
            maps[names[-1]].append(
                train_mode_saliency(model, down_up(xb, 0.5), yb))
        full = torch.cat(full)
        rows = []
        g = torch.Generator().manual_seed(0)
        candidates = [(name, torch.cat(v)) for name, v in maps.items()]
        candidates.append(('reference: random saliency (chance)',
                           torch.rand(full.shape, generator=g)))
        for name, sal in candidates:
            cells = cell_agreement(full, sal)
            labels = label_weight_agreement(full, sal, args.draws)
            rows.append(dict(scale=name,
                             cells_grid2=cells[2],
                             cells_grid4=cells[4],
                             cells_mean=statistics.mean(cells.values()),
                             label_weights_equal=labels['images_equal'],
                             own_weight_abs_diff=labels['mean_abs_diff']))
        out.append(dict(arch=arch, epochs=args.epochs, top1=trained['top1'],
                        train_seconds=trained['seconds'],
                        loadavg_before=before, loadavg_after=loadavg(),
                        rows=rows))
    return dict(models=out, draws=args.draws, images=len(xv))


def print_agreement(res: Dict[str, Any]) -> None:
    for m in res['models']:
        print(f"\n## agreement: {m['arch']} on the digits, {m['epochs']} "
              f"epochs, top-1 {100 * m['top1'][-1]:.1f}% on the "
              f"{res['images']} test digits (per epoch: "
              f"{[round(100 * t, 1) for t in m['top1']]}); load average "
              f"{m['loadavg_before']} -> {m['loadavg_after']}")
        print('| saliency_scale | cells equal, grid 2 / grid 4 (mean) | '
              f"label weights identical ({res['draws']} R-Mix draws) | "
              'mean abs. diff. of the own label weight |')
        print('|---|---|---|---|')
        for r in m['rows']:
            print(f"| {r['scale']} | {100 * r['cells_grid2']:.1f}% / "
                  f"{100 * r['cells_grid4']:.1f}% "
                  f"({100 * r['cells_mean']:.1f}%) | "
                  f"{100 * r['label_weights_equal']:.1f}% | "
                  f"{r['own_weight_abs_diff']:.4f} |")


# ------------------------------------------------------------------ main
SECTIONS: Dict[str, Callable] = dict(fp16=run_fp16, speed=run_speed,
                                     agreement=run_agreement)
PRINTERS: Dict[str, Callable] = dict(fp16=print_fp16, speed=print_speed,
                                     agreement=print_agreement)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--sections', nargs='+', choices=list(SECTIONS),
                        default=list(SECTIONS))
    parser.add_argument('--device', default=default_device())
    parser.add_argument('--threads', type=int, default=0,
                        help='torch threads (default: torch default)')
    parser.add_argument('--fp16-batch', type=int, default=256)
    parser.add_argument('--head-std', type=float, default=1e-4)
    parser.add_argument('--steps', type=int, default=30,
                        help='timed steps, 32 px')
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument('--speed-settings',
                        nargs='+',
                        choices=['preact32', 'r50_224'],
                        default=['preact32', 'r50_224'])
    parser.add_argument('--r50-batch', type=int, default=8)
    parser.add_argument('--r50-steps', type=int, default=8)
    parser.add_argument('--archs', nargs='+',
                        choices=['preact18', 'democnn'],
                        default=['preact18', 'democnn'])
    parser.add_argument('--epochs', type=int, default=6,
                        help='digits training epochs')
    parser.add_argument('--draws', type=int, default=20,
                        help='R-Mix draws for the label weights')
    parser.add_argument('--quick', action='store_true',
                        help='a smoke run: tiny sizes, minutes')
    parser.add_argument('--json', help='write the results here')
    args = parser.parse_args(argv)
    if args.quick:
        args.fp16_batch, args.steps, args.warmup = 32, 3, 1
        args.r50_batch, args.r50_steps = 2, 2
        args.archs, args.epochs, args.draws = ['democnn'], 1, 2
    return args


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    # mmengine logs every parameter's initialisation at INFO
    from mmengine.logging import MMLogger
    MMLogger.get_current_instance().setLevel('WARNING')
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device != 'cpu':
        print('note: the fp16 and agreement sections run on the CPU')
    report: Dict[str, Any] = dict(machine=machine_info(args.device),
                                  args=vars(args))
    print(f"torch {report['machine']['torch']}, "
          f"{report['machine']['threads']} threads, "
          f"{report['machine']['cpus']} CPUs, device {args.device}, load "
          f"average {report['machine']['loadavg']}")
    for name in args.sections:
        start = time.perf_counter()
        report[name] = SECTIONS[name](args)
        report[name]['seconds'] = time.perf_counter() - start
        PRINTERS[name](report[name])
    if args.json:
        os.makedirs(osp.dirname(osp.abspath(args.json)), exist_ok=True)
        with open(args.json, 'w') as f:
            json.dump(report, f, indent=2)
    return report


if __name__ == '__main__':
    main()
