"""``tools/train.py``, ``tools/test.py`` and ``tools/dist_train.sh``.

A tiny mmpretrain ResNet (``tests/test_tools/configs/tiny_resnet_custom.py``)
trains on PNG images written into ``tmp_path`` and read by mmpretrain's
``CustomDataset``.
"""
import argparse
import importlib.util
import os
import os.path as osp
import pickle
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from mmengine.config import Config
from PIL import Image

from mixplugins.engine.patches import install_patches
from tests._helpers import free_port, tool_env

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(REPO, 'tests', 'test_tools', 'configs',
                  'tiny_resnet_custom.py')
N_TRAIN, N_VAL = 4, 2  # images per class


def _write_images(root: str) -> None:
    rng = np.random.default_rng(0)
    for split, n in (('train', N_TRAIN), ('val', N_VAL)):
        for cls in ('cat', 'dog'):
            os.makedirs(osp.join(root, split, cls))
            for i in range(n):
                img = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
                Image.fromarray(img).save(osp.join(root, split, cls,
                                                   f'{i}.png'))


@pytest.fixture
def data_root(tmp_path) -> str:
    root = str(tmp_path / 'data')
    _write_images(root)
    return root


def _data_options(root: str) -> list:
    return [
        f'{loader}.dataset.data_root={root}'
        for loader in ('train_dataloader', 'val_dataloader',
                       'test_dataloader')
    ]


def _run(cmd: list, cwd, timeout: int = 600) -> str:
    env = tool_env(threads=1)
    proc = subprocess.run(
        cmd,
        cwd=str(cwd),
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    return out


def _load(path) -> dict:
    install_patches()  # mm checkpoints under torch's weights_only loader
    return torch.load(str(path), map_location='cpu')


def test_train_resume_and_test(tmp_path, data_root):
    work_dir = tmp_path / 'work'
    tool = [sys.executable, osp.join(REPO, 'tools', 'train.py'), CONFIG]
    options = ['--cfg-options'] + _data_options(data_root)

    out = _run(tool + ['--work-dir', str(work_dir)] + options, tmp_path)
    assert 'Saving checkpoint at 2 iterations' in out
    ckpt = _load(work_dir / 'iter_2.pth')
    assert ckpt['meta']['iter'] == 2
    assert ckpt['meta']['dataset_meta']['classes'] == ('cat', 'dog')
    # validation ran after 2 iterations and kept the best checkpoint
    assert (work_dir / 'best_accuracy_top1_iter_2.pth').is_file()

    # a new process resumes from the latest checkpoint with torch's default
    # (weights_only) loader
    out = _run(
        tool + ['--work-dir', str(work_dir), '--resume'] + options +
        ['train_cfg.max_iters=3'], tmp_path)
    assert re.search(r'resumed epoch: \d+, iter: 2', out), out[-3000:]
    resumed = _load(work_dir / 'iter_3.pth')
    assert resumed['meta']['iter'] == 3
    assert resumed['param_schedulers'][0]['_global_step'] == 3
    assert not any(n.startswith('.') for n in os.listdir(work_dir))

    preds = tmp_path / 'preds.pkl'
    out = _run([
        sys.executable,
        osp.join(REPO, 'tools', 'test.py'), CONFIG,
        str(work_dir / 'iter_3.pth'), '--work-dir',
        str(tmp_path / 'test'), '--out',
        str(preds)
    ] + options, tmp_path)
    assert re.search(r'accuracy/top1: \d', out)
    with open(preds, 'rb') as f:
        results = pickle.load(f)
    assert len(results) == 2 * N_VAL
    for res in results:
        assert res['pred_score'].shape == (2, )
        torch.testing.assert_close(res['pred_score'].sum(), torch.tensor(1.))


@pytest.mark.slow
def test_train_amp_on_the_cpu(tmp_path, data_root):
    """``--amp`` without an accelerator: bfloat16 autocast on the CPU (R-Mix,
    whose saliency pass runs inside the autocast)."""
    config = tmp_path / 'tiny_rmix.py'
    config.write_text(f"""_base_ = [{CONFIG!r}]
custom_imports = dict(imports=['mixplugins'], allow_failed_imports=False)
model = dict(
    type='MixImageClassifier',
    head=dict(loss=dict(use_soft=True)),
    train_cfg=dict(augments=[dict(type='RMix')]))
""")
    work_dir = tmp_path / 'work'
    out = _run([
        sys.executable,
        osp.join(REPO, 'tools', 'train.py'),
        str(config), '--amp', '--work-dir',
        str(work_dir), '--cfg-options'
    ] + _data_options(data_root), tmp_path)
    assert 'AmpOptimWrapper -> CPUAmpOptimWrapper' in out
    losses = [float(v) for v in re.findall(r' loss: ([-\d.]+)', out)]
    assert len(losses) == 2 and all(np.isfinite(losses)), out[-3000:]
    ckpt = _load(work_dir / 'iter_2.pth')
    assert all(torch.isfinite(v).all() for v in ckpt['state_dict'].values()
               if v.is_floating_point())


@pytest.mark.slow
@pytest.mark.parametrize('augment', [None, 'RMix', 'RecursiveMix'])
def test_dist_train_two_cpu_processes(tmp_path, data_root, augment):
    """torchrun + gloo on CPU, with SyncBN in the config; plain, and with
    each mixplugins method (per-rank history, saliency pass under DDP)."""
    work_dir = tmp_path / 'work'
    env = tool_env(threads=1, PYTHON=sys.executable, PORT=free_port())
    config = CONFIG
    if augment is not None:
        config = str(tmp_path / f'tiny_{augment}.py')
        with open(config, 'w') as f:
            f.write(f"""_base_ = [{CONFIG!r}]
custom_imports = dict(imports=['mixplugins'], allow_failed_imports=False)
model = dict(
    type='MixImageClassifier',
    head=dict(loss=dict(use_soft=True)),
    train_cfg=dict(augments=[dict(type={augment!r})]))
""")
    cmd = [
        'bash',
        osp.join(REPO, 'tools', 'dist_train.sh'), config, '2', '--work-dir',
        str(work_dir), '--cfg-options'
    ] + _data_options(data_root) + ['model.backbone.norm_cfg.type=SyncBN']
    proc = subprocess.run(
        cmd,
        cwd=str(tmp_path),
        env=env,
        capture_output=True,
        text=True,
        timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    for rank in (0, 1):
        assert f"backend 'gloo' (rank {rank}/2)" in out
    # ResNet_CIFAR-18: stem 1 + 8 basic blocks x 2 + 3 downsample = 20 BNs
    assert 'reverted 20 SyncBatchNorm layer(s) to BatchNorm' in out
    # 2 * N_TRAIN images, batch 2 per process, 2 processes: 2 iters/epoch
    assert re.search(r'Epoch\(train\) \[1\]\[2/2\]', out), out[-3000:]
    ckpt = _load(work_dir / 'iter_2.pth')
    assert ckpt['meta']['iter'] == 2


def _load_train_tool():
    spec = importlib.util.spec_from_file_location(
        'mixplugins_train_tool', osp.join(REPO, 'tools', 'train.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _merged(argv: list) -> Config:
    tool = _load_train_tool()
    args = tool.parse_args([CONFIG] + argv)
    return tool.merge_args(Config.fromfile(CONFIG), args)


def test_train_args_are_applied_to_the_config():
    cfg = _merged([])
    assert cfg.launcher == 'none' and cfg.resume is False
    assert cfg.work_dir == osp.join('./work_dirs', 'tiny_resnet_custom')

    cfg = _merged(['--amp', '--resume', '--no-validate', '--auto-scale-lr',
                   '--work-dir', 'w', '--launcher', 'pytorch'])
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert cfg.optim_wrapper.loss_scale == 'dynamic'
    assert cfg.resume is True and cfg.load_from is None
    assert cfg.val_dataloader is None and cfg.val_cfg is None
    assert cfg.auto_scale_lr.enable is True
    assert cfg.work_dir == 'w' and cfg.launcher == 'pytorch'

    cfg = _merged(['--resume', 'x.pth', '--cfg-options', 'work_dir=v'])
    assert cfg.resume is True and cfg.load_from == 'x.pth'
    assert cfg.work_dir == 'v'


def test_train_args_reject_what_cannot_work():
    with pytest.raises(ValueError, match='auto_scale_lr'):
        _merged(['--auto-scale-lr', '--cfg-options', 'auto_scale_lr=None'])
    with pytest.raises(ValueError, match='optim_wrapper.type'):
        _merged(['--amp', '--cfg-options', 'optim_wrapper.type=Custom'])


def test_unknown_default_scope_is_reported(tmp_path):
    tool = [sys.executable, osp.join(REPO, 'tools', 'train.py'), CONFIG]
    proc = subprocess.run(
        tool + ['--cfg-options', 'default_scope=mmcls'],
        cwd=str(tmp_path),
        capture_output=True,
        text=True,
        timeout=300)
    assert proc.returncode != 0
    assert "default_scope must be one of ['mmdet', 'mmpretrain', 'mmseg']" \
        in proc.stderr


def test_argparse_local_rank_sets_env(monkeypatch):
    monkeypatch.setenv('LOCAL_RANK', '0')  # restored afterwards
    monkeypatch.delenv('LOCAL_RANK')
    args = _load_train_tool().parse_args([CONFIG, '--local-rank', '3'])
    assert isinstance(args, argparse.Namespace) and args.local_rank == 3
    assert os.environ['LOCAL_RANK'] == '3'
