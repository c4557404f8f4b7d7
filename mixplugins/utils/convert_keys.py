"""The key maps of :mod:`mixplugins.utils.convert`: the official
architectures (:data:`ARCHS`), finding the model state dict in a loaded
checkpoint, mapping it to an mmpretrain classifier or backbone layout,
dropping training-only parts, and the matching model configs.

Works on loaded objects only; reading and writing files is
:mod:`mixplugins.utils.convert`, which re-exports everything here.
"""
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple

import torch
from torch import Tensor

__all__ = [
    'SRC_FORMATS', 'TARGETS', 'ARCHS', 'ArchSpec', 'TRAINING_ONLY_PREFIXES',
    'TRAINING_ONLY_ENTRIES', 'extract_state_dict', 'convert_state_dict',
    'classifier_config', 'backbone_config', 'verify_state_dict',
    'strip_training_parts'
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


def _rmix_cifar(backbone: Mapping[str, Any], head: str, channels: int,
                description: str) -> ArchSpec:
    """A Co-Mixup CIFAR model that R-Mix published (nothing training-only)."""
    return ArchSpec(backbone, head, channels, formats=('rmix', ),
                    description=description)


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
    _rmix_cifar(dict(type='PreActResNet', depth=18), 'linear', 512,
                'PreActResNet-18 (CIFAR)'),
    'wrn16_8':
    _rmix_cifar(dict(type='WideResNet', depth=16, widen_factor=8), 'linear',
                512, 'WRN-16-8 (CIFAR)'),
    'wrn28_10':
    _rmix_cifar(dict(type='WideResNet', depth=28, widen_factor=10), 'linear',
                640, 'WRN-28-10 (CIFAR)'),
    'resnext29_4_24':
    _rmix_cifar(
        dict(type='CifarResNeXt', depth=29, cardinality=4, base_width=24),
        'classifier', 1024, 'ResNeXt-29 4x24d (CIFAR)'),
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


def strip_training_parts(checkpoint: Mapping[str, Any]) -> dict:
    """Drop what only training needs from a mixplugins (mmengine)
    checkpoint.

    Removes ``fc_roi.*``, ``rm_history.*``, ``rl_agent.*`` and
    ``data_preprocessor.*`` from the state dict (a ``module.`` prefix is
    stripped first) and every top-level entry but ``state_dict`` and
    ``meta`` (optimizer, message hub, parameter schedulers, EMA state,
    ...). ``meta`` is kept whole, so
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
