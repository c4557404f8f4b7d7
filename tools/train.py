"""Train a model of mmpretrain, mmdet or mmseg, with mixplugins loaded.

The framework is picked from the config's ``default_scope``. The runner is
built as that framework's own ``tools/train.py`` builds it. Distributed runs
on CPU (gloo) are supported: see ``mixplugins.utils.launcher``.

Examples::

    python tools/train.py CONFIG [--work-dir DIR] [--amp] [--resume [CKPT]]
    bash tools/dist_train.sh CONFIG 8 [--amp ...]
"""
import argparse
import os
import os.path as osp
import sys


def _import_mixplugins():
    """Import the package, from the repository if it is not installed."""
    try:
        import mixplugins  # noqa: F401
    except ImportError:
        sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
        import mixplugins  # noqa: F401
    # Harmless if ``import mixplugins`` already installed the patches.
    from mixplugins.engine.patches import install_patches
    install_patches()


def parse_args(argv=None) -> argparse.Namespace:
    from mmengine.config import DictAction

    parser = argparse.ArgumentParser(
        description='Train a model (mmpretrain / mmdet / mmseg config)')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='resume from the given checkpoint; without a path, resume from '
        'the latest checkpoint in the work directory')
    parser.add_argument(
        '--amp',
        action='store_true',
        help='enable automatic mixed precision (AmpOptimWrapper; on a '
        'machine without an accelerator, bfloat16 autocast on the CPU)')
    parser.add_argument(
        '--no-validate',
        action='store_true',
        help='do not evaluate checkpoints during training')
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='scale the learning rate by the total batch size '
        '(needs cfg.auto_scale_lr.base_batch_size)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the config, key=value pairs; '
        'e.g. train_cfg.max_iters=2 "model.backbone.depth=18"')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    # torch.distributed.launch passes --local-rank (older: --local_rank);
    # torchrun sets LOCAL_RANK instead.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def merge_args(cfg, args: argparse.Namespace):
    """Apply the command line to the config (CLI flags win over
    ``--cfg-options``, which win over the file)."""
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    cfg.launcher = args.launcher

    # work_dir: CLI > config file > ./work_dirs/<config name>
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])

    if args.no_validate:
        cfg.val_cfg = None
        cfg.val_dataloader = None
        cfg.val_evaluator = None

    if args.amp:
        optim_type = cfg.optim_wrapper.get('type', 'OptimWrapper')
        if optim_type not in ('OptimWrapper', 'AmpOptimWrapper'):
            raise ValueError(
                '--amp needs optim_wrapper.type to be OptimWrapper or '
                f'AmpOptimWrapper, got {optim_type!r}')
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')

    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume

    if args.auto_scale_lr:
        scale_cfg = cfg.get('auto_scale_lr', None)
        if not scale_cfg or 'base_batch_size' not in scale_cfg:
            raise ValueError(
                '--auto-scale-lr needs auto_scale_lr=dict(base_batch_size=N) '
                'in the config')
        cfg.auto_scale_lr.enable = True

    return cfg


def main(argv=None) -> None:
    args = parse_args(argv)
    _import_mixplugins()
    from mmengine.config import Config

    from mixplugins.engine.amp import use_cpu_amp_if_needed
    from mixplugins.utils.launcher import (apply_framework_defaults,
                                           build_runner,
                                           check_resume_checkpoint,
                                           close_process_group,
                                           init_framework_scope)

    cfg = merge_args(Config.fromfile(args.config), args)
    if cfg.get('resume', False) and cfg.get('load_from', None):
        check_resume_checkpoint(cfg.load_from)
    use_cpu_amp_if_needed(cfg)
    apply_framework_defaults(cfg, init_framework_scope(cfg))
    runner = build_runner(cfg)
    runner.train()
    # the DDP model holds the process group: drop it before closing
    del runner
    close_process_group()


if __name__ == '__main__':
    main()
