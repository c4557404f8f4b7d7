"""The stock mmdet / mmseg ``tools/train.py`` train a stock config plus the
user's diff (``custom_imports`` and the batch augment); no tool or config
of this repository is involved.

Both the tools and the configs are the copies shipped inside the installed
wheels (``<pkg>/.mim``). Each run writes two configs into ``tmp_path``:

* ``user.py``: ``_base_`` = the stock config, plus the *diff* below, the
  lines README.md shows (asserted by ``test_readme_shows_the_tested_diff``);
* ``shrunk.py``: ``_base_ = ['./user.py']`` plus test-only shrinking
  (ResNet-18 without pretrained weights, small images, batch 2, no workers,
  2 iterations then validation, generated data) and a probe hook, loaded
  from ``tmp_path`` by its dotted name, that records the augment calls and
  the validation metrics.
"""
import importlib.util
import json
import os.path as osp
import subprocess
import sys

import pytest
import torch

from mixplugins.datasets.synthetic import (SHAPE_CLASSES, make_ade20k_shapes,
                                           make_coco_shapes)
from tests._helpers import DET_PIPELINES, SEG_PIPELINES, tool_env

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

# ----------------------------------------------------------- the user's diff
DET_DIFF = """\
custom_imports = dict(imports=['mixplugins'])
model = dict(data_preprocessor=dict(
    batch_augments=[dict(type='RecursiveMix')]))
"""
SEG_DIFF = """\
custom_imports = dict(imports=['mixplugins'])
model = dict(data_preprocessor=dict(
    type='MixSegDataPreProcessor',
    batch_augments=[dict(type='RecursiveMix')]))
"""
SEG_CUTMIX = "dict(type='CutMix', alpha=1.0)"
SEG_CUTMIX_DIFF = SEG_DIFF.replace("dict(type='RecursiveMix')", SEG_CUTMIX)

# The `_base_` lines README.md shows for the two stock configs.
DET_README_BASE = "_base_ = ['mmdet::atss/atss_r50_fpn_1x_coco.py']"
SEG_README_BASE = ("_base_ = ['mmseg::upernet/"
                   "upernet_r50_4xb4-80k_ade20k-512x512.py']")


def _mim(package: str, *parts: str) -> str:
    """A file shipped in an installed OpenMMLab wheel's ``.mim`` folder."""
    spec = importlib.util.find_spec(package)
    path = osp.join(osp.dirname(spec.origin), '.mim', *parts)
    assert osp.isfile(path), path
    return path


DET_TRAIN = ('mmdet', 'tools', 'train.py')
DET_CONFIG = ('mmdet', 'configs', 'atss', 'atss_r50_fpn_1x_coco.py')
SEG_TRAIN = ('mmseg', 'tools', 'train.py')
SEG_CONFIG = ('mmseg', 'configs', 'upernet',
              'upernet_r50_4xb4-80k_ade20k-512x512.py')

# ------------------------------------------------------ test-only additions
PROBE = r'''
"""Records what the batch augments did and the validation metrics."""
import json

import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper


class AugmentProbe(Hook):

    def __init__(self, out):
        self.out = out
        self.rec = dict(augments=[], calls=[], val_metrics={})

    def before_train(self, runner):
        model = runner.model
        if is_model_wrapper(model):
            model = model.module
        pre = model.data_preprocessor
        self.rec['preprocessor'] = type(pre).__name__
        self.rec['sync_bn'] = sum(
            isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())
        self.rec['bn'] = sum(
            isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
            for m in model.modules())
        for aug in pre.batch_augments:
            cls = type(aug)
            self.rec['augments'].append(cls.__module__ + '.' + cls.__name__)
            aug.register_forward_pre_hook(self._before)
            aug.register_forward_hook(self._after)

    def _before(self, mod, args):
        self._inputs = args[0].detach().clone()
        history = getattr(mod, 'history', None)
        self._hist = history is not None and len(history) > 0

    def _after(self, mod, args, output):
        self.rec['calls'].append(
            dict(training=mod.training, history=self._hist,
                 shape=list(self._inputs.shape),
                 out_shape=list(output[0].shape)))

    def after_val_epoch(self, runner, metrics=None):
        self.rec['val_metrics'].update(
            {k: float(v) for k, v in (metrics or {}).items()})

    def after_train(self, runner):
        self.rec['iters'] = runner.iter
        with open(self.out, 'w') as f:
            json.dump(self.rec, f)
'''

COMMON_SHRINK = """
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root,
                                     pipeline=train_pipeline, **dataset))
val_dataloader = dict(num_workers=0, persistent_workers=False,
                      dataset=dict(data_root=data_root,
                                   pipeline=test_pipeline, **dataset))
test_dataloader = val_dataloader
default_hooks = dict(logger=dict(interval=1))
custom_hooks = [dict(type='aug_probe.AugmentProbe', out={probe_out!r})]
randomness = dict(seed=0)
"""

DET_SHRINK = """_base_ = ['./user.py']
data_root = {root!r}
dataset = dict(metainfo=dict(classes={classes!r}))
""" + DET_PIPELINES + """model = dict(
    backbone=dict(depth=18, init_cfg=None),
    neck=dict(in_channels=[64, 128, 256, 512], out_channels=32),
    bbox_head=dict(num_classes={num_classes}, in_channels=32,
                   feat_channels=32, stacked_convs=1,
                   norm_cfg=dict(type='GN', num_groups=8,
                                 requires_grad=True)),
    test_cfg=dict(score_thr=0.0))  # random init: keep the detections
val_evaluator = dict(ann_file=data_root + {val_ann!r})
test_evaluator = val_evaluator
train_cfg = dict(max_epochs=1, val_interval=1)
""" + COMMON_SHRINK

SEG_SHRINK = """_base_ = ['./user.py']
data_root = {root!r}
dataset = dict()
""" + SEG_PIPELINES + """model = dict(
    pretrained=None,
    data_preprocessor=dict(size=crop_size),
    backbone=dict(depth=18),
    decode_head=dict(in_channels=[64, 128, 256, 512], channels=32),
    auxiliary_head=dict(in_channels=256, channels=16))
train_cfg = dict(max_iters=2, val_interval=2)
default_hooks = dict(checkpoint=dict(interval=2))
""" + COMMON_SHRINK


def _run_tool(tmp_path, stock_config: tuple, diff: str, shrink: str,
              tool: tuple, extra_args=(),
              work_dir='work') -> subprocess.CompletedProcess:
    """Write the configs and the probe into ``tmp_path`` and run the stock
    tool there on ``shrunk.py``."""
    user = tmp_path / 'user.py'
    user.write_text(f'_base_ = [{_mim(*stock_config)!r}]\n' + diff)
    (tmp_path / 'shrunk.py').write_text(shrink)
    (tmp_path / 'aug_probe.py').write_text(PROBE)
    env = tool_env(tmp_path, threads=2)
    return subprocess.run([
        sys.executable,
        _mim(*tool), 'shrunk.py', '--work-dir',
        str(tmp_path / work_dir), *extra_args
    ],
                          cwd=str(tmp_path),
                          env=env,
                          capture_output=True,
                          text=True,
                          timeout=600)


def _train(tmp_path, stock_config: tuple, diff: str, shrink: str,
           tool: tuple) -> dict:
    """Run the stock tool, expect success, return what the probe recorded
    (plus the work dir and the output)."""
    proc = _run_tool(tmp_path, stock_config, diff, shrink, tool)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    with open(tmp_path / 'probe.json') as f:
        rec = json.load(f)
    rec['work_dir'] = tmp_path / 'work'
    rec['log'] = out
    return rec


def _history(checkpoint) -> dict:
    ckpt = torch.load(str(checkpoint), map_location='cpu', weights_only=False)
    return ckpt['state_dict'][
        'data_preprocessor.batch_augments.0.history._extra_state']


@pytest.mark.slow
def test_stock_mmdet_train_atss_with_recursivemix(tmp_path):
    info = make_coco_shapes(str(tmp_path / 'coco'), num_train=4, num_val=1)
    # the generator writes the stock COCO layout (ann_file, data_prefix)
    assert (info['train_ann'],
            info['train_img']) == ('annotations/instances_train2017.json',
                                   'train2017/')
    shrink = DET_SHRINK.format(root=info['data_root'] + '/',
                               classes=tuple(SHAPE_CLASSES),
                               num_classes=len(SHAPE_CLASSES),
                               val_ann=info['val_ann'],
                               probe_out=str(tmp_path / 'probe.json'))
    rec = _train(tmp_path, DET_CONFIG, DET_DIFF, shrink, DET_TRAIN)

    assert rec['preprocessor'] == 'DetDataPreprocessor'
    assert rec['augments'] == [
        'mixplugins.detection.recursivemix.RecursiveMix'
    ]
    # 4 images, batch 2, 1 epoch: 2 training calls, the first has no
    # history yet, the second pastes the first batch; none in validation
    assert rec['iters'] == 2
    assert [c['history'] for c in rec['calls']] == [False, True]
    assert all(c['training'] for c in rec['calls'])
    for c in rec['calls']:
        assert c['out_shape'] == c['shape']
        assert c['shape'][:2] == [2, 3]
        assert c['shape'][2] % 32 == 0 and c['shape'][3] % 32 == 0
    # the augment's history (last mixed batch) is saved in the checkpoint
    hist = _history(rec['work_dir'] / 'epoch_1.pth')
    assert hist['inputs'].shape[:2] == (2, 3)
    assert len(hist['samples']) == 2
    assert 'coco/bbox_mAP' in rec['val_metrics']
    assert 0.0 <= rec['val_metrics']['coco/bbox_mAP'] <= 1.0
    assert 'coco/bbox_mAP' in rec['log']


@pytest.mark.slow
def test_stock_mmdet_train_needs_the_custom_imports_line(tmp_path):
    """Without the diff's ``custom_imports`` the stock tool cannot build
    the augment (it fails when the model is built, before any data)."""
    diff = DET_DIFF.replace("custom_imports = dict(imports=['mixplugins'])\n",
                            '')
    assert 'custom_imports' not in diff
    shrink = DET_SHRINK.format(root=str(tmp_path / 'none') + '/',
                               classes=tuple(SHAPE_CLASSES),
                               num_classes=len(SHAPE_CLASSES),
                               val_ann='none.json',
                               probe_out=str(tmp_path / 'probe.json'))
    proc = _run_tool(tmp_path, DET_CONFIG, diff, shrink, DET_TRAIN)
    assert proc.returncode != 0
    assert 'RecursiveMix is not in the mmdet::model registry' in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize('augment', ['RecursiveMix', 'CutMix'])
def test_stock_mmseg_train_upernet_with_augment(tmp_path, augment):
    info = make_ade20k_shapes(str(tmp_path / 'ade'),
                              num_train=4,
                              num_val=1,
                              sizes=((64, 80), (48, 64)))
    assert (info['train_img'], info['train_seg']) == ('images/training',
                                                      'annotations/training')
    diff = SEG_DIFF if augment == 'RecursiveMix' else SEG_CUTMIX_DIFF
    shrink = SEG_SHRINK.format(root=info['data_root'],
                               probe_out=str(tmp_path / 'probe.json'))
    rec = _train(tmp_path, SEG_CONFIG, diff, shrink, SEG_TRAIN)

    assert rec['preprocessor'] == 'MixSegDataPreProcessor'
    module = dict(RecursiveMix='recursivemix.RecursiveMix',
                  CutMix='cutmix.SegCutMix')[augment]
    assert rec['augments'] == ['mixplugins.segmentation.' + module]
    assert rec['iters'] == 2 and len(rec['calls']) == 2
    assert all(c['training'] for c in rec['calls'])
    for c in rec['calls']:
        assert c['shape'] == c['out_shape'] == [2, 3, 64, 64]
    # the stock config's SyncBN was reverted to BN (no process group)
    assert rec['sync_bn'] == 0 and rec['bn'] > 0
    if augment == 'RecursiveMix':
        assert [c['history'] for c in rec['calls']] == [False, True]
        hist = _history(rec['work_dir'] / 'iter_2.pth')
        assert tuple(hist['inputs'].shape) == (2, 3, 64, 64)
        assert sorted(hist['maps']) == ['gt_sem_seg']
    assert 'mIoU' in rec['val_metrics']
    assert 0.0 <= rec['val_metrics']['mIoU'] <= 100.0


@pytest.mark.slow
def test_stock_mmseg_train_resume_is_exact(tmp_path):
    """The stock mmseg ``tools/train.py --resume`` with the diff plus
    ``ExactResumeHook``: a new process loads the checkpoint under torch's
    default ``weights_only`` loader (``custom_imports`` installs the
    allow-list) and continues exactly: after 2 + 1 iterations the weights
    and the RecursiveMix history equal those of 3 uninterrupted ones."""
    info = make_ade20k_shapes(str(tmp_path / 'ade'),
                              num_train=6,
                              num_val=1,
                              sizes=((64, 80), (48, 64)))
    diff = SEG_DIFF + "custom_hooks = [dict(type='ExactResumeHook')]\n"
    shrink = SEG_SHRINK.format(
        root=info['data_root'], probe_out=str(tmp_path / 'probe.json')
    ) + ("custom_hooks = [dict(type='ExactResumeHook'), "
         "dict(type='aug_probe.AugmentProbe', out={!r})]\n"
         "default_hooks = dict(checkpoint=dict(interval=1))\n").format(
             str(tmp_path / 'probe.json'))

    def run(work_dir, *args):
        proc = _run_tool(tmp_path, SEG_CONFIG, diff, shrink, SEG_TRAIN,
                         extra_args=args, work_dir=work_dir)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-5000:]
        return out

    run('full', '--cfg-options', 'train_cfg.max_iters=3')
    run('stopped', '--cfg-options', 'train_cfg.max_iters=2')
    out = run('stopped', '--resume', '--cfg-options', 'train_cfg.max_iters=3')
    assert 'resumed epoch: 0, iter: 2' in out, out[-3000:]

    def state(work_dir):
        ckpt = torch.load(str(tmp_path / work_dir / 'iter_3.pth'),
                          map_location='cpu', weights_only=False)
        return ckpt['state_dict']

    full, resumed = state('full'), state('stopped')
    assert full.keys() == resumed.keys()
    for k, v in full.items():
        if isinstance(v, torch.Tensor):
            assert torch.equal(v, resumed[k]), k
    hist = 'data_preprocessor.batch_augments.0.history._extra_state'
    assert torch.equal(full[hist]['inputs'], resumed[hist]['inputs'])
    assert full[hist]['inputs'].abs().sum() > 0


def _strip_scope(obj):
    """A config as plain data without the ``_scope_`` keys that a
    ``pkg::`` ``_base_`` adds."""
    if isinstance(obj, dict):
        return {k: _strip_scope(v) for k, v in obj.items() if k != '_scope_'}
    if isinstance(obj, (list, tuple)):
        return [_strip_scope(v) for v in obj]
    return obj


def test_readme_shows_the_tested_diff(tmp_path):
    """README.md shows the diff these tests train with, verbatim, and its
    ``mmdet::`` / ``mmseg::`` ``_base_`` lines give the same configs as
    the absolute paths the tests use."""
    from mmengine.config import Config

    with open(osp.join(REPO, 'README.md')) as f:
        readme = f.read()
    head = '## Add RecursiveMix to an existing mmdet or mmseg config\n'
    assert head in readme
    section = readme.split(head, 1)[1].split('\n## ', 1)[0]
    assert DET_README_BASE + '\n' + DET_DIFF in section
    assert SEG_README_BASE + '\n' + SEG_DIFF in section
    assert SEG_CUTMIX in section
    # it follows the mmpretrain section
    prev = readme.split(head, 1)[0].rsplit('\n## ', 1)[1]
    assert prev.startswith('Add a method to an existing mmpretrain config')

    for readme_base, stock, diff in ((DET_README_BASE, DET_CONFIG, DET_DIFF),
                                     (SEG_README_BASE, SEG_CONFIG, SEG_DIFF)):
        (tmp_path / 'pkg.py').write_text(readme_base + '\n' + diff)
        (tmp_path / 'abs.py').write_text(f'_base_ = [{_mim(*stock)!r}]\n' +
                                         diff)
        by_pkg = Config.fromfile(str(tmp_path / 'pkg.py')).to_dict()
        by_path = Config.fromfile(str(tmp_path / 'abs.py')).to_dict()
        assert by_path['model']['data_preprocessor']['batch_augments'] == [
            dict(type='RecursiveMix')
        ]
        assert _strip_scope(by_pkg) == _strip_scope(by_path)
