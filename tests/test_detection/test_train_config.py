"""``configs/detection/atss_r50_fpn_rm-det_1x_coco.py`` trains through the
stock mmengine path (``Config.fromfile`` with ``custom_imports``, then
``Runner.from_cfg``) on generated COCO data: 2 train + 1 val iterations on
the CPU, shrunk to ResNet-18 and small images. Runs in a fresh interpreter
so that ``custom_imports`` -- not this test session -- imports mixplugins.
"""
import json
import os.path as osp

import pytest

from mixplugins.datasets.synthetic import make_coco_shapes
from tests._helpers import REPO, run_for_result, tool_env

CONFIG = osp.join(REPO, 'configs', 'detection',
                  'atss_r50_fpn_rm-det_1x_coco.py')

SCRIPT = r'''
import json, sys
import torch
torch.set_num_threads(2)
args = json.loads(sys.argv[1])
assert 'mixplugins' not in sys.modules
from mmengine.config import Config
from mmengine.runner import Runner
cfg = Config.fromfile(args['config'])
assert 'mixplugins' in sys.modules, 'custom_imports did not import it'
root, classes = args['root'], tuple(args['classes'])
m = cfg.model
m.backbone.update(depth=18, init_cfg=None)
m.neck.update(in_channels=[64, 128, 256, 512], out_channels=32)
m.bbox_head.update(num_classes=len(classes), in_channels=32,
                   feat_channels=32, stacked_convs=1,
                   norm_cfg=dict(type='GN', num_groups=8,
                                 requires_grad=True))
m.test_cfg.score_thr = 0.0  # random init scores ~0.01: keep detections
for split, loader in (('train', cfg.train_dataloader),
                      ('val', cfg.val_dataloader)):
    loader.update(batch_size=2 if split == 'train' else 1, num_workers=0,
                  persistent_workers=False)
    ds = loader.dataset
    ds.update(data_root=root, ann_file=args[split + '_ann'],
              data_prefix=dict(img=args[split + '_img']),
              metainfo=dict(classes=classes))
    for t in ds.pipeline:
        if t['type'] == 'Resize':
            t['scale'] = (128, 96)
        if t['type'] == 'LoadAnnotations' and split == 'train':
            t['with_mask'] = True  # bitmap masks go through the augment
cfg.train_dataloader.dataset.filter_cfg = dict(filter_empty_gt=True,
                                               min_size=16)
cfg.test_dataloader = cfg.val_dataloader
cfg.val_evaluator.ann_file = root + '/' + args['val_ann']
cfg.test_evaluator = cfg.val_evaluator
cfg.train_cfg.update(max_epochs=1, val_interval=1)
cfg.default_hooks.logger.interval = 1
cfg.work_dir = args['work_dir']
cfg.randomness = dict(seed=0)
runner = Runner.from_cfg(cfg)
aug = runner.model.data_preprocessor.batch_augments[0]
seen = []
aug.register_forward_pre_hook(
    lambda mod, inp: seen.append(mod.history.inputs is not None))
from mmengine.hooks import Hook
val_metrics = {}
class Grab(Hook):
    def after_val_epoch(self, runner, metrics=None):
        val_metrics.update(metrics or {})
runner.register_hook(Grab())
runner.train()
ckpt = torch.load(args['work_dir'] + '/epoch_1.pth', map_location='cpu',
                  weights_only=False)
state = ckpt['state_dict']['data_preprocessor.batch_augments.0.history._extra_state']
print('RESULT ' + json.dumps(dict(
    aug=type(aug).__module__ + '.' + type(aug).__name__,
    pasted=seen, iters=runner.iter,
    hist_batch=len(state['samples']),
    hist_has_masks=state['samples'][0]['gt_instances']['masks'] is not None,
    metrics=sorted(runner.message_hub.log_scalars),
    val_metrics=sorted(val_metrics))))
'''


@pytest.mark.slow
def test_rm_det_config_trains_through_runner(tmp_path):
    info = make_coco_shapes(str(tmp_path / 'coco'),
                            num_train=4,
                            num_val=1,
                            seed=0)
    args = dict(config=CONFIG,
                root=info['data_root'],
                classes=list(info['classes']),
                train_ann=info['train_ann'],
                val_ann=info['val_ann'],
                train_img=info['train_img'],
                val_img=info['val_img'],
                work_dir=str(tmp_path / 'work'))
    res = run_for_result(SCRIPT,
                         json.dumps(args),
                         cwd=tmp_path,
                         env=tool_env(threads=2))
    assert res['aug'] == 'mixplugins.detection.recursivemix.RecursiveMix'
    # 4 images / batch 2: two steps, the first unmixed, the second mixed
    assert res['pasted'] == [False, True] and res['iters'] == 2
    assert res['hist_batch'] == 2 and res['hist_has_masks']
    assert 'coco/bbox_mAP' in res['val_metrics']
    assert 'train/loss_cls' in res['metrics']
