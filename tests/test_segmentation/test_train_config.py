"""``configs/segmentation/upernet_r50_rm-seg_512x512_80k_ade20k.py`` trains
through the stock mmengine path (``Config.fromfile`` with
``custom_imports``, then ``Runner.from_cfg``) on generated ADE20K-layout
data: 2 train + 1 val iterations on the CPU, shrunk to ResNet-18 and 64 px
crops. Runs in a fresh interpreter so that ``custom_imports`` imports
mixplugins.
"""
import json
import os.path as osp

import pytest

from mixplugins.datasets.synthetic import make_ade20k_shapes
from tests._helpers import REPO, run_for_result, tool_env

CONFIG = osp.join(REPO, 'configs', 'segmentation',
                  'upernet_r50_rm-seg_512x512_80k_ade20k.py')

SCRIPT = r'''
import json, sys
import torch
torch.set_num_threads(2)
args = json.loads(sys.argv[1])
assert 'mixplugins' not in sys.modules
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.runner import Runner
cfg = Config.fromfile(args['config'])
assert 'mixplugins' in sys.modules, 'custom_imports did not import it'
crop = (64, 64)
m = cfg.model
m.data_preprocessor.size = crop
m.backbone.update(depth=18, init_cfg=None)
m.decode_head.update(in_channels=[64, 128, 256, 512], channels=32)
m.auxiliary_head.update(in_channels=256, channels=16)
for t in cfg.train_dataloader.dataset.pipeline:
    if t['type'] == 'RandomResize':
        t['scale'] = (128, 64)
    if t['type'] == 'RandomCrop':
        t['crop_size'] = crop
for t in cfg.val_dataloader.dataset.pipeline:
    if t['type'] == 'Resize':
        t['scale'] = (128, 64)
for loader in (cfg.train_dataloader, cfg.val_dataloader):
    loader.update(num_workers=0, persistent_workers=False)
    loader.dataset.data_root = args['root']
cfg.test_dataloader = cfg.val_dataloader
cfg.train_cfg.update(max_iters=2, val_interval=2)
cfg.default_hooks.logger.interval = 1
cfg.default_hooks.checkpoint.interval = 2
cfg.work_dir = args['work_dir']
cfg.randomness = dict(seed=0)
runner = Runner.from_cfg(cfg)
pre = runner.model.data_preprocessor
aug = pre.batch_augments[0]
seen = []
aug.register_forward_pre_hook(
    lambda mod, inp: seen.append(mod.history.inputs is not None))
val_metrics = {}
class Grab(Hook):
    def after_val_epoch(self, runner, metrics=None):
        val_metrics.update(metrics or {})
runner.register_hook(Grab())
runner.train()
ckpt = torch.load(args['work_dir'] + '/iter_2.pth', map_location='cpu',
                  weights_only=False)
state = ckpt['state_dict']['data_preprocessor.batch_augments.0.history._extra_state']
print('RESULT ' + json.dumps(dict(
    pre=type(pre).__name__,
    aug=type(aug).__module__ + '.' + type(aug).__name__,
    pasted=seen, iters=runner.iter,
    hist_shape=list(state['inputs'].shape),
    hist_maps=sorted(state['maps']),
    val_metrics=sorted(val_metrics))))
'''


@pytest.mark.slow
def test_rm_seg_config_trains_through_runner(tmp_path):
    info = make_ade20k_shapes(str(tmp_path / 'ade'),
                              num_train=4,
                              num_val=1,
                              sizes=((64, 80), (48, 64)),
                              seed=0)
    args = dict(config=CONFIG,
                root=info['data_root'],
                work_dir=str(tmp_path / 'work'))
    res = run_for_result(SCRIPT,
                         json.dumps(args),
                         cwd=tmp_path,
                         env=tool_env(threads=2))
    assert res['pre'] == 'MixSegDataPreProcessor'
    assert res['aug'] == 'mixplugins.segmentation.recursivemix.RecursiveMix'
    assert res['pasted'] == [False, True] and res['iters'] == 2
    assert res['hist_shape'] == [2, 3, 64, 64]
    assert res['hist_maps'] == ['gt_sem_seg']
    assert 'mIoU' in res['val_metrics']
