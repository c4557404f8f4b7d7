#!/usr/bin/env python
"""Publish a mixplugins checkpoint for inference.

Drops what only training needs -- RecursiveMix's ``fc_roi`` head and
``rm_history`` state, the optimizer, message hub and parameter schedulers --
keeps ``state_dict`` (mmpretrain ``ImageClassifier`` layout) and ``meta``
(including ``meta.dataset_meta``), and writes ``OUT-<sha256[:8]>.pth``, as
OpenMMLab's publish tools do::

    python tools/publish_model.py work_dirs/r50_rm/epoch_300.pth \\
        r50_rm_in1k.pth      # -> r50_rm_in1k-1a2b3c4d.pth

The result loads into a plain ``ImageClassifier`` config with the same
backbone / neck / head (e.g. in mmpretrain's
``ImageClassificationInferencer``).
The logic lives in :func:`mixplugins.utils.convert.publish_checkpoint`.
"""
import argparse
import os.path as osp
import sys
from typing import Optional, Sequence

try:
    import mixplugins  # noqa: F401
except ImportError:  # run from a clone without installing the package
    sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mixplugins.utils.convert import publish_checkpoint


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        description='Strip a mixplugins checkpoint for release and name it '
        'after its SHA-256')
    parser.add_argument('in_file', help='input checkpoint (mmengine)')
    parser.add_argument(
        'out_file',
        help='output name; the final file is '
        'OUT-<sha256[:8]>.pth')
    parser.add_argument(
        '--unsafe-load',
        action='store_true',
        help='unpickle IN fully if the safe loader refuses it (only for '
        'files you trust)')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Publish; return the exit status."""
    args = parse_args(argv)
    try:
        final = publish_checkpoint(
            args.in_file, args.out_file, unsafe=args.unsafe_load)
    except (ValueError, FileNotFoundError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    print(final)
    return 0


if __name__ == '__main__':
    sys.exit(main())
