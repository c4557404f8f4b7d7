"""Plain helpers shared by the tests (fixtures are in ``tests/conftest.py``).

* Tiny models and batches of every framework. Classification: mmpretrain
  ResNet-18 with 8 stem/base channels. Detection: the repository's ATSS
  config, shrunk to that ResNet-18, a 16-channel FPN and one head conv.
  Segmentation: the repository's UPerNet config, shrunk the same way, with
  BN instead of SyncBN. Everything runs on the CPU in seconds; no weights
  are loaded.
* The same shrinking as config text (:func:`tiny_det_model`,
  :data:`TINY_SEG_MODEL`) and the small-image det/seg pipelines
  (:data:`DET_PIPELINES`, :data:`SEG_PIPELINES`) for the tests that run a
  tool on a config file.
* Running tools in a fresh process: :func:`tool_env`, :func:`free_port`,
  :func:`run_for_result`.
* Comparing RecursiveMix histories: :func:`history_of`,
  :func:`same_history`.
"""
import contextlib
import copy
import json
import os
import os.path as osp
import socket
import subprocess
import sys

import numpy as np
import torch
from mmengine.config import Config
from mmengine.logging import MessageHub
from mmengine.registry import DefaultScope
from mmengine.structures import InstanceData, PixelData

from mixplugins.datasets.synthetic import (SHAPE_CLASSES, make_ade20k_shapes,
                                           make_coco_shapes)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
NUM_CLASSES = 5
TINY_RESNET = dict(type='ResNet', depth=18, stem_channels=8, base_channels=8)
TINY_CHANNELS = [8, 16, 32, 64]


@contextlib.contextmanager
def scope(name):
    """Build and run with ``name``'s registries whatever scope is current."""
    with DefaultScope.overwrite_default_scope(name):
        yield


def set_epoch(epoch):
    """Set the current ``MessageHub``'s epoch (what the augments read)."""
    MessageHub.get_current_instance().update_info('epoch', epoch)


# ----------------------------------------------------------- subprocesses
def free_port() -> int:
    """A TCP port that was free a moment ago (for a rendezvous)."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def tool_env(*pythonpath, threads=None, **extra) -> dict:
    """``os.environ`` for a tool run in a fresh process.

    ``pythonpath`` folders go before the current ``PYTHONPATH``; ``threads``
    sets ``OMP_NUM_THREADS`` and ``MKL_NUM_THREADS``; ``extra`` adds
    variables (values as strings). ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` is
    dropped: the tools must load their checkpoints with torch's default.
    """
    env = dict(os.environ)
    if pythonpath:
        env['PYTHONPATH'] = os.pathsep.join(
            filter(None, [*map(str, pythonpath),
                          os.environ.get('PYTHONPATH')]))
    if threads is not None:
        env.update(OMP_NUM_THREADS=str(threads),
                   MKL_NUM_THREADS=str(threads))
    env.update({k: str(v) for k, v in extra.items()})
    env.pop('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', None)
    return env


def run_for_result(code, *args, cwd, env, timeout=600, tail=4000) -> dict:
    """Run ``python -c code *args``, expect success and return the JSON of
    its last ``RESULT {...}`` line."""
    proc = subprocess.run([sys.executable, '-c', code, *map(str, args)],
                          cwd=str(cwd),
                          capture_output=True,
                          text=True,
                          timeout=timeout,
                          env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-tail:]
    line = [x for x in proc.stdout.splitlines() if x.startswith('RESULT ')]
    return json.loads(line[-1][len('RESULT '):])


# --------------------------------------------------------- classification
def cls_model(augments=None,
              probs=None,
              num_classes=NUM_CLASSES,
              init_weights=False,
              **kwargs):
    """A tiny ``MixImageClassifier`` (``type`` in ``kwargs`` for another).

    ``augments``: one batch augment config or a list of them (none: no
    ``train_cfg``), drawn with ``probs``. ``kwargs`` replace top-level keys
    of the config (``data_preprocessor=None``: mmpretrain's default).
    """
    from mmpretrain.registry import MODELS
    cfg = dict(type='MixImageClassifier',
               backbone=dict(TINY_RESNET),
               neck=dict(type='GlobalAveragePooling'),
               head=dict(type='LinearClsHead',
                         num_classes=num_classes,
                         in_channels=64,
                         loss=dict(type='CrossEntropyLoss', use_soft=True)),
               data_preprocessor=dict(num_classes=num_classes))
    if augments is not None:
        if isinstance(augments, dict):
            augments = [augments]
        cfg['train_cfg'] = dict(augments=copy.deepcopy(list(augments)))
        if probs is not None:
            cfg['train_cfg']['probs'] = probs
    cfg.update(copy.deepcopy(kwargs))
    with scope('mmpretrain'):
        model = MODELS.build(cfg)
    if init_weights:
        model.init_weights()
    return model


def build_model(augments=None, probs=None, **kwargs):
    """:func:`cls_model` with ``init_weights()`` run, as a runner does."""
    return cls_model(augments, probs, init_weights=True, **kwargs)


def cls_batch(n=4, size=32, seed=0, h=None, w=None, num_classes=NUM_CLASSES):
    """Raw uint8 ``h x w`` (default ``size``) images and ``DataSample``s
    with integer labels."""
    from mmpretrain.structures import DataSample
    h = size if h is None else h
    w = size if w is None else w
    g = torch.Generator().manual_seed(seed)
    inputs = [
        torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)
        for _ in range(n)
    ]
    labels = torch.randint(0, num_classes, (n, ), generator=g)
    samples = [DataSample().set_gt_label(int(y)) for y in labels]
    return dict(inputs=inputs, data_samples=samples)


def make_batch(n=4, size=32, seed=0):
    """:func:`cls_batch` and its labels as one tensor."""
    data = cls_batch(n, size, seed)
    return data, torch.cat([s.gt_label for s in data['data_samples']])


# -------------------------------------------------------------- detection
RM_DET = dict(type='RecursiveMix', alpha=1.0, min_visible=0.3)


def tiny_det_model(num_classes=3):
    """What shrinks the ATSS config's ``model`` to the tiny ResNet-18, a
    16-channel FPN with 3 levels and one 16-channel head conv."""
    return dict(backbone=dict(TINY_RESNET,
                              frozen_stages=-1,
                              norm_eval=False,
                              init_cfg=None),
                neck=dict(in_channels=TINY_CHANNELS,
                          out_channels=16,
                          num_outs=3),
                bbox_head=dict(num_classes=num_classes,
                               in_channels=16,
                               feat_channels=16,
                               stacked_convs=1,
                               norm_cfg=dict(type='GN',
                                             num_groups=8,
                                             requires_grad=True),
                               anchor_generator=dict(octave_base_scale=4,
                                                     strides=[8, 16, 32])))


def det_model(batch_augments=(RM_DET, )):
    """The repository's ATSS RecursiveMix config on a tiny ResNet-18."""
    from mmdet.registry import MODELS
    cfg = Config.fromfile(
        osp.join(REPO, 'configs', 'detection',
                 'atss_r50_fpn_rm-det_1x_coco.py'))
    cfg.merge_from_dict(dict(model=copy.deepcopy(tiny_det_model())))
    m = cfg.model
    m.data_preprocessor.batch_augments = [dict(a) for a in batch_augments]
    with scope('mmdet'):
        return MODELS.build(m.to_dict())


def det_batch(sizes, seed=0, empty=(), boxes_per_image=2):
    """Random images of the given ``(h, w)`` sizes, each with a few boxes
    (none for the images listed in ``empty``)."""
    from mmdet.structures import DetDataSample
    g = torch.Generator().manual_seed(seed)
    inputs, samples = [], []
    for i, (h, w) in enumerate(sizes):
        inputs.append(
            torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8))
        k = 0 if i in empty else boxes_per_image
        xy = torch.rand(k, 2, generator=g) * torch.tensor([w / 2, h / 2])
        wh = (0.25 + torch.rand(k, 2, generator=g) / 4) * torch.tensor([w, h])
        boxes = torch.cat([xy, xy + wh], 1)
        sample = DetDataSample(metainfo=dict(
            img_shape=(h, w), ori_shape=(h, w), scale_factor=(1., 1.)))
        sample.gt_instances = InstanceData(bboxes=boxes,
                                           labels=torch.randint(0,
                                                                3, (k, ),
                                                                generator=g))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


# ----------------------------------------------------------- segmentation
RM_SEG = dict(type='RecursiveMix', alpha=1.0)
#: What shrinks the UPerNet config's ``model`` to the tiny ResNet-18 and
#: 16 (decode) / 8 (auxiliary) channel heads; norms stay the config's.
TINY_SEG_MODEL = dict(backbone=dict(TINY_RESNET, init_cfg=None),
                      decode_head=dict(in_channels=TINY_CHANNELS,
                                       channels=16),
                      auxiliary_head=dict(in_channels=32, channels=8))


def seg_model(batch_augments=(RM_SEG, ), size=(32, 32), pool_scales=(1, 2)):
    """The repository's UPerNet RecursiveMix config on a tiny ResNet-18
    (BN instead of SyncBN), 4 classes, padding to ``size``."""
    from mmseg.registry import MODELS
    cfg = Config.fromfile(
        osp.join(REPO, 'configs', 'segmentation',
                 'upernet_r50_rm-seg_512x512_80k_ade20k.py'))
    cfg.merge_from_dict(dict(model=copy.deepcopy(TINY_SEG_MODEL)))
    m = cfg.model
    bn = dict(type='BN', requires_grad=True)
    m.data_preprocessor.update(
        size=size, batch_augments=[dict(a) for a in batch_augments])
    m.backbone.update(norm_cfg=bn)
    m.decode_head.update(num_classes=4, norm_cfg=bn, pool_scales=pool_scales)
    m.auxiliary_head.update(num_classes=4, norm_cfg=bn)
    with scope('mmseg'):
        return MODELS.build(m.to_dict())


def seg_batch(sizes, seed=0, seg_value=None):
    """Random images of the given ``(h, w)`` sizes with label maps in
    0..3 (or all ``seg_value``)."""
    from mmseg.structures import SegDataSample
    g = torch.Generator().manual_seed(seed)
    inputs, samples = [], []
    for h, w in sizes:
        inputs.append(
            torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8))
        seg = torch.randint(0, 4, (1, h, w), generator=g)
        if seg_value is not None:
            seg.fill_(seg_value)
        sample = SegDataSample(metainfo=dict(ori_shape=(h, w)))
        sample.gt_sem_seg = PixelData(data=seg)
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


# ------------------------------------- det/seg config text for tool runs
#: Small-image train and test pipelines for the COCO detection configs.
DET_PIPELINES = '''
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(128, 96), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(128, 96), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                    'scale_factor'))
]
'''
#: 64 px crops and the small-image train and test pipelines for the
#: ADE20K segmentation configs.
SEG_PIPELINES = '''
crop_size = (64, 64)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(128, 64), ratio_range=(0.5, 2.0),
         keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(128, 64), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs')
]
'''


# ------------------------------------------------ exact-resume configs
def det_config(tmp_path, num_train=6):
    """The repository's ATSS RecursiveMix config, shrunk (ResNet-18, 16-ch
    FPN), on ``num_train`` (6) generated COCO images, batch 2, 2 epochs, no validation, a
    checkpoint after every iteration (the exact-resume tests)."""
    info = make_coco_shapes(str(tmp_path / 'coco'), num_train=num_train,
                            num_val=1)
    root = info['data_root'] + '/'
    cfg = Config.fromfile(
        osp.join(REPO, 'configs', 'detection', 'atss_r50_fpn_rm-det_1x_coco.py'))
    m = cfg.model
    m.backbone.update(depth=18, init_cfg=None, frozen_stages=-1)
    m.neck.update(in_channels=[64, 128, 256, 512], out_channels=16)
    m.bbox_head.update(num_classes=len(SHAPE_CLASSES), in_channels=16,
                       feat_channels=16, stacked_convs=1,
                       norm_cfg=dict(type='GN', num_groups=4,
                                     requires_grad=True))
    pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations', with_bbox=True),
        dict(type='Resize', scale=(96, 64), keep_ratio=True),
        dict(type='RandomFlip', prob=0.5),
        dict(type='PackDetInputs')
    ]
    cfg.train_dataloader = dict(
        batch_size=2, num_workers=0, persistent_workers=False,
        sampler=dict(type='DefaultSampler', shuffle=True),
        batch_sampler=dict(type='AspectRatioBatchSampler'),
        dataset=dict(type='CocoDataset', data_root=root,
                     ann_file=info['train_ann'],
                     data_prefix=dict(img=info['train_img']),
                     metainfo=dict(classes=tuple(SHAPE_CLASSES)),
                     filter_cfg=dict(filter_empty_gt=False),
                     pipeline=pipeline))
    no_val(cfg)
    cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=2,
                         val_interval=10)
    cfg.param_scheduler = []
    cfg.default_hooks.checkpoint = dict(
        type='CheckpointHook', interval=1, by_epoch=False)
    return cfg


def seg_config(tmp_path, augment, num_train=4):
    """The repository's UPerNet config with ``augment``, shrunk, on
    ``num_train`` (4) generated ADE20K images, 32 px crops, batch 2, 5 iterations of an
    ``IterBasedTrainLoop``, a checkpoint after every iteration."""
    info = make_ade20k_shapes(str(tmp_path / 'ade'), num_train=num_train,
                              num_val=1,
                              sizes=((64, 80), (48, 64)))
    cfg = Config.fromfile(
        osp.join(REPO, 'configs', 'segmentation',
                 'upernet_r50_rm-seg_512x512_80k_ade20k.py'))
    crop = (32, 32)
    m = cfg.model
    m.pretrained = None
    m.data_preprocessor.size = crop
    m.data_preprocessor.batch_augments = [dict(type=augment)]
    m.backbone.update(depth=18, init_cfg=None)
    m.decode_head.update(in_channels=[64, 128, 256, 512], channels=16)
    m.auxiliary_head.update(in_channels=256, channels=8)
    cfg.train_dataloader.update(batch_size=2, num_workers=0,
                                persistent_workers=False)
    cfg.train_dataloader.dataset.data_root = info['data_root']
    cfg.train_dataloader.dataset.pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations', reduce_zero_label=True),
        dict(type='RandomResize', scale=(64, 32), ratio_range=(0.5, 2.0),
             keep_ratio=True),
        dict(type='RandomCrop', crop_size=crop, cat_max_ratio=0.75),
        dict(type='RandomFlip', prob=0.5),
        dict(type='PackSegInputs')
    ]
    no_val(cfg)
    # iteration based (as the stock UPerNet schedule): 5 iterations
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=5,
                         val_interval=100)
    cfg.param_scheduler = [dict(type='PolyLR', power=0.9, eta_min=1e-4,
                                begin=0, end=5, by_epoch=False)]
    cfg.default_hooks.checkpoint = dict(
        type='CheckpointHook', interval=1, by_epoch=False)
    return cfg


def no_val(cfg):
    """No validation or test loop."""
    cfg.val_dataloader = cfg.val_evaluator = cfg.val_cfg = None
    cfg.test_dataloader = cfg.test_evaluator = cfg.test_cfg = None


# ---------------------------------------------------------------- history
def history_of(aug):
    """A deep copy of the cross-iteration state of ``aug`` (for
    comparisons): a det/seg RecursiveMix's history, or an RL-Mix agent's."""
    owner = aug.history if hasattr(aug, 'history') else aug
    return copy.deepcopy(owner.get_extra_state())


def same_history(a, b):
    """Deep, exact equality of two history snapshots (tensors and arrays
    bitwise, with their dtypes)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, torch.Tensor):
        return a.dtype == b.dtype and a.shape == b.shape and bool(
            torch.equal(a, b))
    if isinstance(a, np.ndarray):
        return (a.dtype == b.dtype and a.shape == b.shape
                and bool(np.array_equal(a, b)))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(
            same_history(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(
            same_history(x, y) for x, y in zip(a, b))
    return a == b
