"""Tiny models and batches of every framework for the reliability tests.

Classification: mmpretrain ResNet-18 with 8 stem/base channels. Detection:
the repository's ATSS config, shrunk to that ResNet-18, a 16-channel FPN and
one head conv. Segmentation: the repository's UPerNet config, shrunk the
same way, with BN instead of SyncBN. Everything runs on the CPU in seconds;
no weights are loaded.
"""
import contextlib
import copy
import os.path as osp

import numpy as np
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.structures import InstanceData, PixelData

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
NUM_CLASSES = 5
TINY_RESNET = dict(type='ResNet', depth=18, stem_channels=8, base_channels=8)
TINY_CHANNELS = [8, 16, 32, 64]


@contextlib.contextmanager
def scope(name):
    """Build and run with ``name``'s registries whatever scope is current."""
    with DefaultScope.overwrite_default_scope(name):
        yield


# --------------------------------------------------------- classification
def cls_model(augment, num_classes=NUM_CLASSES, **kwargs):
    """A tiny ``MixImageClassifier`` with one batch augment."""
    from mmpretrain.registry import MODELS
    cfg = dict(type='MixImageClassifier',
               backbone=dict(TINY_RESNET),
               neck=dict(type='GlobalAveragePooling'),
               head=dict(type='LinearClsHead',
                         num_classes=num_classes,
                         in_channels=64,
                         loss=dict(type='CrossEntropyLoss', use_soft=True)),
               data_preprocessor=dict(num_classes=num_classes),
               train_cfg=dict(augments=[copy.deepcopy(augment)]))
    cfg.update(copy.deepcopy(kwargs))
    with scope('mmpretrain'):
        return MODELS.build(cfg)


def cls_batch(n=4, h=32, w=32, seed=0, num_classes=NUM_CLASSES):
    """Raw uint8 images and ``DataSample``s with integer labels."""
    from mmpretrain.structures import DataSample
    g = torch.Generator().manual_seed(seed)
    inputs = [
        torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)
        for _ in range(n)
    ]
    labels = torch.randint(0, num_classes, (n, ), generator=g)
    samples = [DataSample().set_gt_label(int(y)) for y in labels]
    return dict(inputs=inputs, data_samples=samples)


# -------------------------------------------------------------- detection
RM_DET = dict(type='RecursiveMix', alpha=1.0, min_visible=0.3)


def det_model(batch_augments=(RM_DET, )):
    """The repository's ATSS RecursiveMix config on a tiny ResNet-18."""
    from mmdet.registry import MODELS
    cfg = Config.fromfile(
        osp.join(REPO, 'configs', 'detection',
                 'atss_r50_fpn_rm-det_1x_coco.py'))
    m = cfg.model
    m.data_preprocessor.batch_augments = [dict(a) for a in batch_augments]
    m.backbone.update(TINY_RESNET,
                      frozen_stages=-1,
                      norm_eval=False,
                      init_cfg=None)
    m.neck.update(in_channels=TINY_CHANNELS, out_channels=16, num_outs=3)
    m.bbox_head.update(num_classes=3,
                       in_channels=16,
                       feat_channels=16,
                       stacked_convs=1,
                       norm_cfg=dict(type='GN',
                                     num_groups=8,
                                     requires_grad=True))
    m.bbox_head.anchor_generator.update(octave_base_scale=4,
                                        strides=[8, 16, 32])
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


def seg_model(batch_augments=(RM_SEG, ), size=(32, 32), pool_scales=(1, 2)):
    """The repository's UPerNet RecursiveMix config on a tiny ResNet-18
    (BN instead of SyncBN), 4 classes, padding to ``size``."""
    from mmseg.registry import MODELS
    cfg = Config.fromfile(
        osp.join(REPO, 'configs', 'segmentation',
                 'upernet_r50_rm-seg_512x512_80k_ade20k.py'))
    m = cfg.model
    bn = dict(type='BN', requires_grad=True)
    m.data_preprocessor.update(
        size=size, batch_augments=[dict(a) for a in batch_augments])
    m.backbone.update(TINY_RESNET, norm_cfg=bn, init_cfg=None)
    m.decode_head.update(in_channels=TINY_CHANNELS,
                         channels=16,
                         num_classes=4,
                         norm_cfg=bn,
                         pool_scales=pool_scales)
    m.auxiliary_head.update(in_channels=32,
                            channels=8,
                            num_classes=4,
                            norm_cfg=bn)
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


def history_of(aug):
    """A deep copy of a det/seg RecursiveMix history (for comparisons)."""
    return copy.deepcopy(aug.get_extra_state())


def same_history(a, b):
    """Whether two :func:`history_of` snapshots are equal."""
    if type(a) is not type(b):
        return False
    if isinstance(a, torch.Tensor):
        return a.dtype == b.dtype and a.shape == b.shape and bool(
            torch.equal(a, b))
    if isinstance(a, np.ndarray):
        return a.shape == b.shape and bool(np.array_equal(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(
            same_history(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(
            same_history(x, y) for x, y in zip(a, b))
    return a == b
