"""Tests of ``mixplugins.datasets.synthetic``: the generated COCO and ADE20K
sets are read back by mmdet's ``CocoDataset`` and mmseg's
``ADE20KDataset`` as written."""
import json
import os.path as osp

import numpy as np
import pytest
from mmengine.registry import DefaultScope
from PIL import Image

from mixplugins.datasets.synthetic import (SHAPE_CLASSES, make_ade20k_shapes,
                                           make_coco_shapes)


@pytest.fixture(scope='module')
def coco(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('coco'))
    return make_coco_shapes(root,
                            num_train=6,
                            num_val=2,
                            crowd_prob=0.5,
                            seed=1)


@pytest.fixture(scope='module')
def ade(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('ade'))
    return make_ade20k_shapes(root,
                              num_train=4,
                              num_val=2,
                              num_classes=150,
                              seed=2)


def test_coco_set_reads_back_through_mmdet(coco):
    from mmdet.datasets import CocoDataset
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    root = coco['data_root']
    with open(osp.join(root, coco['train_ann'])) as f:
        js = json.load(f)
    with DefaultScope.overwrite_default_scope('mmdet'):
        ds = CocoDataset(data_root=root,
                         ann_file=coco['train_ann'],
                         data_prefix=dict(img=coco['train_img']),
                         metainfo=dict(classes=SHAPE_CLASSES),
                         filter_cfg=dict(filter_empty_gt=False),
                         pipeline=[
                             dict(type='LoadImageFromFile'),
                             dict(type='LoadAnnotations',
                                  with_bbox=True,
                                  with_mask=True),
                         ])
    assert len(ds) == 6 == len(js['images'])
    crowd = 0
    for i in range(len(ds)):
        item = ds[i]
        img = js['images'][i]
        assert item['img'].shape == (img['height'], img['width'], 3)
        anns = [a for a in js['annotations'] if a['image_id'] == img['id']]
        assert any(not a['iscrowd'] for a in anns)
        boxes = item['gt_bboxes'].tensor.numpy()
        assert len(boxes) == len(anns)
        for k, a in enumerate(anns):
            x, y, w, h = a['bbox']
            assert np.allclose(boxes[k], [x, y, x + w, y + h], atol=1e-4)
            assert item['gt_bboxes_labels'][k] == a['category_id'] - 1
            assert bool(item['gt_ignore_flags'][k]) == bool(a['iscrowd'])
            crowd += a['iscrowd']
            # the decoded polygon mask matches the recorded pixel area
            area = float(item['gt_masks'].masks[k].sum())
            assert abs(area - a['area']) <= 0.2 * a['area'] + 4
    assert crowd > 0


def test_coco_is_deterministic(coco, tmp_path):
    again = make_coco_shapes(str(tmp_path),
                             num_train=6,
                             num_val=2,
                             crowd_prob=0.5,
                             seed=1)
    for key in ('train_ann', 'val_ann'):
        with open(osp.join(coco['data_root'], coco[key])) as f1, open(
                osp.join(again['data_root'], again[key])) as f2:
            assert f1.read() == f2.read()


def test_ade_set_reads_back_through_mmseg(ade):
    from mmseg.datasets import ADE20KDataset
    from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    root = ade['data_root']
    with DefaultScope.overwrite_default_scope('mmseg'):
        ds = ADE20KDataset(data_root=root,
                           data_prefix=dict(img_path=ade['train_img'],
                                            seg_map_path=ade['train_seg']),
                           pipeline=[
                               dict(type='LoadImageFromFile'),
                               dict(type='LoadAnnotations',
                                    reduce_zero_label=True),
                           ])
        items = [ds[i] for i in range(len(ds))]
    assert len(ds) == 4
    for item in items:
        raw = np.asarray(Image.open(item['seg_map_path']))
        assert item['img'].shape[:2] == raw.shape
        assert (raw > 0).any() and raw.max() <= 150
        # reduce_zero_label: 0 -> 255, k -> k - 1
        expect = np.where(raw == 0, 255, raw.astype(np.int64) - 1)
        assert np.array_equal(item['gt_seg_map'], expect)
    val = ADE20KDataset(data_root=root,
                        data_prefix=dict(img_path=ade['val_img'],
                                         seg_map_path=ade['val_seg']))
    assert len(val) == 2


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match='sizes'):
        make_coco_shapes(str(tmp_path), sizes=[(8, 8)])
    with pytest.raises(ValueError, match='num_classes'):
        make_ade20k_shapes(str(tmp_path), num_classes=300)
