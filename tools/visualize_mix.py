#!/usr/bin/env python
r"""Draw what a config's batch augment does to real training batches.

Builds the config's train dataloader and data preprocessor (for mmpretrain
configs the whole model, which R-Mix's saliency pass and RecursiveMix's
history need; random initialisation unless ``--checkpoint``), runs real
batches through the preprocessor in training mode inside
:func:`mixplugins.engine.visualization.record_mix` (torch hooks on the
preprocessor; each augment's ``last_params`` record), and writes one PNG
grid per batch and augment to ``--output-dir``: the inputs; R-Mix's
saliency maps and grid masks; RecursiveMix's paste boxes and the history
being pasted; the pixels other augments changed; the mixed batch with its
top-k class names and label weights (classification), boxes and class
names (detection) or colour-coded label maps (segmentation). Images are
denormalised with the preprocessor's mean and std.

R-Mix: `Expeditious Saliency-guided Mix-up through Random Gradient
Thresholding <https://arxiv.org/abs/2212.04875>`_ (Luu et al., 2023).
RecursiveMix: `RecursiveMix: Mixed Learning with History
<https://arxiv.org/abs/2203.06844>`_ (Yang et al., NeurIPS 2022).

RecursiveMix pastes the *previous* batch, so for configs whose augments
keep a history the first ``--warmup-batches`` (default 1) batches are run
but not drawn (classification: the model's loss forward fills the history,
without an optimizer step). The demo digits are written to the config's
``data_root`` when it is missing.

Examples::

    python tools/visualize_mix.py configs/classification/demo_digits_rmix.py \
        --output-dir outputs/vis_rmix
    python tools/visualize_mix.py CONFIG --output-dir DIR --num-batches 4 \
        --cfg-options train_dataloader.batch_size=8
"""
import argparse
import copy
import importlib
import os
import os.path as osp
import sys
from typing import List, Optional, Sequence


def _import_mixplugins() -> None:
    """Import the package, from the repository if it is not installed."""
    try:
        import mixplugins  # noqa: F401
    except ImportError:
        sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
        import mixplugins  # noqa: F401


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse the command line."""
    from mmengine.config import DictAction

    parser = argparse.ArgumentParser(
        description='Draw mixed training batches of a config (mmpretrain / '
        'mmdet / mmseg)')
    parser.add_argument('config', help='config file path')
    parser.add_argument('--output-dir',
                        required=True,
                        help='where the PNG grids go (created)')
    parser.add_argument('--num-batches',
                        type=int,
                        default=2,
                        help='batches to draw (default: 2)')
    parser.add_argument(
        '--warmup-batches',
        type=int,
        default=None,
        help='batches run before drawing (default: 1 when an augment keeps a '
        'history, as RecursiveMix, else 0)')
    parser.add_argument('--checkpoint',
                        help='load these weights into the model (default: '
                        'random initialisation)')
    parser.add_argument('--max-images',
                        type=int,
                        default=8,
                        help='images per grid (default: 8)')
    parser.add_argument('--top-k',
                        type=int,
                        default=3,
                        help='label weights shown per image (default: 3)')
    parser.add_argument(
        '--channel-order',
        choices=['auto', 'bgr', 'rgb'],
        default='auto',
        help='channel order of the dataset images (default: auto, BGR when '
        'the pipeline has LoadImageFromFile)')
    parser.add_argument('--num-workers',
                        type=int,
                        default=0,
                        help='dataloader workers (default: 0)')
    parser.add_argument('--device',
                        default=None,
                        help='device (default: cuda if available, else cpu)')
    parser.add_argument('--seed', type=int, default=0, help='random seed')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the config, key=value pairs; e.g. '
        'train_dataloader.batch_size=8')
    args = parser.parse_args(argv)
    for name in ('num_batches', 'max_images', 'top_k'):
        if getattr(args, name) < 1:
            parser.error(f'--{name.replace("_", "-")} must be >= 1')
    for name in ('warmup_batches', 'num_workers'):
        value = getattr(args, name)
        if value is not None and value < 0:
            parser.error(f'--{name.replace("_", "-")} must be >= 0')
    return args


def prepare_demo_data(cfg) -> Optional[str]:
    """Write the demo digits if the config reads them and they are missing.

    The bundled demo configs (``configs/classification/demo_digits_*.py``)
    read scikit-learn's digits from ``data_root`` (``data/digits``), a
    ``CustomDataset`` folder; :func:`mixplugins.datasets.prepare_digits`
    writes it (no download).

    Returns:
        str | None: The folder written, or None.
    """
    from mixplugins.engine.visualization import inner_dataset_cfg

    dataset = inner_dataset_cfg(cfg.train_dataloader.get('dataset'))
    if not isinstance(dataset, dict):
        return None
    root = dataset.get('data_root')
    if (not isinstance(root, str) or dataset.get('type') != 'CustomDataset'
            or osp.basename(osp.normpath(root)) != 'digits'
            or osp.isdir(osp.join(root, dataset.get('data_prefix', 'train')))):
        return None
    from mixplugins.datasets import prepare_digits
    prepare_digits(root)
    return root


def _loader_cfg(cfg, num_workers: int):
    loader = copy.deepcopy(cfg.train_dataloader)
    loader.num_workers = num_workers
    loader.persistent_workers = num_workers > 0 and loader.get(
        'persistent_workers', False)
    loader.pin_memory = False
    return loader


def build_parts(cfg, scope: str, checkpoint: Optional[str], device: str):
    """Build the model (mmpretrain, or when a checkpoint is given) or only
    its data preprocessor; return ``(model or None, preprocessor)``."""
    from mmengine.registry import MODELS

    model_cfg = copy.deepcopy(cfg.model)
    if cfg.get('data_preprocessor', None) is not None:
        model_cfg.setdefault('data_preprocessor',
                             copy.deepcopy(cfg.data_preprocessor))
    model = None
    if scope == 'mmpretrain' or checkpoint:
        model = MODELS.build(model_cfg)
        if checkpoint:
            from mmengine.runner import load_checkpoint
            load_checkpoint(model, checkpoint, map_location='cpu')
        model = model.to(device).train()
        pre = model.data_preprocessor
    else:
        pre_cfg = model_cfg.get('data_preprocessor')
        if pre_cfg is None:
            raise ValueError('the config has no model.data_preprocessor')
        pre = MODELS.build(pre_cfg).to(device).train()
    return model, pre


def _has_history(model, pre) -> bool:
    from mixplugins.engine.visualization import iter_batch_augments

    if getattr(model, 'rm_history', None) is not None:
        return True
    for aug in iter_batch_augments(pre):
        try:
            if getattr(aug, 'history', None) is not None:
                return True
        except RuntimeError:  # an augment not bound to its model
            continue
    return False


def _summary(recording) -> List[str]:
    lines = []
    for call in recording.calls:
        changed = call.mixed.shape != call.inputs.shape or not bool(
            (call.mixed == call.inputs).all())
        record = (type(call.params).__name__
                  if call.params is not None else 'no record')
        lines.append(f'{call.name}: {"mixed" if changed else "unchanged"} '
                     f'({record})')
    return lines or ['no batch augment ran']


def run(cfg, args: argparse.Namespace, scope: str) -> List[str]:
    """Draw ``args.num_batches`` batches; return the PNG paths."""
    import torch
    from mmengine.runner import Runner
    from mmengine.runner.utils import set_random_seed
    from PIL import Image

    from mixplugins.utils.launcher import apply_framework_defaults
    from mixplugins.engine.visualization import (MixRenderer, record_mix,
                                                 source_channel_order)

    apply_framework_defaults(cfg, scope)
    written = prepare_demo_data(cfg)
    if written:
        print(f'[visualize_mix] wrote the demo digits to {written}')
    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    set_random_seed(args.seed)
    model, pre = build_parts(cfg, scope, args.checkpoint, device)
    loader = Runner.build_dataloader(_loader_cfg(cfg, args.num_workers),
                                     seed=args.seed)
    order = args.channel_order
    if order == 'auto':
        order = source_channel_order(cfg.train_dataloader.get('dataset'))
    renderer = MixRenderer.from_preprocessor(pre,
                                             getattr(loader.dataset,
                                                     'metainfo', None),
                                             order,
                                             max_images=args.max_images,
                                             top_k=args.top_k)
    warmup = args.warmup_batches
    if warmup is None:
        warmup = 1 if _has_history(model, pre) else 0
    feed_model = getattr(model, 'rm_history', None) is not None
    os.makedirs(args.output_dir, exist_ok=True)
    name = osp.splitext(osp.basename(args.config))[0]
    paths: List[str] = []
    batches = iter(loader)
    for k in range(warmup + args.num_batches):
        try:
            batch = next(batches)
        except StopIteration:
            batches = iter(loader)
            batch = next(batches)
        with record_mix(pre) as recording:
            data = pre(batch, True)
        if feed_model:  # RecursiveMix (classification) stores its history
            with torch.no_grad():
                model.loss(data['inputs'], data['data_samples'])
        if k < warmup:
            print(f'[visualize_mix] warm-up batch {k}: '
                  f'{"; ".join(_summary(recording))}')
            continue
        index = k - warmup
        grids = renderer.render(recording, title=f'{name} batch {index}')
        for grid_name, image in grids:
            path = osp.join(args.output_dir, f'batch{index}_{grid_name}.png')
            Image.fromarray(image).save(path)
            paths.append(path)
            print(f'[visualize_mix] batch {index}: '
                  f'{"; ".join(_summary(recording))} -> {path} '
                  f'({image.shape[1]}x{image.shape[0]})')
    return paths


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the tool; return the exit status."""
    args = parse_args(argv)
    _import_mixplugins()
    from mmengine.config import Config
    from mmengine.registry import DefaultScope

    from mixplugins.utils.launcher import FRAMEWORK_SCOPES, framework_of

    cfg = Config.fromfile(args.config)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    scope = framework_of(cfg)
    importlib.import_module(FRAMEWORK_SCOPES[scope])
    # the scope is restored afterwards, so main() can be called in-process
    with DefaultScope.overwrite_default_scope(scope):
        paths = run(cfg, args, scope)
    print(f'[visualize_mix] wrote {len(paths)} grid(s) to {args.output_dir}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
