#!/usr/bin/env python
"""Convert a published R-Mix / RecursiveMix checkpoint, or a mixplugins one,
to an mmpretrain classifier or an mmdet / mmseg backbone checkpoint.

Examples::

    # RecursiveMix ImageNet ResNet-50 -> backbone for the ATSS / UPerNet
    # transfer configs (configs/detection, configs/segmentation)
    python tools/convert_checkpoint.py fold1_best.pth \\
        checkpoints/r50_rm_in1k_backbone.pth \\
        --src-format recursivemix --arch resnet50 --target backbone

    # R-Mix CIFAR-100 WRN-28-10 -> mmpretrain ImageClassifier
    python tools/convert_checkpoint.py wrn28_10.pth.tar wrn28_10_rmix.pth \\
        --src-format rmix --arch wrn28_10 --target classifier

    # this package's own ImageNet run -> backbone
    python tools/convert_checkpoint.py work_dirs/r50_rm_in1k/epoch_300.pth \\
        checkpoints/r50_rm_in1k_backbone.pth --src-format mixplugins \\
        --target backbone

The logic lives in :mod:`mixplugins.utils.convert`.
"""
import argparse
import os.path as osp
import sys
from typing import Optional, Sequence

try:
    import mixplugins  # noqa: F401
except ImportError:  # run from a clone without installing the package
    sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mixplugins.utils.convert import ARCHS, SRC_FORMATS, TARGETS, \
    convert_checkpoint


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        description='Convert R-Mix / RecursiveMix / mixplugins checkpoints '
        'to mmpretrain classifier or mmdet/mmseg backbone checkpoints')
    parser.add_argument('src', help='source checkpoint file')
    parser.add_argument('dst', help='output checkpoint file')
    parser.add_argument(
        '--src-format',
        required=True,
        choices=SRC_FORMATS,
        help='who wrote SRC: the official RecursiveMix or R-Mix code, or '
        'mixplugins (an mmengine MixImageClassifier checkpoint)')
    parser.add_argument(
        '--arch',
        choices=sorted(ARCHS),
        default=None,
        help='official architecture (required for recursivemix / rmix; '
        'optional for mixplugins, where it only enables --verify): ' +
        ', '.join(f'{k} = {v.description}' for k, v in ARCHS.items()))
    parser.add_argument(
        '--target',
        required=True,
        choices=TARGETS,
        help='classifier: mmpretrain ImageClassifier keys (backbone.*, '
        'head.fc.*); backbone: the backbone alone, for '
        "init_cfg=dict(type='Pretrained', checkpoint=DST)")
    parser.add_argument(
        '--no-verify',
        dest='verify',
        action='store_false',
        help='skip building the target module to check keys and shapes')
    parser.add_argument(
        '--unsafe-load',
        action='store_true',
        help='unpickle SRC fully if the safe loader refuses it (only for '
        'files you trust)')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the conversion; return the exit status."""
    args = parse_args(argv)
    try:
        out = convert_checkpoint(
            args.src,
            args.dst,
            src_format=args.src_format,
            target=args.target,
            arch=args.arch,
            verify=args.verify,
            unsafe=args.unsafe_load)
    except (ValueError, FileNotFoundError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    state = out['state_dict']
    num_params = sum(v.numel() for k, v in state.items()
                     if not k.endswith('num_batches_tracked'))
    print(f'wrote {args.dst}: {len(state)} tensors, {num_params} values, '
          f'target={args.target}' +
          (f", num_classes={out['meta']['num_classes']}" if 'num_classes' in
           out['meta'] else ''))
    return 0


if __name__ == '__main__':
    sys.exit(main())
