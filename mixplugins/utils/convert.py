"""Convert published R-Mix / RecursiveMix checkpoints to OpenMMLab layouts.

Three kinds of source checkpoint are understood (``src_format``):

``'recursivemix'``
    `RecursiveMix: Mixed Learning with History
    <https://arxiv.org/abs/2203.06844>`_ (Yang et al., NeurIPS 2022),
    official code https://github.com/implus/RecursiveMix-pytorch. Its
    ``main.py`` saves ``dict(epoch, state_dict, optimizer)`` where
    ``state_dict`` is the ``DistributedDataParallel`` model's (every key
    starts with ``module.``). The ImageNet ResNet-50 has torchvision's key
    layout plus the consistency head ``fc_roi``; the CIFAR PyramidNet-200
    (alpha 240) has ``conv1``/``bn1``/``layer1-3``/``bn_final``/``fc`` plus
    ``fc_roi``.
``'rmix'``
    `Expeditious Saliency-guided Mix-up through Random Gradient Thresholding
    <https://arxiv.org/abs/2212.04875>`_ (Luu et al., 2023), official code
    https://github.com/minhlong94/Random-Mixup. The ImageNet script
    (``imagenet/main_fast_ddp.py``) saves ``dict(epoch, arch, state_dict,
    best_prec1, optimizer)`` of a DDP-wrapped torchvision ResNet-50; the
    CIFAR training environment saves ``dict(model, scheduler, test_top1,
    test_top5, args, config, epoch)``, while the README's evaluation snippet
    reads the published ``.pth.tar`` files through ``'state_dict'`` and
    strips ``module.``. Both keys, and a bare state dict, are accepted; the
    ``module.`` prefix is stripped when present. CIFAR models are the
    Co-Mixup copies PreActResNet-18, WRN-16-8, WRN-28-10 and
    ResNeXt-29 (4x24d), whose classifiers are ``linear`` (PreActResNet,
    WRN) and ``classifier`` (ResNeXt).
``'mixplugins'``
    mmengine checkpoints of this package's
    :class:`~mixplugins.classification.MixImageClassifier`: ``state_dict``
    with ``backbone.*``, ``neck.*``, ``head.*`` and the training-only
    ``fc_roi.*`` and ``rm_history._extra_state``, plus ``meta``,
    ``message_hub``, ``optimizer`` and ``param_schedulers``.

Two targets (``target``):

``'classifier'``
    An mmpretrain ``ImageClassifier`` state dict: ``backbone.*`` (mmpretrain
    ``ResNet`` depth 50 for ResNet-50, which has torchvision's key names; the
    CIFAR backbones of :mod:`mixplugins.classification.backbones`, whose key
    names are the official ones) and ``head.fc.*`` (``LinearClsHead``;
    ``GlobalAveragePooling`` has no parameters). :func:`classifier_config`
    gives the matching model config.
``'backbone'``
    The backbone alone, without a prefix: what
    ``init_cfg=dict(type='Pretrained', checkpoint=...)`` on an mmdet / mmseg
    ``ResNet`` (depth 50) loads with no missing or unexpected key (those
    ``ResNet`` classes name their parameters as torchvision does, minus
    ``fc``).

The output is ``dict(state_dict=..., meta=dict(...))``; training-only parts
(``fc_roi``, ``rm_history``, optimizer, message hub, schedulers) are dropped.
:func:`publish_checkpoint` does the same for a ``mixplugins`` checkpoint
while keeping the classifier layout and the whole ``meta``, and names the
file after its SHA-256, as OpenMMLab's publish tools do.

This module reads and writes the files; the key maps are
:mod:`mixplugins.utils.convert_keys` (everything public there is importable
from here too).
"""
import argparse
import hashlib
import os
import os.path as osp
import uuid
from typing import Any, Dict, Mapping, Optional

import torch
from torch import Tensor

from .convert_keys import (ARCHS, SRC_FORMATS, TARGETS,  # noqa: F401
                           TRAINING_ONLY_ENTRIES, TRAINING_ONLY_PREFIXES,
                           ArchSpec, _check_arch, _check_choice,
                           backbone_config, classifier_config,
                           convert_state_dict, extract_state_dict,
                           strip_training_parts, verify_state_dict)

__all__ = [
    'SRC_FORMATS', 'TARGETS', 'ARCHS', 'ArchSpec', 'TRAINING_ONLY_PREFIXES',
    'load_source', 'extract_state_dict', 'convert_state_dict',
    'classifier_config', 'backbone_config', 'verify_state_dict',
    'convert_checkpoint', 'strip_training_parts', 'publish_checkpoint'
]


def load_source(path: str, unsafe: bool = False) -> Any:
    """Load a checkpoint file on the CPU, with torch's safe loader.

    Besides tensors and containers, the official checkpoints hold an
    ``argparse.Namespace`` (R-Mix's CIFAR ``args``) and mmengine ones hold
    a ``HistoryBuffer`` and numpy scalars; those are allow-listed. Anything
    else is refused unless ``unsafe`` is set.

    Args:
        path (str): Checkpoint file.
        unsafe (bool): Fall back to full unpickling (``weights_only=False``)
            when the safe loader refuses the file. Only for files you trust:
            unpickling can run arbitrary code. Defaults to False.

    Returns:
        Any: The loaded object.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the safe loader refuses the file and ``unsafe`` is
            False.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'checkpoint not found: {path}')
    allowed = [argparse.Namespace]
    try:
        from ..engine.checkpoint import mm_checkpoint_safe_globals
        allowed += mm_checkpoint_safe_globals()
    except ImportError:  # mmengine absent: official files need none of it
        pass
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # noqa: BLE001  (re-raised below)
        if not unsafe:
            raise ValueError(
                f'torch.load(weights_only=True) refused {path}: {e}. If you '
                'trust this file, pass unsafe=True (CLI: --unsafe-load) to '
                'unpickle it fully.') from e
    return torch.load(path, map_location='cpu', weights_only=False)


def _build_reference(arch: str, target: str,
                     state: Mapping[str, Tensor]) -> torch.nn.Module:
    """Build the mmpretrain module that ``state`` must fit.

    Only its keys and shapes are needed, so it is built on the ``meta``
    device (no memory, no initialisation cost) where that works. It is
    built in the ``mmpretrain`` scope whatever mmengine's current default
    scope is (a process that ran an mmseg runner before leaves ``mmseg``
    current, and its registry has no ``ImageClassifier``).
    """
    import mixplugins  # noqa: F401  (registers the CIFAR backbones)
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS
    if target == 'backbone':
        cfg = backbone_config(arch)
    else:
        num_classes = int(state['head.fc.weight'].shape[0])
        cfg = classifier_config(arch, num_classes)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        try:
            with torch.device('meta'):
                return MODELS.build(cfg)
        except (RuntimeError, NotImplementedError):
            return MODELS.build(cfg)


def _plain_meta(meta: Mapping[str, Any]) -> dict:
    """Scalars and strings of an official checkpoint worth keeping."""
    keep = ('epoch', 'arch', 'best_prec1', 'test_top1', 'test_top5')
    out = {}
    for key in keep:
        value = meta.get(key) if isinstance(meta, Mapping) else None
        if isinstance(value, Tensor) and value.numel() == 1:
            value = value.item()
        if isinstance(value, (int, float, str)):
            out[key] = value
    return out


def convert_checkpoint(src: str,
                       dst: Optional[str],
                       src_format: str,
                       target: str,
                       arch: Optional[str] = None,
                       verify: bool = True,
                       unsafe: bool = False) -> dict:
    """Convert the checkpoint file ``src`` and save it to ``dst``.

    Args:
        src (str): Source checkpoint file.
        dst (str, optional): Output file; None returns without saving.
        src_format (str): ``'recursivemix'``, ``'rmix'`` or
            ``'mixplugins'`` (see the module docstring).
        target (str): ``'classifier'`` or ``'backbone'``.
        arch (str, optional): Official architecture (a key of
            :data:`ARCHS`); required for the official formats. Defaults to
            None.
        verify (bool): Build the mmpretrain module the result is meant for
            (needs ``arch``; skipped for ``'mixplugins'`` without ``arch``)
            and check keys and shapes match exactly. Defaults to True.
        unsafe (bool): See :func:`load_source`. Defaults to False.

    Returns:
        dict: ``dict(state_dict=..., meta=...)`` as saved. ``meta`` records
        the source format, arch, target, the source file name (not its
        path), the classifier's ``num_classes``, scalar facts of the source
        (epoch, accuracy) and, for ``'mixplugins'``, the source
        ``meta.dataset_meta``.
    """
    _check_choice('src_format', src_format, SRC_FORMATS)
    _check_choice('target', target, TARGETS)
    _check_arch(src_format, arch)
    checkpoint = load_source(src, unsafe=unsafe)
    state = convert_state_dict(
        extract_state_dict(checkpoint), src_format, target, arch=arch)
    if verify and arch is not None:
        verify_state_dict(state, _build_reference(arch, target, state))
    from ..version import __version__
    meta: Dict[str, Any] = dict(
        converted_by=f'mixplugins {__version__} '
        '(mixplugins.utils.convert)',
        src_format=src_format,
        target=target,
        source=osp.basename(src))
    if arch is not None:
        meta['arch'] = arch
    if isinstance(checkpoint, Mapping):
        src_meta = checkpoint.get('meta')
        if src_format == 'mixplugins' and isinstance(src_meta, Mapping):
            if 'dataset_meta' in src_meta:
                meta['dataset_meta'] = src_meta['dataset_meta']
            meta['source_meta'] = _plain_meta(src_meta)
        else:
            meta['source_meta'] = _plain_meta(checkpoint)
    head = state.get('head.fc.weight')
    if target == 'classifier' and head is not None:
        meta['num_classes'] = int(head.shape[0])
    if target == 'classifier' and arch is not None and head is not None:
        meta['model'] = classifier_config(arch, int(head.shape[0]))
    out = dict(state_dict=state, meta=meta)
    if dst is not None:
        _atomic_save(out, dst)
    return out


def _atomic_save(obj: Any, path: str) -> None:
    """``torch.save`` to a temporary file next to ``path``, then rename."""
    dirname = osp.dirname(osp.abspath(path))
    os.makedirs(dirname, exist_ok=True)
    tmp = osp.join(dirname,
                   f'.{osp.basename(path)}.{uuid.uuid4().hex[:8]}.tmp')
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def publish_checkpoint(in_file: str,
                       out_file: str,
                       unsafe: bool = False) -> str:
    """Publish a mixplugins checkpoint: strip it and name it by its hash.

    As OpenMMLab's ``publish_model.py``: the stripped checkpoint (see
    :func:`strip_training_parts`) is written and renamed to
    ``<out_file without .pth>-<first 8 hex digits of its SHA-256>.pth``.

    Args:
        in_file (str): mmengine checkpoint of a ``MixImageClassifier`` (or
            any mmengine classifier checkpoint).
        out_file (str): Output name; ``.pth`` is appended if missing before
            the hash is inserted.
        unsafe (bool): See :func:`load_source`. Defaults to False.

    Returns:
        str: The path of the published file.
    """
    checkpoint = load_source(in_file, unsafe=unsafe)
    published = strip_training_parts(checkpoint)
    stem = out_file[:-4] if out_file.endswith('.pth') else out_file
    tmp = f'{stem}.pth'
    _atomic_save(published, tmp)
    final = f'{stem}-{_sha256(tmp)[:8]}.pth'
    os.replace(tmp, final)
    return final
