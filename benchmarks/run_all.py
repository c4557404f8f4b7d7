"""All speed benchmarks in one run: a table, a JSON file and a plot.

Three sections, each measured interleaved (one call of every method per
round, alternating order) and compared by ratios of medians taken in this
run, so that machine load hits both sides of a ratio alike:

* ``cls`` -- training-step time (mmengine ``train_step``: preprocessor,
  batch augment, forward, backward, SGD) of R-Mix, RL-Mix and RecursiveMix
  over CutMix on one classifier, with a second CutMix model as the noise
  control (``step_overhead.py`` / ``rlmix_overhead.py``). RL-Mix's PPO
  update (every ``n_steps`` steps) is timed apart and amortised.
* ``det_seg`` -- RecursiveMix inside ATSS (mmdet) and UPerNet (mmseg)
  training: the step with the augment over the step without it
  (``det_seg_overhead.py``; there is no CutMix baseline there).
* ``kernels`` -- throughput (images/s) of the R-Mix mask step
  (:func:`~mixplugins.core.grid_masks`) and of mask + mix (plus
  :func:`~mixplugins.core.mix_by_masks`) against a plain reference of the
  official ``mix_topleast_choose_top`` (Luu et al., arXiv 2212.04875;
  github.com/minhlong94/Random-Mixup): ``avg_pool2d`` with kernel ``k``,
  ``torch.quantile`` with the whole ``q`` vector (a B x B x 1 result whose
  diagonal is kept), ``>=``, ``F.interpolate`` (nearest) of a float mask,
  then the float-mask blends of the official code. Both sides are checked
  to give the same masks, images and targets before anything is timed.
  Goals: >= 5x for the mask step, >= 2x for mask + mix. Peak memory: on
  CUDA ``torch.cuda.max_memory_allocated``; on the CPU the torch
  profiler's allocation events (see ``_common.peak_memory``).

    python benchmarks/run_all.py [--out-dir benchmarks/results]
        [--device cpu|cuda] [--quick] [--sections cls det_seg kernels]
        [--runs 51] [--kernel-sizes 32 224] [--kernel-batch 256]
        [--threads N]

Writes ``run_all.json`` and ``run_all.png`` into ``--out-dir``. On a CPU
that other jobs share, ``--threads 1`` gives steadier ratios: an OpenMP
region whose second thread is descheduled can stall a sub-millisecond kernel
by tens of milliseconds.
"""
import argparse
import datetime
import json
import os
import os.path as osp
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

os.environ.setdefault('KINETO_LOG_LEVEL', '5')  # before torch loads kineto

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor  # noqa: E402

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from _common import default_device, interleave  # noqa: E402
from _common import machine_info, peak_memory, summarize  # noqa: E402

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
MASK_GOAL = 5.0
MIX_GOAL = 2.0
#: Official mixing grids: CIFAR pool kernels {8, 16} px on 32 px, i.e. grids
#: {4, 2}; ImageNet grids {2, 4}.
GRIDS = (2, 4)


# ----------------------------------------------------------------- reference
def reference_masks(saliency: Tensor, kernel: int,
                    quantiles: Tensor) -> Tensor:
    """Masks as the official ``mix_topleast_choose_top`` computes them.

    Average pooling with kernel = stride = ``kernel`` (done by the
    official ``compute_saliency``), then ``torch.quantile`` of every
    image's cells at *every* level of ``quantiles`` (a (B, B, 1) result) of
    which the diagonal is kept, a float64 ``>=`` mask and a nearest
    ``F.interpolate`` by ``kernel``.

    Args:
        saliency (Tensor): Pixel saliency (B, S, S), float32.
        kernel (int): Pool kernel in pixels, ``S % kernel == 0``.
        quantiles (Tensor): Per-image levels (B,), float32.

    Returns:
        Tensor: Float32 masks (B, 1, S, S) in {0, 1}.
    """
    b = saliency.shape[0]
    cells = F.avg_pool2d(saliency[:, None], kernel)[:, 0]
    flat = cells.reshape(b, -1)
    thr = torch.quantile(flat, quantiles, dim=1, keepdim=True)  # (B, B, 1)
    diag = torch.arange(b, device=saliency.device)
    thr = thr[diag, diag, 0]
    mask = (cells >= thr[:, None, None]).double()[:, None]
    return F.interpolate(mask.float(), scale_factor=kernel, mode='nearest')


def reference_mix(inputs: Tensor, targets: Tensor, mask: Tensor, index: Tensor,
                  w1: Tensor, w2: Tensor):
    """The official blend of ``mix_topleast_choose_top`` on float masks.

    ``where(M == M[p], 1, 0)`` and ``where(M != M[p], 1, 0)`` (int64) weigh
    the mixup term ``w1 x + w2 x[p]`` and the salient-wins term
    ``M x + M[p] x[p]``; the label weights are their pixel fractions,
    repeated over the classes.

    Args:
        inputs (Tensor): Images (B, C, S, S).
        targets (Tensor): One-hot targets (B, K), float.
        mask (Tensor): Float masks (B, 1, S, S) from :func:`reference_masks`.
        index (Tensor): Partner indices (B,).
        w1 (Tensor): Own weight (the official Dirichlet draw), a scalar.
        w2 (Tensor): Partner weight, a scalar.

    Returns:
        tuple[Tensor, Tensor]: Mixed images and mixed targets.
    """
    size = inputs.shape[-1]
    num_classes = targets.shape[1]
    mask_p, inputs_p, targets_p = mask[index], inputs[index], targets[index]
    same = torch.where(mask == mask_p, 1, 0)
    differ = torch.where(mask != mask_p, 1, 0)
    mixed = (differ * (mask * inputs + mask_p * inputs_p) + same *
             (w1 * inputs + w2 * inputs_p))

    def weight(m: Tensor) -> Tensor:
        frac = m.flatten(1).sum(1) / (size * size)
        return frac.unsqueeze(1).repeat(1, num_classes)

    mixed_targets = (weight(same) * (w1 * targets + w2 * targets_p) +
                     weight(differ * mask) * targets +
                     weight(differ * mask_p) * targets_p)
    return mixed, mixed_targets


# ------------------------------------------------------------------- kernels
def _kernel_case(size: int, grid: int, args) -> List[Dict[str, Any]]:
    """Check and time the mask step and mask + mix at one size and grid."""
    from mixplugins.core import grid_masks, mix_by_masks, sample_rmix_params
    device = torch.device(args.device)
    b = args.kernel_batch
    num_classes = 100 if size <= 64 else 1000
    g = torch.Generator().manual_seed(args.seed + size + grid)
    saliency = torch.rand(b, size, size, generator=g).to(device)
    inputs = torch.randn(b, 3, size, size, generator=g).to(device)
    labels = torch.randint(num_classes, (b, ), generator=g)
    targets = F.one_hot(labels, num_classes).float().to(device)
    params = sample_rmix_params(b, grids=(grid, ), generator=g, device=device)
    q, index, lam = params.quantiles, params.index, params.lam
    w1, w2 = lam, 1 - lam
    kernel = size // grid

    def ref_mask():
        return reference_masks(saliency, kernel, q)

    def our_mask():
        return grid_masks(saliency, grid, q)

    def ref_mix():
        return reference_mix(inputs, targets, ref_mask(), index, w1, w2)

    def our_mix():
        return mix_by_masks(inputs, targets, our_mask(), index, lam)

    # Same results first: masks and images exactly, targets to rounding.
    ref_m, our_m = ref_mask(), our_mask()
    if not torch.equal(ref_m.bool(), our_m):
        raise AssertionError(f'masks differ at {size}px grid {grid}: '
                             f'{int((ref_m.bool() != our_m).sum())} pixels')
    (ref_x, ref_t), (our_x, our_t) = ref_mix(), our_mix()
    if not torch.equal(ref_x, our_x):
        raise AssertionError(f'mixed images differ at {size}px grid {grid}')
    torch.testing.assert_close(our_t, ref_t)
    del ref_m, our_m, ref_x, ref_t, our_x, our_t

    fns = dict(ref_mask=ref_mask,
               our_mask=our_mask,
               ref_mix=ref_mix,
               our_mix=our_mix)
    tasks = {k: (lambda i, f=f: f) for k, f in fns.items()}
    times = interleave(tasks,
                       args.runs,
                       device,
                       warmup=args.warmup,
                       collect=False)
    rows = []
    for op, goal in (('mask', MASK_GOAL), ('mask+mix', MIX_GOAL)):
        key = 'mask' if op == 'mask' else 'mix'
        sides = {}
        for side in ('ref', 'our'):
            name = f'{side}_{key}'
            stats = summarize(times[name])
            peak, how = peak_memory(fns[name], device)
            stats.update(images_per_s=b / stats['median_s'],
                         peak_bytes=peak,
                         times=times[name])
            sides['ours' if side == 'our' else side] = stats
        speedup = sides['ref']['median_s'] / sides['ours']['median_s']
        rows.append(
            dict(size=size,
                 grid=grid,
                 batch=b,
                 op=op,
                 ref=sides['ref'],
                 ours=sides['ours'],
                 speedup=speedup,
                 goal=goal,
                 meets_goal=speedup >= goal,
                 memory_method=how))
    return rows


def run_kernels(args) -> Dict[str, Any]:
    rows = []
    for size in args.kernel_sizes:
        for grid in GRIDS:
            rows.extend(_kernel_case(size, grid, args))
    return dict(config=dict(batch=args.kernel_batch,
                            sizes=args.kernel_sizes,
                            grids=list(GRIDS),
                            runs=args.runs,
                            warmup=args.warmup),
                results=rows)


# ------------------------------------------------------------ classification
def run_cls(args) -> Dict[str, Any]:
    import rlmix_overhead
    import step_overhead
    argv = (f'--steps {args.cls_steps} --warmup {args.cls_warmup} '
            f'--batch-size {args.cls_batch} --size 32 '
            f'--backbone PreActResNet --device {args.device}')
    cls_args = step_overhead.parse_args(argv.split())
    cls_args.updates = args.cls_updates
    rlmix = dict(rlmix_overhead.RLMIX)
    backbone = None
    if args.quick:  # a tiny model and a tiny PPO buffer
        backbone = rlmix_overhead.backbone_cfg('ResNet')  # 8-channel R-18
        cls_args.backbone, cls_args.in_channels = 'ResNet', 64
        rlmix.update(n_steps=16, batch_size=8)
    methods = dict(step_overhead.METHODS)
    methods['rlmix'] = rlmix
    result = rlmix_overhead.run(cls_args,
                                methods,
                                baseline='cutmix',
                                backbone=backbone)
    step_overhead.print_table(result, cls_args)
    return dict(config=dict(vars(cls_args), rlmix=rlmix), results=result)


# ------------------------------------------------------------ det / seg
def run_det_seg(args) -> Dict[str, Any]:
    import det_seg_overhead
    argv = ['--device', args.device, '--threads', str(torch.get_num_threads())]
    if args.quick:
        argv += [
            '--rounds', '1', '--inner', '1', '--depth', '18', '--det-size',
            '96', '128', '--seg-size', '64', '--boxes', '3'
        ]
    ds_args = det_seg_overhead.parse_args(argv)
    results = det_seg_overhead.run(ds_args)
    det_seg_overhead.print_table(results, ds_args)
    return dict(config=vars(ds_args), results=results)


# ------------------------------------------------------------ report
def _fmt_bytes(n: Optional[int]) -> str:
    return '-' if n is None else f'{n / 2**20:.1f} MiB'


def summary_rows(report: Dict[str, Any]) -> List[Dict[str, Any]]:
    """One row per claim: what is compared, the ratio and its goal."""
    rows = []
    cls = report.get('cls', {}).get('results')
    if cls:
        labels = (('cutmix (control)', 'CutMix (control)'), ('rmix', 'R-Mix'),
                  ('rlmix_amortised', 'RL-Mix (+PPO/n_steps)'),
                  ('recursivemix', 'RecursiveMix'))
        for name, label in labels:
            rows.append(
                dict(section='cls',
                     what=f'{label} step / CutMix',
                     ratio=cls[name]['ratio']))
    det_seg = report.get('det_seg', {}).get('results')
    for task, r in (det_seg or {}).items():
        rows.append(
            dict(section=task,
                 what=f'RecursiveMix {task} step / step without',
                 ratio=r['step_rm_over_step']))
        rows.append(
            dict(section=task,
                 what=f'RecursiveMix {task} augment / step',
                 ratio=r['rm_over_step']))
    for r in report.get('kernels', {}).get('results', []):
        rows.append(
            dict(section='kernels',
                 what=(f"{r['op']} {r['size']}px grid {r['grid']}"
                       f" B={r['batch']}: reference / ours"),
                 ratio=r['speedup'],
                 goal=r['goal'],
                 meets_goal=r['meets_goal']))
    return rows


def print_report(report: Dict[str, Any]) -> None:
    meta = report['meta']
    print(f"\n== run_all: device {meta['device']}, torch {meta['torch']}, "
          f"{meta['threads']} threads, load average before "
          f"{meta['loadavg_before']} after {meta['loadavg_after']}, "
          f"{meta['elapsed_s']:.0f} s")
    print('| what | ratio | goal |')
    print('|---|---|---|')
    for r in report['summary']:
        goal = r.get('goal')
        mark = '' if goal is None else (
            f">= {goal:g}x {'met' if r['meets_goal'] else 'NOT met'}")
        print(f"| {r['what']} | {r['ratio']:.3f} | {mark} |")
    kern = report.get('kernels', {}).get('results', [])
    if kern:
        print('\n| op | size | grid | ref img/s | ours img/s | speedup | '
              'ref peak | ours peak |')
        print('|---|---|---|---|---|---|---|---|')
        for r in kern:
            print(f"| {r['op']} | {r['size']} | {r['grid']} | "
                  f"{r['ref']['images_per_s']:.0f} | "
                  f"{r['ours']['images_per_s']:.0f} | "
                  f"{r['speedup']:.2f}x | "
                  f"{_fmt_bytes(r['ref']['peak_bytes'])} | "
                  f"{_fmt_bytes(r['ours']['peak_bytes'])} |")
        print(f"peak memory: {kern[0]['memory_method']} (extra bytes "
              'allocated during one call, result included)')


def plot(report: Dict[str, Any], path: str) -> None:
    """Bar charts of the step ratios and of the kernel speed-ups."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    steps = [
        r for r in report['summary']
        if r['section'] != 'kernels' and 'augment' not in r['what']
    ]
    ax = axes[0]
    if steps:
        ax.barh([r['what'] for r in steps], [r['ratio'] for r in steps],
                color='tab:blue')
        ax.axvline(1.0, color='k', lw=0.8)
        for i, r in enumerate(steps):
            ax.text(r['ratio'], i, f" {r['ratio']:.2f}", va='center')
        ax.invert_yaxis()
    ax.set_xlabel('median step time ratio')
    ax.set_title('training-step overhead')
    kern = report.get('kernels', {}).get('results', [])
    ax = axes[1]
    if kern:
        labels = [f"{r['op']}\n{r['size']}px g{r['grid']}" for r in kern]
        colors = ['tab:green' if r['meets_goal'] else 'tab:red' for r in kern]
        ax.bar(range(len(kern)), [r['speedup'] for r in kern], color=colors)
        ax.set_xticks(range(len(kern)))
        ax.set_xticklabels(labels, fontsize=7)
        for i, r in enumerate(kern):  # each bar's own goal
            ax.hlines(r['goal'],
                      i - 0.45,
                      i + 0.45,
                      color='k',
                      ls='--',
                      lw=1,
                      label='goal' if i == 0 else None)
            ax.text(i,
                    r['speedup'],
                    f"{r['speedup']:.1f}x",
                    ha='center',
                    va='bottom',
                    fontsize=8)
        ax.axhline(1.0, color='grey', lw=0.6)
        ax.legend()
    ax.set_ylabel('reference time / ours')
    batch = report.get('kernels', {}).get('config', {}).get('batch')
    ax.set_title(f'R-Mix kernels vs official (B={batch})')
    meta = report['meta']
    fig.suptitle(
        f"mixplugins benchmarks: {meta['device']}, torch "
        f"{meta['torch']}, {meta['threads']} threads",
        fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out-dir',
                        default=osp.join(REPO, 'benchmarks', 'results'))
    parser.add_argument('--device', default=default_device())
    parser.add_argument('--quick',
                        action='store_true',
                        help='smoke run: few runs, small sizes and models')
    parser.add_argument('--sections',
                        nargs='+',
                        default=['cls', 'det_seg', 'kernels'],
                        choices=['cls', 'det_seg', 'kernels'])
    parser.add_argument('--runs',
                        type=int,
                        default=51,
                        help='timed kernel calls per op (>= 31)')
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--kernel-batch', type=int, default=256)
    parser.add_argument('--kernel-sizes',
                        type=int,
                        nargs='+',
                        default=[32, 224])
    parser.add_argument('--cls-steps', type=int, default=20)
    parser.add_argument('--cls-warmup', type=int, default=3)
    parser.add_argument('--cls-batch', type=int, default=32)
    parser.add_argument('--cls-updates',
                        type=int,
                        default=3,
                        help='PPO updates timed for RL-Mix')
    parser.add_argument('--threads',
                        type=int,
                        default=None,
                        help='torch threads (default: torch default)')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.warmup, args.kernel_batch = 3, 1, 32
        args.kernel_sizes = [32]
        args.cls_steps, args.cls_warmup, args.cls_batch = 2, 1, 8
        args.cls_updates = 1
    elif args.runs < 31:
        parser.error('--runs must be >= 31 (use --quick for a smoke run)')
    for size in args.kernel_sizes:
        if any(size % g for g in GRIDS):
            parser.error(f'--kernel-sizes: {size} is not divisible by the '
                         f'grids {GRIDS}')
    return args


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        raise SystemExit('--device cuda: no CUDA device is available')
    os.makedirs(args.out_dir, exist_ok=True)
    meta = machine_info(args.device)
    meta['loadavg_before'] = meta.pop('loadavg')
    report: Dict[str, Any] = dict(
        meta=dict(meta,
                  argv=list(sys.argv[1:] if argv is None else argv),
                  quick=args.quick,
                  started=datetime.datetime.now().isoformat(
                      timespec='seconds')))
    start = time.perf_counter()
    runners = dict(cls=run_cls, det_seg=run_det_seg, kernels=run_kernels)
    for section in args.sections:
        print(f'== {section}', flush=True)
        report[section] = runners[section](args)
    report['meta']['elapsed_s'] = time.perf_counter() - start
    report['meta']['loadavg_after'] = machine_info(args.device)['loadavg']
    report['summary'] = summary_rows(report)
    print_report(report)
    json_path = osp.join(args.out_dir, 'run_all.json')
    png_path = osp.join(args.out_dir, 'run_all.png')
    with open(json_path, 'w') as f:
        json.dump(report, f, indent=1)
    plot(report, png_path)
    print(f'wrote {json_path} and {png_path}')
    return report


if __name__ == '__main__':
    main()
