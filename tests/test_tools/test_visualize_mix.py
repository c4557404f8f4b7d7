"""``mixplugins.engine.visualization`` (recording, drawing, the hook) and
``tools/visualize_mix.py``.

The recordings (the augments' ``last_params`` and the batch before and
after) are checked against what the augments did, computed here from the
recorded inputs with plain torch (the paper's formulas); the grids against
the layout's hand-computed pixel sizes; the hook in a real mmengine
``Runner`` writing through a ``LocalVisBackend``. That the recorder patches
nothing is tested in ``tests/test_engine/test_visualization.py``.
"""
import glob
import importlib.util
import os.path as osp
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.runner import Runner
from mmengine.structures import InstanceData, PixelData
from PIL import Image

import mixplugins.segmentation  # noqa: F401  (registers the seg augments)
from mixplugins.core.rmix import upsample_masks
from mixplugins.datasets.synthetic import (make_ade20k_shapes,
                                           make_coco_shapes)
from mixplugins.engine.visualization import (MixRenderer, MixVisualizationHook,
                                             record_mix, source_channel_order)

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
_spec = importlib.util.spec_from_file_location(
    'visualize_mix_tool', osp.join(REPO, 'tools', 'visualize_mix.py'))
visualize_mix = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(visualize_mix)

CLS_DIR = osp.join(REPO, 'configs', 'classification')
MEAN, STD = (10.0, 20.0, 30.0), (50.0, 60.0, 70.0)


def _size(rows, cols, cell=(160, 160)):
    """(width, height) of a grid: a 48 px caption band; a 110 px column of
    row labels; per tile a 46 px title band over the cell; 8 px gaps; at
    least 720 px wide."""
    return (max(110 + 8 + cols * (cell[1] + 8),
                720), 48 + 8 + rows * (46 + cell[0] + 8))


# ----------------------------------------------------------------- helpers
def _classifier(augment):
    from mmpretrain.registry import MODELS
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(
            dict(type='MixImageClassifier',
                 backbone=dict(type='DemoCNN', widths=(4, 8, 8)),
                 neck=dict(type='GlobalAveragePooling'),
                 head=dict(type='LinearClsHead',
                           num_classes=5,
                           in_channels=8,
                           loss=dict(type='CrossEntropyLoss', use_soft=True),
                           cal_acc=False),
                 data_preprocessor=dict(num_classes=5,
                                        mean=MEAN,
                                        std=STD,
                                        to_rgb=False),
                 train_cfg=dict(augments=[augment])))
    return model.train()


def _cls_batch(seed, n=6, size=16):
    from mmpretrain.structures import DataSample
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0,
                           256, (n, 3, size, size),
                           generator=g,
                           dtype=torch.uint8)
    labels = torch.randint(0, 5, (n, ), generator=g)
    samples = [DataSample().set_gt_label(int(lb)) for lb in labels]
    return dict(inputs=images, data_samples=samples), images, labels


# ----------------------------------------------------------- registration
@pytest.mark.parametrize('scope', ['mmpretrain', 'mmdet', 'mmseg'])
def test_hook_is_found_from_every_framework_scope(scope):
    registry = __import__(f'{scope}.registry', fromlist=['HOOKS']).HOOKS
    with DefaultScope.overwrite_default_scope(scope):
        hook = registry.build(dict(type='MixVisualizationHook', interval=3))
    assert type(hook) is MixVisualizationHook and hook.interval == 3


@pytest.mark.parametrize('kwargs, match', [
    (dict(interval=0), 'interval'),
    (dict(interval=2.0), 'interval'),
    (dict(max_images=0), 'max_images'),
    (dict(channel_order='yuv'), 'channel_order'),
    (dict(prefix=''), 'prefix'),
])
def test_hook_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MixVisualizationHook(**kwargs)


def test_source_channel_order_follows_the_pipeline():
    files = dict(pipeline=[dict(type='LoadImageFromFile'), dict(type='X')])
    arrays = dict(type='CIFAR10', pipeline=[dict(type='PackInputs')])
    assert source_channel_order(files) == 'bgr'
    assert source_channel_order(arrays) == 'rgb'
    assert source_channel_order(dict(type='RepeatDataset',
                                     dataset=files)) == 'bgr'


def test_renderer_denormalises_with_the_preprocessor_and_shows_rgb():
    from mmpretrain.models import ClsDataPreprocessor
    g = torch.Generator().manual_seed(0)
    raw = torch.randint(0, 256, (2, 3, 5, 7), generator=g, dtype=torch.uint8)
    for to_rgb, source, flipped in [(False, 'bgr', True), (True, 'bgr', False),
                                    (False, 'rgb', False),
                                    (True, 'rgb', True)]:
        pre = ClsDataPreprocessor(mean=MEAN, std=STD, to_rgb=to_rgb)
        x = pre(dict(inputs=raw.clone()))['inputs']
        image = MixRenderer.from_preprocessor(pre, None, source).to_uint8(x)
        # back to the raw pixels, in RGB order for display
        shown = raw.flip(1) if source == 'bgr' else raw
        assert np.array_equal(image,
                              shown.permute(0, 2, 3,
                                            1).numpy()), (to_rgb, source)
        assert MixRenderer.from_preprocessor(pre, None, source).bgr == flipped
    grey = MixRenderer().to_uint8(torch.full((1, 1, 2, 2), 300.0))
    assert grey.shape == (1, 2, 2, 3) and (grey == 255).all()


# ------------------------------------------------------------------- R-Mix
def test_record_rmix_holds_what_the_augment_used():
    model = _classifier(dict(type='RMix', alpha=1.0, grids=(2, 4)))
    pre = model.data_preprocessor
    aug = pre.batch_augments.augments[0]
    data, images, labels = _cls_batch(0)
    torch.manual_seed(3)
    with record_mix(pre) as rec:
        out = pre(data, True)

    (call, ) = rec.calls
    assert call.name == 'RMix'
    p = call.params
    assert p is aug.last_params  # the augment's own record of this step
    x = (images.float() - torch.tensor(MEAN).view(
        1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    torch.testing.assert_close(call.inputs, x)
    torch.testing.assert_close(call.targets, F.one_hot(labels, 5).float())

    # saliency: RMS over channels of d CE(clean logits) / d inputs
    xg = x.clone().requires_grad_(True)
    loss = F.cross_entropy(model(xg, mode='tensor'), labels)
    (grad, ) = torch.autograd.grad(loss, xg)
    torch.testing.assert_close(p.saliency, grad.pow(2).mean(1).sqrt())

    # masks: the cells at or above each image's quantile
    grid, q = p.grid, p.quantiles
    cells = F.adaptive_avg_pool2d(p.saliency[:, None], grid).flatten(1)
    for b in range(len(x)):
        keep = cells[b] >= torch.quantile(cells[b], q[b])
        assert torch.equal(p.masks[b], keep.view(grid, grid))
        up = keep.view(grid, grid).repeat_interleave(16 // grid, 0)
        up = up.repeat_interleave(16 // grid, 1)
        assert torch.equal(upsample_masks(p.masks, 16, 16)[b, 0], up)

    # the mixed batch the model saw, from the recorded masks/partners/lam
    index, lam = p.index, float(p.lam)
    m1 = upsample_masks(p.masks, 16, 16)
    m2 = m1[index]
    expected = torch.where(m1 == m2, lam * x + (1 - lam) * x[index],
                           torch.where(m1, x, x[index]))
    torch.testing.assert_close(call.mixed, expected)
    torch.testing.assert_close(out['inputs'], call.mixed)
    torch.testing.assert_close(
        torch.stack([s.gt_score for s in out['data_samples']]),
        call.mixed_targets)

    # recording changes nothing: the same seed gives the same step
    data2, _, _ = _cls_batch(0)
    torch.manual_seed(3)
    out2 = pre(data2, True)
    assert torch.equal(out2['inputs'], out['inputs'])
    for a, b in zip(aug.last_params, p):
        assert a == b if isinstance(a, int) or a is None else torch.equal(a, b)


def test_record_mix_cannot_nest():
    model = _classifier(dict(type='RMix'))
    with record_mix(model.data_preprocessor):
        with pytest.raises(RuntimeError, match='nested'):
            with record_mix(model.data_preprocessor):
                pass


# --------------------------------------------------- RecursiveMix (cls)
def test_recursivemix_box_in_the_rendered_image_is_the_history():
    model = _classifier(dict(type='RecursiveMix', alpha=1.0))
    pre = model.data_preprocessor
    renderer = MixRenderer.from_preprocessor(pre, None, 'rgb', max_images=4)
    first, _, _ = _cls_batch(1)
    out1 = pre(first, True)
    with torch.no_grad():
        model.loss(out1['inputs'], out1['data_samples'])  # fills history
    second, _, _ = _cls_batch(2)
    torch.manual_seed(0)
    with record_mix(pre) as rec:
        pre(second, True)
    (call, ) = rec.calls
    assert call.params is pre.batch_augments.augments[0].last_params
    # the history being pasted is the previous step's mixed batch
    torch.testing.assert_close(call.sources, out1['inputs'])
    assert torch.equal(call.params.index, torch.arange(6))
    x1, y1, x2, y2 = (int(v) for v in call.params.boxes[0])
    assert (call.params.boxes == call.params.boxes[0]).all()
    assert x2 > x1 and y2 > y1  # seed 0 draws a non-empty box

    mixed = renderer.to_uint8(call.mixed)
    inputs = renderer.to_uint8(call.inputs)
    pasted = renderer.to_uint8(
        F.interpolate(out1['inputs'], size=(y2 - y1, x2 - x1), mode='nearest'))
    inside = np.zeros(mixed.shape[1:3], bool)
    inside[y1:y2, x1:x2] = True
    assert np.array_equal(mixed[:, y1:y2, x1:x2], pasted)
    assert np.array_equal(mixed[:, ~inside], inputs[:, ~inside])
    lam = 1 - (x2 - x1) * (y2 - y1) / 16**2
    torch.testing.assert_close(call.params.lam, torch.full((6, ), lam))
    hist_targets = torch.stack([s.gt_score for s in out1['data_samples']])
    torch.testing.assert_close(call.source_targets, hist_targets)
    torch.testing.assert_close(call.mixed_targets,
                               lam * call.targets + (1 - lam) * hist_targets)

    ((name, grid), ) = renderer.render(rec)
    assert name == 'mix_RecursiveMix'
    # 3 rows (input, history, mixed) x 4 columns of 160 px cells
    assert grid.shape == (*_size(3, 4)[::-1], 3) == (698, 790, 3)
    assert grid.dtype == np.uint8


# ------------------------------------------------- RecursiveMix (det)
def _det_batch(seed, sizes):
    from mmdet.structures import DetDataSample
    g = torch.Generator().manual_seed(seed)
    inputs, samples = [], []
    for h, w in sizes:
        inputs.append(
            torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8))
        sample = DetDataSample(metainfo=dict(img_shape=(h, w)))
        inst = InstanceData()
        inst.bboxes = torch.tensor([[2., 3., w / 2, h / 2],
                                    [w / 3, h / 3, w - 1., h - 2.]])
        inst.labels = torch.tensor([0, 2])
        sample.gt_instances = inst
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def test_record_det_recursivemix_boxes_and_history():
    from mmdet.registry import MODELS
    with DefaultScope.overwrite_default_scope('mmdet'):
        pre = MODELS.build(
            dict(type='DetDataPreprocessor',
                 mean=MEAN,
                 std=STD,
                 bgr_to_rgb=True,
                 pad_size_divisor=8,
                 batch_augments=[dict(type='RecursiveMix', alpha=1.0)]))
    pre.train()
    sizes = [(40, 48), (32, 40), (40, 40)]
    out1 = pre(_det_batch(0, sizes), True)
    torch.manual_seed(1)
    with record_mix(pre) as rec:
        out2 = pre(_det_batch(1, sizes), True)
    (call, ) = rec.calls
    p = call.params
    assert p is pre.batch_augments[0].last_params
    torch.testing.assert_close(call.sources, out1['inputs'])
    assert torch.equal(p.index, torch.arange(3))
    assert len(call.targets) == 3 and 'bboxes' in call.targets[0]
    # the history's instances are the previous step's
    for i in range(3):
        torch.testing.assert_close(call.source_targets[i]['bboxes'],
                                   out1['data_samples'][i].gt_instances.bboxes)
    for i, (h, w) in enumerate(sizes):
        assert p.src_boxes[i].tolist() == [0, 0, w, h]
        x1, y1, x2, y2 = (int(v) for v in p.boxes[i])
        assert 0 <= x1 <= x2 <= w and 0 <= y1 <= y2 <= h
        expected = call.inputs[i].clone()
        if x2 > x1 and y2 > y1:
            # the history image's valid area, resized into the box
            src = out1['inputs'][i][None, :, :h, :w]
            expected[:, y1:y2, x1:x2] = F.interpolate(src,
                                                      size=(y2 - y1, x2 - x1),
                                                      mode='nearest')[0]
        torch.testing.assert_close(call.mixed[i], expected)
        after = out2['data_samples'][i].gt_instances
        torch.testing.assert_close(call.mixed_targets[i]['bboxes'],
                                   after.bboxes)
    renderer = MixRenderer.from_preprocessor(pre,
                                             dict(classes=('a', 'b', 'c')),
                                             'bgr')
    ((name, grid), ) = renderer.render(rec, title='t')
    # 3 rows (input, pasted history, mixed) of 160 px cells, 3 columns of
    # 40x48 padded images: cells 160 x 192 px
    assert name == 'mix_RecursiveMix'
    assert grid.shape == (*_size(3, 3, (160, 192))[::-1], 3)


def test_record_seg_cutmix_pastes_the_partners_region():
    from mmseg.registry import MODELS
    with DefaultScope.overwrite_default_scope('mmseg'):
        pre = MODELS.build(
            dict(type='MixSegDataPreProcessor',
                 mean=MEAN,
                 std=STD,
                 size=(24, 24),
                 batch_augments=[dict(type='CutMix', alpha=1.0)]))
    pre.train()
    from mmseg.structures import SegDataSample
    g = torch.Generator().manual_seed(0)
    inputs, samples = [], []
    for _ in range(4):
        inputs.append(
            torch.randint(0, 256, (3, 24, 24), generator=g, dtype=torch.uint8))
        s = SegDataSample(metainfo=dict(img_shape=(24, 24)))
        s.gt_sem_seg = PixelData(
            data=torch.randint(0, 6, (1, 24, 24), generator=g))
        samples.append(s)
    torch.manual_seed(5)
    with record_mix(pre) as rec:
        pre(dict(inputs=inputs, data_samples=samples), True)
    (call, ) = rec.calls
    p = call.params
    assert p is pre.batch_augments[0].last_params
    assert call.sources is None  # pasted from the batch itself
    x1, y1, x2, y2 = (int(v) for v in p.boxes[0])
    assert (p.boxes == p.boxes[0]).all()
    assert x2 > x1 and y2 > y1  # seed 5 draws a non-empty box
    lam = 1 - (x2 - x1) * (y2 - y1) / 24**2
    torch.testing.assert_close(p.lam, torch.full((4, ), lam))
    inside = torch.zeros(24, 24, dtype=torch.bool)
    inside[y1:y2, x1:x2] = True
    for i in range(4):
        # the partner's box region, pixels and labels; the rest unchanged
        j = int(p.index[i])
        assert torch.equal(call.mixed[i][:, inside], call.inputs[j][:, inside])
        assert torch.equal(call.mixed[i][:, ~inside], call.inputs[i][:,
                                                                     ~inside])
        assert torch.equal(call.mixed_targets[i]['sem_seg'][inside],
                           call.targets[j]['sem_seg'][inside])
        assert torch.equal(call.mixed_targets[i]['sem_seg'][~inside],
                           call.targets[i]['sem_seg'][~inside])
    renderer = MixRenderer.from_preprocessor(pre, None, 'bgr')
    ((_, grid), ) = renderer.render(rec)
    # 6 rows: input, labels, pasted image, pasted labels, mixed, mixed labels
    assert grid.shape == (*_size(6, 4)[::-1], 3)


# ------------------------------------------------------------------ tool
def _png(path):
    with Image.open(path) as img:
        arr = np.asarray(img.convert('RGB'))
    assert arr.std() > 10, f'{path} looks blank'
    return arr.shape[1], arr.shape[0]


@pytest.fixture(scope='module')
def digits_root(tmp_path_factory):
    from mixplugins.datasets import prepare_digits
    root = str(tmp_path_factory.mktemp('data') / 'digits')
    prepare_digits(root)
    return root


@pytest.mark.parametrize('config, png, rows, fresh', [
    ('demo_digits_rmix.py', 'batch0_mix_RMix.png', 4, True),
    ('demo_digits_rm.py', 'batch0_mix_RecursiveMix.png', 3, False),
])
def test_tool_on_the_demo_configs(tmp_path, digits_root, config, png, rows,
                                  fresh):
    # `fresh`: the digits are not there yet, the tool writes them
    digits = tmp_path / 'digits' if fresh else Path(digits_root)
    out = tmp_path / 'out'
    assert visualize_mix.main([
        osp.join(CLS_DIR, config), '--output-dir',
        str(out), '--num-batches', '1', '--max-images', '4', '--cfg-options',
        'train_dataloader.batch_size=4',
        f'train_dataloader.dataset.data_root={digits}'
    ]) == 0
    assert (digits / 'digits.json').is_file()  # prepared, no download
    assert sorted(p.name for p in out.iterdir()) == [png]
    # 4 columns of 32 px digits in 160 px cells
    assert _png(out / png) == _size(rows, 4)


def test_tool_on_the_det_rm_config(tmp_path):
    info = make_coco_shapes(str(tmp_path / 'coco'),
                            num_train=4,
                            num_val=1,
                            sizes=((64, 80), ))
    out = tmp_path / 'out'
    visualize_mix.main([
        osp.join(REPO, 'configs', 'detection',
                 'atss_r50_fpn_rm-det_1x_coco.py'), '--output-dir',
        str(out), '--num-batches', '1', '--cfg-options',
        f'train_dataloader.dataset.data_root={info["data_root"]}',
        'train_dataloader.dataset.metainfo.classes='
        '[rectangle,ellipse,triangle]',
        'train_dataloader.dataset.filter_cfg.min_size=16',
        'train_dataloader.dataset.pipeline.2.scale=(128,96)'
    ])
    # 64x80 images resized to 96x120, padded to 96x128: 160 x 213 px cells;
    # 2 columns are narrower than the 720 px minimum width
    assert _png(out / 'batch0_mix_RecursiveMix.png') == (720, 698)
    assert _size(3, 2, (160, 213)) == (720, 698)


def test_tool_on_the_seg_rm_config(tmp_path):
    make_ade20k_shapes(str(tmp_path / 'ade'),
                       num_train=4,
                       num_val=1,
                       sizes=((64, 80), (48, 64)))
    out = tmp_path / 'out'
    visualize_mix.main([
        osp.join(REPO, 'configs', 'segmentation',
                 'upernet_r50_rm-seg_512x512_80k_ade20k.py'), '--output-dir',
        str(out), '--num-batches', '2', '--cfg-options',
        f'train_dataloader.dataset.data_root={tmp_path / "ade"}',
        'train_dataloader.dataset.pipeline.2.scale=(128,64)',
        'train_dataloader.dataset.pipeline.3.crop_size=(64,64)',
        'model.data_preprocessor.size=(64,64)'
    ])
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        'batch0_mix_RecursiveMix.png', 'batch1_mix_RecursiveMix.png'
    ]
    for name in names:  # 6 rows of 64 px crops, 2 columns
        assert _png(out / name) == _size(6, 2) == (720, 1340)


# ------------------------------------------------------------------ hook
def test_hook_writes_every_n_iterations_without_an_extra_forward(
        tmp_path, digits_root):
    cfg = Config.fromfile(osp.join(CLS_DIR, 'demo_digits_rmix.py'))
    cfg.train_dataloader.batch_size = 4
    cfg.train_dataloader.dataset.data_root = digits_root
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=5)
    for key in ('val', 'test'):
        cfg[f'{key}_cfg'] = cfg[f'{key}_dataloader'] = None
        cfg[f'{key}_evaluator'] = None
    cfg.param_scheduler = []
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook',
                                        interval=-1,
                                        save_last=False)
    cfg.custom_hooks = [
        dict(type='MixVisualizationHook', interval=2, max_images=3)
    ]
    cfg.work_dir = str(tmp_path / 'work')
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        runner = Runner.from_cfg(cfg)
        pre = runner.model.data_preprocessor
        calls = []
        pre.register_forward_pre_hook(lambda m, a: calls.append(1))
        runner.train()
    paths = sorted(
        glob.glob(osp.join(cfg.work_dir, '*', 'vis_data', 'vis_image',
                           '*.png')))
    # iterations 2 and 4 of 5; one preprocessor call per iteration
    assert [osp.basename(p)
            for p in paths] == ['mix_RMix_2.png', 'mix_RMix_4.png']
    assert len(calls) == 5
    # the hook's recorder is gone: only the counting hook is left
    assert len(pre._forward_pre_hooks) == 1 and not pre._forward_hooks
    # 4 rows x 3 columns of 160 px cells, widened to the minimum width
    assert _png(paths[0]) == _size(4, 3) == (720, 912)
