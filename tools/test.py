"""Test (and evaluate) a checkpoint of an mmpretrain, mmdet or mmseg config.

The framework is picked from the config's ``default_scope``; the runner is
built as in ``tools/train.py``.

Examples::

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out FILE]
    python tools/test.py CONFIG CHECKPOINT --show-dir DIR  # + ECE, diagram
    bash tools/dist_test.sh CONFIG CHECKPOINT 8 [--out FILE]
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
        description='Test a checkpoint (mmpretrain / mmdet / mmseg config)')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--work-dir', help='the dir to save logs and evaluation results')
    parser.add_argument(
        '--out',
        help='where to save the predictions: a .pkl/.pickle file for '
        'mmpretrain and mmdet configs (mmdet stores the converted '
        'results, as its own test.py does); a directory of prediction '
        'maps for mmseg configs')
    parser.add_argument(
        '--show-dir',
        help='mmpretrain configs: draw the reliability diagram of the test '
        'predictions to DIR/reliability.png (adds the CalibrationError '
        'metric -- ECE and MCE -- to test_evaluator when it has none)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the config, key=value pairs')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def _check_pickle_path(out: str) -> None:
    if not out.endswith(('.pkl', '.pickle')):
        raise ValueError(f'--out must be a .pkl or .pickle file, got {out!r}')


def main(argv=None) -> None:
    args = parse_args(argv)
    _import_mixplugins()
    from mmengine.config import Config

    from mixplugins.utils.launcher import (apply_framework_defaults,
                                           build_runner, close_process_group,
                                           init_framework_scope)

    cfg = Config.fromfile(args.config)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
    cfg.load_from = args.checkpoint
    scope = init_framework_scope(cfg)
    apply_framework_defaults(cfg, scope)
    if args.show_dir is not None:
        if scope != 'mmpretrain':
            raise ValueError('--show-dir draws the reliability diagram of '
                             f'classifiers; {args.config} is an {scope} '
                             'config')
        from mixplugins.classification.metrics import with_reliability_plot
        cfg.test_evaluator = with_reliability_plot(cfg.test_evaluator,
                                                   args.show_dir)

    if args.out is not None and scope == 'mmseg':
        # mmseg's IoUMetric writes one prediction map per image there
        cfg.test_evaluator['output_dir'] = args.out
        cfg.test_evaluator['keep_results'] = True
    elif args.out is not None:
        _check_pickle_path(args.out)

    runner = build_runner(cfg)
    if args.out is not None and scope == 'mmdet':
        from mmdet.evaluation import DumpDetResults
        runner.test_evaluator.metrics.append(
            DumpDetResults(out_file_path=args.out))
    elif args.out is not None and scope == 'mmpretrain':
        from mmengine.evaluator import DumpResults
        runner.test_evaluator.metrics.append(
            DumpResults(out_file_path=args.out))
    runner.test()
    # the DDP model holds the process group: drop it before closing
    del runner
    close_process_group()


if __name__ == '__main__':
    main()
