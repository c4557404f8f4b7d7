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
"""
import argparse
import hashlib
import os
import os.path as osp
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple

import torch
from torch import Tensor

__all__ = [
    'SRC_FORMATS', 'TARGETS', 'ARCHS', 'ArchSpec', 'TRAINING_ONLY_PREFIXES',
    'load_source', 'extract_state_dict', 'convert_state_dict',
    'classifier_config', 'backbone_config', 'verify_state_dict',
    'convert_checkpoint', 'strip_training_parts', 'publish_checkpoint'
]

#: Accepted ``src_format`` values.
SRC_FORMATS = ('recursivemix', 'rmix', 'mixplugins')
#: Accepted ``target`` values.
TARGETS = ('classifier', 'backbone')
#: Top-level state-dict prefixes of a ``MixImageClassifier`` that only
#: training uses (RecursiveMix consistency head and history; augment state
#: kept by the data preprocessor, e.g. an RL-Mix agent).
TRAINING_ONLY_PREFIXES = ('fc_roi.', 'rm_history.', 'rl_agent.',
                          'data_preprocessor.')
#: Top-level checkpoint entries that only resuming training needs.
TRAINING_ONLY_ENTRIES = ('optimizer', 'message_hub', 'param_schedulers',
                         'ema_state_dict', 'scheduler', 'amp', 'scaler')
_MODEL_PREFIXES = ('backbone.', 'neck.', 'head.')


@dataclass(frozen=True)
class ArchSpec:
    """How one official architecture maps onto mmpretrain modules.

    Args:
        backbone (dict): mmpretrain ``MODELS`` config of the backbone whose
            parameter names equal the official ones (minus the classifier).
        head (str): Name of the official classifier ``nn.Linear`` (mapped to
            ``head.fc``).
        channels (int): Channels of the backbone's last feature map (the
            classifier's input).
        training_only (tuple[str]): Official submodules used only in
            training (dropped). Defaults to ().
        formats (tuple[str]): Source formats that published this
            architecture. Defaults to ().
        description (str): Human-readable name. Defaults to ''.
    """

    backbone: Mapping[str, Any]
    head: str
    channels: int
    training_only: Tuple[str, ...] = ()
    formats: Tuple[str, ...] = ()
    description: str = ''


#: Official architectures (names of the official constructor functions).
ARCHS: Dict[str, ArchSpec] = {
    'resnet50':
    ArchSpec(
        backbone=dict(type='ResNet', depth=50),
        head='fc',
        channels=2048,
        training_only=('fc_roi', ),
        formats=('recursivemix', 'rmix'),
        description='torchvision ResNet-50 (ImageNet)'),
    'pyramidnet_200_240':
    ArchSpec(
        backbone=dict(
            type='PyramidNet', depth=200, alpha=240, bottleneck=True),
        head='fc',
        channels=1024,
        training_only=('fc_roi', ),
        formats=('recursivemix', ),
        description='PyramidNet-200, alpha 240 (CIFAR)'),
    'preactresnet18':
    ArchSpec(
        backbone=dict(type='PreActResNet', depth=18),
        head='linear',
        channels=512,
        formats=('rmix', ),
        description='PreActResNet-18 (CIFAR)'),
    'wrn16_8':
    ArchSpec(
        backbone=dict(type='WideResNet', depth=16, widen_factor=8),
        head='linear',
        channels=512,
        formats=('rmix', ),
        description='WRN-16-8 (CIFAR)'),
    'wrn28_10':
    ArchSpec(
        backbone=dict(type='WideResNet', depth=28, widen_factor=10),
        head='linear',
        channels=640,
        formats=('rmix', ),
        description='WRN-28-10 (CIFAR)'),
    'resnext29_4_24':
    ArchSpec(
        backbone=dict(
            type='CifarResNeXt', depth=29, cardinality=4, base_width=24),
        head='classifier',
        channels=1024,
        formats=('rmix', ),
        description='ResNeXt-29 4x24d (CIFAR)'),
}


def _check_choice(name: str, value: Any, allowed) -> None:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f'`{name}` must be one of {tuple(allowed)}, '
                         f'got {value!r}')


def _check_arch(src_format: str, arch: Optional[str]) -> Optional[ArchSpec]:
    """Validate ``arch`` for ``src_format``; return its spec (or None)."""
    if src_format == 'mixplugins':
        if arch is not None:
            _check_choice('arch', arch, ARCHS)
            return ARCHS[arch]
        return None
    allowed = [a for a, s in ARCHS.items() if src_format in s.formats]
    if arch is None:
        raise ValueError(f'`arch` is required for src_format={src_format!r}; '
                         f'one of {tuple(allowed)}')
    _check_choice('arch', arch, allowed)
    return ARCHS[arch]


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
        from .checkpoint import mm_checkpoint_safe_globals
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


def _is_state_dict(obj: Any) -> bool:
    """A non-empty mapping of names to tensors (``*._extra_state`` entries,
    which modules may fill with any object, excepted)."""
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and
        (isinstance(v, Tensor) or k.endswith('._extra_state'))
        for k, v in obj.items())


def extract_state_dict(checkpoint: Any) -> 'OrderedDict[str, Tensor]':
    """Return the model state dict of a loaded checkpoint.

    Looks under ``'state_dict'``, then ``'model'`` (R-Mix's CIFAR
    environment), else takes ``checkpoint`` itself if it is a mapping of
    tensors. A ``module.`` prefix (``DataParallel`` / DDP) is removed when
    every key carries it.

    Args:
        checkpoint (Any): What :func:`load_source` returned.

    Returns:
        OrderedDict[str, Tensor]: Keys without the ``module.`` prefix.

    Raises:
        ValueError: If no state dict can be found.
    """
    state = None
    if isinstance(checkpoint, Mapping):
        for key in ('state_dict', 'model'):
            if _is_state_dict(checkpoint.get(key)):
                state = checkpoint[key]
                break
        if state is None and _is_state_dict(checkpoint):
            state = checkpoint
    if state is None:
        keys = list(checkpoint) if isinstance(checkpoint, Mapping) else []
        raise ValueError(
            'no state dict found: expected a mapping of tensors under '
            f"'state_dict' or 'model', or a bare one; got entries {keys}")
    if all(k.startswith('module.') for k in state):
        state = OrderedDict((k[len('module.'):], v) for k, v in state.items())
    return OrderedDict(state)


def _split_official(state: Mapping[str, Tensor], spec: ArchSpec,
                    arch: str) -> Tuple[Dict[str, Tensor], Dict[str, Tensor]]:
    """Split an official state dict into (backbone, head) parts."""
    backbone, head = OrderedDict(), OrderedDict()
    dropped = tuple(f'{m}.' for m in spec.training_only)
    for key, value in state.items():
        if key.startswith(dropped):
            continue
        if key.startswith(f'{spec.head}.'):
            head[key[len(spec.head) + 1:]] = value
        else:
            backbone[key] = value
    if set(head) != {'weight', 'bias'}:
        raise ValueError(
            f'arch={arch!r}: expected classifier parameters '
            f"'{spec.head}.weight' and '{spec.head}.bias', found "
            f'{sorted(spec.head + "." + k for k in head)}; is `arch` right?')
    return backbone, head


def convert_state_dict(
        state: Mapping[str, Tensor],
        src_format: str,
        target: str,
        arch: Optional[str] = None) -> 'OrderedDict[str, Tensor]':
    """Map a source state dict to the target layout.

    Args:
        state (Mapping[str, Tensor]): Model state dict without ``module.``
            (see :func:`extract_state_dict`).
        src_format (str): ``'recursivemix'``, ``'rmix'`` or
            ``'mixplugins'``.
        target (str): ``'classifier'`` (mmpretrain ``ImageClassifier``
            keys) or ``'backbone'`` (backbone keys without prefix).
        arch (str, optional): Official architecture, a key of
            :data:`ARCHS`; required for the official formats, optional
            (unused) for ``'mixplugins'``. Defaults to None.

    Returns:
        OrderedDict[str, Tensor]: The converted state dict (tensors are
        shared with ``state``, not copied).

    Raises:
        ValueError: On a bad ``src_format`` / ``target`` / ``arch``, or
            keys the mapping does not know.
    """
    _check_choice('src_format', src_format, SRC_FORMATS)
    _check_choice('target', target, TARGETS)
    spec = _check_arch(src_format, arch)
    out: 'OrderedDict[str, Tensor]' = OrderedDict()
    if src_format == 'mixplugins':
        unknown = [
            k for k in state
            if not k.startswith(_MODEL_PREFIXES + TRAINING_ONLY_PREFIXES)
        ]
        if unknown:
            raise ValueError(
                'keys outside backbone./neck./head. and the training-only '
                f'{TRAINING_ONLY_PREFIXES}: {unknown[:10]}')
        for key, value in state.items():
            if key.startswith(TRAINING_ONLY_PREFIXES):
                continue
            if target == 'classifier':
                out[key] = value
            elif key.startswith('backbone.'):
                out[key[len('backbone.'):]] = value
        if not out:
            raise ValueError('the checkpoint holds no backbone. parameters')
        return out
    backbone, head = _split_official(state, spec, arch)
    if target == 'backbone':
        return OrderedDict(backbone)
    for key, value in backbone.items():
        out[f'backbone.{key}'] = value
    for key, value in head.items():
        out[f'head.fc.{key}'] = value
    return out


def classifier_config(arch: str, num_classes: int) -> dict:
    """mmpretrain model config whose keys match a converted classifier.

    ``ImageClassifier`` with the arch's backbone, ``GlobalAveragePooling``
    and a ``LinearClsHead``. The CIFAR backbones are registered by
    ``import mixplugins`` (``custom_imports`` in a config).

    Args:
        arch (str): A key of :data:`ARCHS`.
        num_classes (int): Classes of the linear head.

    Returns:
        dict: The model config.
    """
    _check_choice('arch', arch, ARCHS)
    if isinstance(num_classes,
                  bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f'`num_classes` must be a positive int, got '
                         f'{num_classes!r}')
    return dict(
        type='ImageClassifier',
        backbone=dict(ARCHS[arch].backbone),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(
            type='LinearClsHead',
            num_classes=num_classes,
            in_channels=ARCHS[arch].channels,
            loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
            topk=(1, 5) if num_classes >= 5 else (1, )))


def backbone_config(arch: str) -> dict:
    """mmpretrain backbone config of ``arch`` (a key of :data:`ARCHS`).

    For ``'resnet50'`` the same keys are produced by mmdet's and mmseg's
    ``ResNet`` (depth 50, default ``ResNet`` stem, not ``ResNetV1c``/``V1d``).
    """
    _check_choice('arch', arch, ARCHS)
    return dict(ARCHS[arch].backbone)


def verify_state_dict(state: Mapping[str, Tensor],
                      model: torch.nn.Module) -> None:
    """Check that ``state`` fits ``model`` exactly: same keys and shapes.

    Args:
        state (Mapping[str, Tensor]): A converted state dict.
        model (torch.nn.Module): The module it is meant for.

    Raises:
        ValueError: Listing missing / unexpected keys or shape mismatches.
    """
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(
        f'{k}: {tuple(state[k].shape)} vs {tuple(expected[k].shape)}'
        for k in set(state) & set(expected)
        if isinstance(expected[k], Tensor) and (not isinstance(
            state[k], Tensor) or state[k].shape != expected[k].shape))
    if missing or unexpected or shapes:
        raise ValueError(
            f'converted state dict does not fit {type(model).__name__}: '
            f'missing {missing[:10]}, unexpected {unexpected[:10]}, '
            f'shape mismatches {shapes[:10]}')


def _build_reference(arch: str, target: str,
                     state: Mapping[str, Tensor]) -> torch.nn.Module:
    """Build the mmpretrain module that ``state`` must fit.

    Only its keys and shapes are needed, so it is built on the ``meta``
    device (no memory, no initialisation cost) where that works.
    """
    import mixplugins  # noqa: F401  (registers the CIFAR backbones)
    from mmpretrain.registry import MODELS
    if target == 'backbone':
        cfg = backbone_config(arch)
    else:
        num_classes = int(state['head.fc.weight'].shape[0])
        cfg = classifier_config(arch, num_classes)
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


def strip_training_parts(checkpoint: Mapping[str, Any]) -> dict:
    """Drop what only training needs from a mixplugins (mmengine)
    checkpoint.

    Removes ``fc_roi.*``, ``rm_history.*``, ``rl_agent.*`` and
    ``data_preprocessor.*`` from the state dict (a ``module.`` prefix is stripped first) and every
    top-level entry but ``state_dict`` and ``meta`` (optimizer, message
    hub, parameter schedulers, EMA state, ...). ``meta`` is kept whole, so
    ``meta.dataset_meta`` (class names) reaches the inferencers.

    Args:
        checkpoint (Mapping[str, Any]): A loaded mmengine checkpoint.

    Returns:
        dict: ``dict(state_dict=..., meta=...)`` (``meta`` only if present);
        the result loads into mmpretrain's ``ImageClassifier`` with the
        same backbone / neck / head.
    """
    state = extract_state_dict(checkpoint)
    stripped = OrderedDict((k, v) for k, v in state.items()
                           if not k.startswith(TRAINING_ONLY_PREFIXES))
    out: Dict[str, Any] = dict(state_dict=stripped)
    meta = checkpoint.get('meta') if isinstance(checkpoint, Mapping) else None
    if meta is not None:
        out['meta'] = dict(meta)
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
