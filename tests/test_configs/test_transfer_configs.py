"""Recipe checks of the COCO / ADE20K transfer configs (RecursiveMix README
rows), against the recipe of recursivemix_spec §2-3 and against mmdet's /
mmseg's own shipped configs (an independent source for the stock parts)."""
import copy
import os.path as osp
import re

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DET = osp.join(REPO, 'configs', 'detection')
SEG = osp.join(REPO, 'configs', 'segmentation')

# file -> (README row, reported number, backbone token or the exact
# baseline checkpoint)
DET_ROWS = {
    'atss_r50_fpn_1x_coco.py': ("'ResNet-50'", '39.4', None),
    'atss_r50-cutmix_fpn_1x_coco.py': ("'+ CutMix'", '40.1', 'cutmix'),
    'atss_r50-rm_fpn_1x_coco.py': ("'+ RecursiveMix'", '41.5', 'rm'),
}
SEG_ROWS = {
    'upernet_r50_512x512_80k_ade20k.py': ("'ResNet-50'", '40.40', 'in1k'),
    'upernet_r50-cutmix_512x512_80k_ade20k.py':
    ("'+ CutMix'", '41.24', 'cutmix'),
    'upernet_r50-rm_512x512_80k_ade20k.py':
    ("'+ RecursiveMix'", '42.30', 'rm'),
}
TOKENS = ('cutmix', 'rm')


def _tokens(path):
    """Path tokens split at / _ - . (so 'r50_rm_in1k' holds 'rm')."""
    return set(re.split(r'[/_.\-]', path))


def _shipped(package, rel):
    mod = __import__(package)
    path = osp.join(osp.dirname(mod.__file__), '.mim', 'configs', rel)
    assert osp.isfile(path), f'{package} ships no {rel}'
    return Config.fromfile(path)


def _check_header(path, row, number):
    with open(path) as f:
        head = [next(f) for _ in range(3)]
    assert head[0].startswith('# ') and row in head[0], head[0]
    assert f'Reproduces: {number} ' in ''.join(head), head


def _check_backbone_checkpoint(checkpoint, token):
    if token is None:
        return
    tokens = _tokens(checkpoint)
    assert token in tokens, checkpoint
    # a CutMix config must not point to an RM checkpoint, and vice versa
    assert not (set(TOKENS) - {token}) & tokens, checkpoint


@pytest.mark.parametrize('name', sorted(DET_ROWS))
def test_detection_recipe(name):
    row, number, token = DET_ROWS[name]
    path = osp.join(DET, name)
    _check_header(path, row, number)
    cfg = Config.fromfile(path)

    assert cfg.default_scope == 'mmdet'
    assert cfg.custom_imports == dict(
        imports=['mixplugins'], allow_failed_imports=False)
    # total batch 16 = 8 GPUs x 2, recorded for auto LR scaling (off)
    assert cfg.train_dataloader.batch_size == 2
    assert cfg.auto_scale_lr == dict(enable=False, base_batch_size=16)
    # SGD 0.01, momentum 0.9, wd 1e-4; warmup 500 iters from 0.001; steps
    assert cfg.optim_wrapper.optimizer == dict(
        type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0001)
    warmup, steps = cfg.param_scheduler
    assert warmup == dict(
        type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500)
    assert steps['type'] == 'MultiStepLR' and steps['by_epoch']
    assert steps['milestones'] == [8, 11] and steps['gamma'] == 0.1
    assert cfg.train_cfg.max_epochs == 12 and steps['end'] == 12

    backbone = cfg.model.backbone
    assert (backbone.type, backbone.depth) == ('ResNet', 50)
    assert backbone.frozen_stages == 1 and backbone.norm_eval is True
    assert backbone.init_cfg.type == 'Pretrained'
    if token is None:  # mmdet's model zoo baseline
        assert backbone.init_cfg.checkpoint == 'torchvision://resnet50'
    _check_backbone_checkpoint(backbone.init_cfg.checkpoint, token)
    head = cfg.model.bbox_head
    assert head.type == 'ATSSHead' and head.num_classes == 80
    assert (head.loss_cls.gamma, head.loss_cls.alpha) == (2.0, 0.25)
    assert (head.loss_bbox.type, head.loss_bbox.loss_weight) == ('GIoULoss',
                                                                 2.0)
    assert cfg.model.train_cfg.assigner == dict(type='ATSSAssigner', topk=9)
    assert cfg.model.test_cfg.nms.iou_threshold == 0.6
    assert cfg.model.test_cfg.score_thr == 0.05
    assert cfg.model.test_cfg.max_per_img == 100

    # Everything but the backbone checkpoint is mmdet's stock ATSS 1x.
    stock = _shipped('mmdet', 'atss/atss_r50_fpn_1x_coco.py')
    ours = copy.deepcopy(cfg.model.to_dict())
    ours['backbone'].pop('init_cfg')
    theirs = stock.model.to_dict()
    theirs['backbone'].pop('init_cfg')
    assert ours == theirs
    for key in ('param_scheduler', 'train_cfg', 'train_pipeline',
                'test_pipeline'):
        assert cfg[key] == stock[key], key
    assert cfg.optim_wrapper == stock.optim_wrapper
    assert cfg.train_dataloader.dataset == stock.train_dataloader.dataset


@pytest.mark.parametrize('name', sorted(SEG_ROWS))
def test_segmentation_recipe(name):
    row, number, token = SEG_ROWS[name]
    path = osp.join(SEG, name)
    _check_header(path, row, number)
    cfg = Config.fromfile(path)

    assert cfg.default_scope == 'mmseg'
    assert cfg.custom_imports == dict(
        imports=['mixplugins'], allow_failed_imports=False)
    assert cfg.train_dataloader.batch_size == 2
    assert cfg.auto_scale_lr == dict(enable=False, base_batch_size=16)
    # AdamW 1e-4 / wd 1e-4 with nothing left of the stock SGD dict
    assert cfg.optim_wrapper.optimizer == dict(
        type='AdamW',
        lr=0.0001,
        betas=(0.9, 0.999),
        eps=1e-08,
        weight_decay=0.0001)
    assert cfg.param_scheduler == [
        dict(
            type='PolyLR',
            eta_min=0.0,
            power=0.9,
            begin=0,
            end=80000,
            by_epoch=False)
    ]
    assert cfg.train_cfg.type == 'IterBasedTrainLoop'
    assert cfg.train_cfg.max_iters == 80000
    assert cfg.train_cfg.val_interval == 8000

    model = cfg.model
    assert model.pretrained is None
    backbone = model.backbone
    assert (backbone.type, backbone.depth) == ('ResNet', 50)
    assert backbone.norm_cfg.type == 'SyncBN'
    assert backbone.norm_eval is False
    assert backbone.init_cfg.type == 'Pretrained'
    _check_backbone_checkpoint(backbone.init_cfg.checkpoint, token)
    assert model.data_preprocessor.size == (512, 512)
    assert model.decode_head.num_classes == 150
    assert model.auxiliary_head.num_classes == 150
    assert model.auxiliary_head.loss_decode.loss_weight == 0.4

    steps = {t['type']: t for t in cfg.train_pipeline}
    assert steps['LoadAnnotations']['reduce_zero_label'] is True
    assert steps['RandomResize']['scale'] == (2048, 512)
    assert steps['RandomResize']['ratio_range'] == (0.5, 2.0)
    assert steps['RandomCrop']['crop_size'] == (512, 512)
    assert steps['RandomCrop']['cat_max_ratio'] == 0.75
    assert steps['RandomFlip']['prob'] == 0.5
    assert 'PhotoMetricDistortion' in steps

    # Everything else is mmseg's stock UPerNet-R50 80k ADE20K config.
    stock = _shipped('mmseg', 'upernet/upernet_r50_4xb4-80k_ade20k-512x512.py')
    ours, theirs = model.to_dict(), stock.model.to_dict()
    for d in (ours, theirs):
        d.pop('pretrained')
        for k in ('type', 'init_cfg'):
            d['backbone'].pop(k, None)
    assert stock.model.backbone.type == 'ResNetV1c'  # what we replace
    theirs['backbone'].pop('pretrained', None)
    assert ours == theirs
    for key in ('train_pipeline', 'test_pipeline', 'val_evaluator',
                'default_hooks'):
        assert cfg[key] == stock[key], key
    assert cfg.train_dataloader.dataset == stock.train_dataloader.dataset


def _rm_token_paths():
    paths = {}
    for folder, rows in ((DET, DET_ROWS), (SEG, SEG_ROWS)):
        for name in rows:
            cfg = Config.fromfile(osp.join(folder, name))
            paths[name] = cfg.model.backbone.init_cfg.checkpoint
    return paths


def test_transfer_checkpoints_differ_per_row():
    paths = _rm_token_paths()
    det = [paths[n] for n in sorted(DET_ROWS)]
    seg = [paths[n] for n in sorted(SEG_ROWS)]
    assert len(set(det)) == 3 and len(set(seg)) == 3
    # the same ImageNet backbones are shared by detection and segmentation
    assert paths['atss_r50-rm_fpn_1x_coco.py'] == paths[
        'upernet_r50-rm_512x512_80k_ade20k.py']
    assert paths['atss_r50-cutmix_fpn_1x_coco.py'] == paths[
        'upernet_r50-cutmix_512x512_80k_ade20k.py']


@pytest.mark.parametrize('name', sorted(DET_ROWS))
def test_detection_model_builds(name):
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    cfg = Config.fromfile(osp.join(DET, name))
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = MODELS.build(cfg.model)
    assert type(model).__name__ == 'ATSS'
    assert model.backbone.init_cfg == cfg.model.backbone.init_cfg
    # frozen_stages=1 freezes the stem and stage 1
    assert not model.backbone.conv1.weight.requires_grad
    assert not any(p.requires_grad for p in model.backbone.layer1.parameters())
    assert all(p.requires_grad for p in model.backbone.layer2.parameters())
    with torch.no_grad():
        feats = model.extract_feat(torch.zeros(1, 3, 64, 64))
    assert [f.shape[1] for f in feats] == [256] * 5


@pytest.mark.parametrize('name', sorted(SEG_ROWS))
def test_segmentation_model_builds(name):
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    cfg = Config.fromfile(osp.join(SEG, name))
    with DefaultScope.overwrite_default_scope('mmseg'):
        model = MODELS.build(cfg.model)
    assert type(model).__name__ == 'EncoderDecoder'
    backbone = model.backbone
    assert type(backbone).__name__ == 'ResNet'
    # torchvision stem (one 7x7 conv), i.e. not ResNetV1c's deep stem
    assert not backbone.deep_stem
    assert tuple(backbone.conv1.weight.shape) == (64, 3, 7, 7)
    assert backbone.init_cfg == cfg.model.backbone.init_cfg
    assert isinstance(backbone.bn1, torch.nn.SyncBatchNorm)
    assert model.decode_head.num_classes == 150
