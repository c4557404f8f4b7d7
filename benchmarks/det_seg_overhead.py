"""Cost of RecursiveMix inside detection / segmentation training.

For the ATSS R-50 FPN config (``configs/detection/atss_r50_fpn_rm-det_1x_coco
.py``) and the UPerNet R-50 config (``configs/segmentation/
upernet_r50_rm-seg_512x512_80k_ade20k.py``) this times, interleaved in one
run (step and step+rm in alternating order) so that machine noise hits all
alike:

* ``step``: mmengine's ``train_step`` (preprocessor, forward, backward,
  optimizer step) of the model *without* the batch augment;
* ``step+rm``: the same with the RecursiveMix batch augment (history
  present);
* ``rm``: the batch augment alone on the preprocessed batch (paste of the
  images, boxes or label maps, and the history update), ``--inner`` calls
  per round, each timed.

Medians over ``--rounds`` are printed with ``rm / step`` (goal <= 3%) and
``step+rm / step``. Models are randomly initialised (no download). On the
CPU use small inputs (the defaults); the augment's work and the step's both
grow with the number of pixels, so the ratio changes little with the size.

    python benchmarks/det_seg_overhead.py [--rounds 7] [--det-size 320 480]
        [--seg-size 256] [--batch-size 2] [--depth 50] [--threads 2]
        [--device cpu|cuda] [--json out.json]

``run`` is reused by ``run_all.py``.
"""
import argparse
import copy
import json
import os.path as osp
import statistics
from typing import Dict, List, Optional, Sequence

import torch
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmengine.optim import build_optim_wrapper
from mmengine.registry import DefaultScope
from mmengine.structures import InstanceData, PixelData

from _common import default_device, gc_paused, timed

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
DET_CONFIG = osp.join(REPO, 'configs', 'detection',
                      'atss_r50_fpn_rm-det_1x_coco.py')
SEG_CONFIG = osp.join(REPO, 'configs', 'segmentation',
                      'upernet_r50_rm-seg_512x512_80k_ade20k.py')


def _shrink(cfg: Config, depth: int, task: str) -> None:
    m = cfg.model
    m.backbone.init_cfg = None
    m.backbone.depth = depth
    if depth in (18, 34):
        chans = [64, 128, 256, 512]
        if task == 'det':
            m.neck.in_channels = chans
        else:
            m.decode_head.in_channels = chans
            m.auxiliary_head.in_channels = 256


def _det_data(args, g: torch.Generator) -> dict:
    from mmdet.structures import DetDataSample
    h, w = args.det_size
    inputs, samples = [], []
    for i in range(args.batch_size):
        ih, iw = h - 32 * (i % 2), w - 32 * (i % 2)  # sizes differ: padding
        inputs.append(
            torch.randint(0, 256, (3, ih, iw), generator=g, dtype=torch.uint8))
        xy = torch.rand(args.boxes, 2, generator=g) * torch.tensor(
            [iw * 0.8, ih * 0.8])
        wh = (torch.rand(args.boxes, 2, generator=g) * 0.3 + 0.05) * \
            torch.tensor([iw, ih])
        boxes = torch.cat(
            [xy, torch.minimum(xy + wh, torch.tensor([iw, ih]))], 1)
        s = DetDataSample(metainfo=dict(
            img_shape=(ih, iw), ori_shape=(ih, iw), scale_factor=(1.0, 1.0)))
        s.gt_instances = InstanceData(bboxes=boxes,
                                      labels=torch.randint(0,
                                                           80, (args.boxes, ),
                                                           generator=g))
        samples.append(s)
    return dict(inputs=inputs, data_samples=samples)


def _seg_data(args, g: torch.Generator) -> dict:
    from mmseg.structures import SegDataSample
    s_ = args.seg_size
    inputs, samples = [], []
    for _ in range(args.batch_size):
        inputs.append(
            torch.randint(0, 256, (3, s_, s_), generator=g, dtype=torch.uint8))
        seg = torch.randint(0, 150, (1, s_, s_), generator=g)
        seg[:, :s_ // 8] = 255
        s = SegDataSample(metainfo=dict(ori_shape=(s_, s_)))
        s.gt_sem_seg = PixelData(data=seg)
        samples.append(s)
    return dict(inputs=inputs, data_samples=samples)


def _task(name: str, config: str, registry_scope: str, make_data, args,
          device: torch.device) -> Dict[str, List[float]]:
    """Build with/without-augment models and return per-round timings."""
    with DefaultScope.overwrite_default_scope(registry_scope):
        if registry_scope == 'mmdet':
            from mmdet.registry import MODELS
        else:
            from mmseg.registry import MODELS
        cfg = Config.fromfile(config)
        _shrink(cfg, args.depth, name)
        if name == 'seg':
            cfg.model.data_preprocessor.size = (args.seg_size, args.seg_size)
        torch.manual_seed(0)
        with_rm = revert_sync_batchnorm(MODELS.build(copy.deepcopy(
            cfg.model))).to(device).train()
        base_cfg = copy.deepcopy(cfg.model)
        base_cfg.data_preprocessor.batch_augments = None
        torch.manual_seed(0)
        base = revert_sync_batchnorm(MODELS.build(base_cfg)).to(device).train()
        optims = [
            build_optim_wrapper(m, copy.deepcopy(cfg.optim_wrapper))
            for m in (base, with_rm)
        ]
    aug = with_rm.data_preprocessor.batch_augments[0]
    g = torch.Generator().manual_seed(1)
    data = make_data(args, g)
    # warm-up; also gives the augment its history
    for _ in range(2):
        base.train_step(copy.deepcopy(data), optims[0])
        with_rm.train_step(copy.deepcopy(data), optims[1])
    pre = base.data_preprocessor(copy.deepcopy(data), True)
    times: Dict[str, List[float]] = {'step': [], 'step+rm': [], 'rm': []}
    for i in range(args.rounds):
        d0, d1 = copy.deepcopy(data), copy.deepcopy(data)
        steps = [('step', lambda: base.train_step(d0, optims[0])),
                 ('step+rm', lambda: with_rm.train_step(d1, optims[1]))]
        for key, fn in steps if i % 2 == 0 else steps[::-1]:
            times[key].append(timed(fn, device))
        with gc_paused():  # short calls: no collection next to them
            for _ in range(args.inner):
                samples = copy.deepcopy(pre['data_samples'])
                times['rm'].append(
                    timed(lambda: aug(pre['inputs'], samples),
                          device,
                          collect=False))
    return times


def run(args) -> dict:
    """Time every task of ``args.tasks``; medians and ratios per task.

    Args:
        args: The CLI arguments (see ``parse_args``).

    Returns:
        dict: ``{task: dict(model, input, median_s, rm_over_step,
        step_rm_over_step, times_s)}``.
    """
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    import mixplugins  # noqa: F401  (registers the augments)
    specs = dict(
        det=('ATSS R-%d FPN' % args.depth, DET_CONFIG, 'mmdet', _det_data,
             '%dx3x%dx%d' % (args.batch_size, *args.det_size)),
        seg=('UPerNet R-%d' % args.depth, SEG_CONFIG, 'mmseg', _seg_data,
             '%dx3x%dx%d' % (args.batch_size, args.seg_size, args.seg_size)))
    results = {}
    for task in args.tasks:
        label, config, scope, make_data, shape = specs[task]
        t = _task(task, config, scope, make_data, args, device)
        med = {k: statistics.median(v) for k, v in t.items()}
        results[task] = dict(model=label,
                             input=shape,
                             median_s=med,
                             rm_over_step=med['rm'] / med['step'],
                             step_rm_over_step=med['step+rm'] / med['step'],
                             times_s=t)
    return results


def print_table(results: dict, args) -> None:
    """Print the markdown table of ``run``'s results."""
    print(f'device: {args.device} ({torch.get_num_threads()} threads), '
          f'{args.rounds} interleaved rounds, medians; random init')
    print('| model | input | step (s) | step+rm (s) | rm (ms) | rm / step '
          '| step+rm / step |')
    print('|---|---|---|---|---|---|---|')
    for r in results.values():
        m = r['median_s']
        print(f"| {r['model']} | {r['input']} | {m['step']:.3f} | "
              f"{m['step+rm']:.3f} | {1e3 * m['rm']:.2f} | "
              f"{100 * r['rm_over_step']:.2f}% | "
              f"{r['step_rm_over_step']:.3f} |")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--rounds', type=int, default=7)
    parser.add_argument('--inner',
                        type=int,
                        default=5,
                        help='augment calls timed together per round')
    parser.add_argument('--det-size',
                        type=int,
                        nargs=2,
                        default=[320, 480],
                        metavar=('H', 'W'))
    parser.add_argument('--seg-size', type=int, default=256)
    parser.add_argument('--batch-size', type=int, default=2)
    parser.add_argument('--boxes',
                        type=int,
                        default=10,
                        help='gt boxes per detection image')
    parser.add_argument('--depth',
                        type=int,
                        default=50,
                        choices=[18, 34, 50, 101])
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--device', default=default_device())
    parser.add_argument('--tasks',
                        nargs='+',
                        default=['det', 'seg'],
                        choices=['det', 'seg'])
    parser.add_argument('--json', default=None)
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    results = run(args)
    print_table(results, args)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(results, f, indent=1)


if __name__ == '__main__':
    main()
