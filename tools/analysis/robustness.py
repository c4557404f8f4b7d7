#!/usr/bin/env python
"""Evaluate an mmpretrain classifier beyond top-1 on its test dataloader.

Clean top-1 with its calibration (ECE, MCE, reliability diagram), the 15
ImageNet-C corruptions x severities, occlusion by a square patch, and FGSM /
PGD attacks with the budget in pixel units, through the model's own data
preprocessor. What each measure is, exactly, and which libraries it uses:
:mod:`mixplugins.classification.robustness`.

Any registered mmpretrain classifier works (mixplugins' or mmpretrain's
own); the checkpoint must fit the config's model.

Writes ``robustness.json`` (every number), ``robustness.md`` (tables),
``robustness.png`` (plots), ``reliability.png`` / ``reliability.json``
into ``--out``.

Examples::

    python tools/analysis/robustness.py CONFIG CHECKPOINT --out DIR
    python tools/analysis/robustness.py CONFIG CHECKPOINT \\
        --corruptions gaussian_noise fog --severities 1 5 \\
        --occlusion 8 16 --fgsm 0 2 8 --pgd 0 2 8 --out DIR
"""
import argparse
import json
import os
import os.path as osp
import sys
from typing import List, Optional, Sequence


def _import_mixplugins() -> None:
    """Import the package, from the repository if it is not installed."""
    try:
        import mixplugins  # noqa: F401
    except ImportError:
        sys.path.insert(
            0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
        import mixplugins  # noqa: F401


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse the command line (the corruption names are checked here)."""
    from mmengine.config import DictAction

    from mixplugins.classification.robustness import CORRUPTIONS

    parser = argparse.ArgumentParser(
        description='Evaluate an mmpretrain classifier under corruptions, '
        'occlusion and adversarial attacks, with calibration')
    parser.add_argument('config', help='mmpretrain config file')
    parser.add_argument('checkpoint', help='checkpoint of that config')
    parser.add_argument('--out',
                        required=True,
                        help='folder for robustness.json / .md / .png and '
                        'the reliability diagram')
    parser.add_argument(
        '--corruptions',
        nargs='+',
        default=['all'],
        metavar='NAME',
        help='ImageNet-C corruptions: names, "all" (default: the 15) or '
        f'"none"; one of {", ".join(CORRUPTIONS)}')
    parser.add_argument('--severities',
                        nargs='+',
                        type=int,
                        default=[1, 2, 3, 4, 5],
                        metavar='S',
                        help='corruption severities in 1..5 (default: all)')
    parser.add_argument('--occlusion',
                        nargs='+',
                        type=int,
                        default=[],
                        metavar='SIZE',
                        help='sides (pixels) of the occluding square; '
                        'one run per size (default: none)')
    parser.add_argument('--fgsm',
                        nargs='+',
                        type=float,
                        default=[],
                        metavar='EPS',
                        help='FGSM budgets in pixel units (0..255), e.g. '
                        '0 2 8 (default: none)')
    parser.add_argument('--pgd',
                        nargs='+',
                        type=float,
                        default=[],
                        metavar='EPS',
                        help='PGD budgets in pixel units (default: none)')
    parser.add_argument('--pgd-steps',
                        type=int,
                        default=10,
                        help='PGD steps, step size eps / 4 (default: 10)')
    parser.add_argument('--n-bins',
                        type=int,
                        default=15,
                        help='bins of the calibration error (default: 15)')
    parser.add_argument('--seed',
                        type=int,
                        default=0,
                        help='seed of the corruptions, occlusion positions '
                        'and PGD starts (default: 0)')
    parser.add_argument('--device',
                        default=None,
                        help='torch device (default: cuda if available, '
                        'else cpu)')
    parser.add_argument('--no-progress',
                        action='store_true',
                        help='no progress bar')
    parser.add_argument('--cfg-options',
                        nargs='+',
                        action=DictAction,
                        help='override settings of the config, key=value')
    args = parser.parse_args(argv)
    names = args.corruptions
    if names == ['all']:
        args.corruptions = list(CORRUPTIONS)
    elif names == ['none']:
        args.corruptions = []
    else:
        unknown = [n for n in names if n not in CORRUPTIONS]
        if unknown:
            parser.error(f'unknown corruption(s) {", ".join(unknown)}; '
                         f'choose from {", ".join(CORRUPTIONS)}, "all" or '
                         '"none"')
    for s in args.severities:
        if not 1 <= s <= 5:
            parser.error(f'--severities must be in 1..5, got {s}')
    for option in ('fgsm', 'pgd'):
        for eps in getattr(args, option):
            if not eps >= 0 or eps == float('inf'):
                parser.error(f'--{option} budgets must be finite and >= 0 '
                             f'(pixel units), got {eps:g}')
    for size in args.occlusion:
        if size < 1:
            parser.error(f'--occlusion sizes must be >= 1 pixel, got {size}')
    if args.pgd_steps < 1:
        parser.error(f'--pgd-steps must be >= 1, got {args.pgd_steps}')
    if args.n_bins < 1:
        parser.error(f'--n-bins must be >= 1, got {args.n_bins}')
    if args.seed < 0:
        parser.error(f'--seed must be >= 0, got {args.seed}')
    return args


def _strip_prefix(state: dict) -> dict:
    if state and all(k.startswith('module.') for k in state):
        return {k[len('module.'):]: v for k, v in state.items()}
    return state


def check_fits(model, state: dict, checkpoint: str, config: str) -> None:
    """Raise ``ValueError`` unless ``state`` has exactly the model's keys
    and shapes (a checkpoint of another model is refused up front)."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(k for k in set(own) & set(state)
                    if hasattr(state[k], 'shape')
                    and tuple(state[k].shape) != tuple(own[k].shape))
    if not (missing or unexpected or shapes):
        return

    def some(keys: List[str]) -> str:
        head = ', '.join(keys[:5])
        return head + (f' (+{len(keys) - 5} more)' if len(keys) > 5 else '')

    problems = []
    if missing:
        problems.append(f'{len(missing)} weights of the model are not in '
                        f'the checkpoint: {some(missing)}')
    if unexpected:
        problems.append(f'{len(unexpected)} weights of the checkpoint are '
                        f'not in the model: {some(unexpected)}')
    if shapes:
        problems.append('shapes differ for ' + some([
            f'{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}'
            for k in shapes
        ]))
    raise ValueError(
        f'the checkpoint {checkpoint} does not fit the model of {config} '
        f'({type(model).__name__}); is it a checkpoint of another model? ' +
        '; '.join(problems))


def load_classifier(cfg, checkpoint: str, config: str, device: str):
    """Build the config's model and load ``checkpoint`` into it."""
    import torch
    from mmengine.runner.checkpoint import _load_checkpoint
    from mmpretrain.registry import MODELS

    if not osp.isfile(checkpoint):
        raise FileNotFoundError(f'no checkpoint file {checkpoint}')
    model_cfg = cfg.model.copy()
    if cfg.get('data_preprocessor') is not None:
        # what mmengine's Runner does with a top-level data_preprocessor
        model_cfg.setdefault('data_preprocessor', cfg.data_preprocessor)
    model = MODELS.build(model_cfg)
    ckpt = _load_checkpoint(checkpoint, map_location='cpu')
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f'{checkpoint} holds no state dict')
    state = _strip_prefix(dict(state))
    check_fits(model, state, checkpoint, config)
    model.load_state_dict(state, strict=True)
    return model.to(torch.device(device)).eval()


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the evaluation; return the exit status."""
    _import_mixplugins()
    args = parse_args(argv)
    import torch
    from mmengine.config import Config
    from mmengine.runner import Runner

    from mixplugins.classification.metrics import write_reliability
    from mixplugins.classification.robustness import (PixelClassifier,
                                                      RobustnessPlan,
                                                      dataloader_batches,
                                                      evaluate_robustness,
                                                      format_markdown,
                                                      import_imagecorruptions,
                                                      plot_robustness)
    from mixplugins.utils.launcher import init_framework_scope

    cfg = Config.fromfile(args.config)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    scope = init_framework_scope(cfg)
    if scope != 'mmpretrain':
        raise SystemExit(f'{args.config} is an {scope} config; the '
                         'robustness tool evaluates mmpretrain classifiers')
    if args.corruptions:
        import_imagecorruptions()
    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    model = load_classifier(cfg, args.checkpoint, args.config, device)
    dataloader = Runner.build_dataloader(cfg.test_dataloader)
    plan = RobustnessPlan(corruptions=tuple(args.corruptions),
                          severities=tuple(args.severities),
                          occlusion=tuple(args.occlusion),
                          fgsm=tuple(args.fgsm),
                          pgd=tuple(args.pgd),
                          pgd_steps=args.pgd_steps,
                          seed=args.seed,
                          n_bins=args.n_bins).checked()

    from tqdm import tqdm
    bar = tqdm(total=len(dataloader) * plan.num_conditions(),
               desc='robustness',
               unit='eval',
               disable=args.no_progress,
               file=sys.stderr)
    report = evaluate_robustness(PixelClassifier(model),
                                 dataloader_batches(dataloader),
                                 plan,
                                 progress=bar.update)
    bar.close()
    results = dict(report.results,
                   config=args.config,
                   checkpoint=args.checkpoint)
    os.makedirs(args.out, exist_ok=True)
    with open(osp.join(args.out, 'robustness.json'), 'w') as f:
        json.dump(results, f, indent=1)
    title = f'{osp.basename(args.config)} ({osp.basename(args.checkpoint)})'
    table = format_markdown(results, title)
    with open(osp.join(args.out, 'robustness.md'), 'w') as f:
        f.write(table + '\n')
    plot_robustness(results, osp.join(args.out, 'robustness.png'), title)
    write_reliability(report.bins, args.out)
    print(table)
    print(f'\nwrote {osp.join(args.out, "robustness.json")}, robustness.md, '
          'robustness.png, reliability.png')
    return 0


if __name__ == '__main__':
    try:
        sys.exit(main())
    except (ValueError, FileNotFoundError, ImportError) as e:
        print(f'robustness.py: error: {e}', file=sys.stderr)
        sys.exit(2)
