"""Fault tolerance: ``tools/train.py`` killed with SIGKILL, then ``--resume``.

A tiny R-Mix run (checkpoint every iteration, ``ExactResumeHook``) is killed
twice at arbitrary moments and restarted with ``--resume`` (no path: the
work directory's latest checkpoint). Each restart must resume from the
newest checkpoint that existed when the process died (it loses at most the
iterations since that checkpoint), every ``.pth`` left behind must be a
complete checkpoint, and the finished run must hold bitwise the weights of
a run that was never killed.

Also: ``--resume`` finds the newest complete checkpoint when the
``last_checkpoint`` pointer (written in place by mmengine) is empty,
dangling or behind.
"""
import os
import os.path as osp
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from mixplugins.engine.checkpoint import find_latest_checkpoint
from mixplugins.engine.patches import install_patches
from tests._helpers import tool_env

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TINY = osp.join(REPO, 'tests', 'test_tools', 'configs',
                'tiny_resnet_custom.py')
ITERS = 12  # 8 images, batch 2: 4 iterations per epoch, 3 epochs

SLOW_HOOK = '''
import time
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class SlowDown(Hook):
    """Sleeps after each iteration, so that a kill lands mid-run."""

    def __init__(self, seconds):
        self.seconds = seconds

    def after_train_iter(self, runner, **kwargs):
        time.sleep(self.seconds)
'''

CONFIG = f'''_base_ = [{TINY!r}]
custom_imports = dict(imports=['mixplugins', 'slow_hook'],
                      allow_failed_imports=False)
model = dict(
    type='MixImageClassifier',
    head=dict(loss=dict(use_soft=True)),
    train_cfg=dict(augments=[dict(type='RMix')]))
train_dataloader = dict(dataset=dict(pipeline=[
    dict(type='LoadImageFromFile'),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackInputs')]))
train_cfg = dict(_delete_=True, by_epoch=True, max_epochs=3, val_interval=1)
param_scheduler = dict(milestones=[5])
default_hooks = dict(checkpoint=dict(interval=1, save_best=None))
custom_hooks = [dict(type='ExactResumeHook'), dict(type='SlowDown', seconds=0.0)]
'''


def _write_images(root):
    rng = np.random.default_rng(0)
    for split, n in (('train', 4), ('val', 1)):
        for cls in ('cat', 'dog'):
            os.makedirs(osp.join(root, split, cls))
            for i in range(n):
                img = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
                Image.fromarray(img).save(
                    osp.join(root, split, cls, f'{i}.png'))


def _cmd(tmp_path, work_dir, sleep, resume=False):
    data = str(tmp_path / 'data')
    cmd = [
        sys.executable,
        osp.join(REPO, 'tools', 'train.py'),
        str(tmp_path / 'cfg.py'), '--work-dir',
        str(work_dir)
    ]
    if resume:
        cmd.append('--resume')
    return cmd + ['--cfg-options'] + [
        f'{loader}.dataset.data_root={data}'
        for loader in ('train_dataloader', 'val_dataloader',
                       'test_dataloader')
    ] + [f'custom_hooks.1.seconds={sleep}']


def _iters_on_disk(work_dir):
    return sorted(
        int(m.group(1)) for m in (re.match(r'iter_(\d+)\.pth$', n)
                                  for n in os.listdir(work_dir)) if m)


def _run_and_kill(tmp_path, work_dir, resume, kill_after):
    """Start training, SIGKILL it once ``iter_<kill_after>.pth`` exists;
    return the newest checkpoint on disk when it died and its output."""
    log = open(tmp_path / f'log_{kill_after}.txt', 'w+')
    proc = subprocess.Popen(
        _cmd(tmp_path, work_dir, sleep=0.25, resume=resume),
        cwd=str(tmp_path), env=tool_env(tmp_path, threads=1), stdout=log,
        stderr=subprocess.STDOUT)
    target = work_dir / f'iter_{kill_after}.pth'
    deadline = time.time() + 300
    while not target.exists():
        assert proc.poll() is None, open(log.name).read()[-3000:]
        assert time.time() < deadline, 'no checkpoint in time'
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    newest = _iters_on_disk(work_dir)[-1]
    assert newest < ITERS, 'the run finished before it was killed'
    log.seek(0)
    return newest, log.read()


def _state(path):
    install_patches()
    return torch.load(str(path), map_location='cpu')['state_dict']


@pytest.mark.slow
def test_sigkill_then_resume_loses_nothing_past_the_last_checkpoint(
        tmp_path):
    _write_images(str(tmp_path / 'data'))
    (tmp_path / 'cfg.py').write_text(CONFIG)
    (tmp_path / 'slow_hook.py').write_text(SLOW_HOOK)

    # the reference: never killed
    ref = tmp_path / 'ref'
    proc = subprocess.run(_cmd(tmp_path, ref, sleep=0), cwd=str(tmp_path),
                          env=tool_env(tmp_path, threads=1),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]

    work = tmp_path / 'work'
    died_at, _ = _run_and_kill(tmp_path, work, resume=False, kill_after=3)
    died_again, out = _run_and_kill(tmp_path, work, resume=True,
                                    kill_after=died_at + 3)
    # the restart resumed from the newest checkpoint that existed
    assert re.search(rf'resumed epoch: \d+, iter: {died_at}\b', out), \
        out[-3000:]
    proc = subprocess.run(_cmd(tmp_path, work, sleep=0, resume=True),
                          cwd=str(tmp_path), env=tool_env(tmp_path, threads=1),
                          capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert re.search(rf'resumed epoch: \d+, iter: {died_again}\b', out), \
        out[-3000:]

    # no half-written file: every checkpoint left behind loads
    assert _iters_on_disk(work) == list(range(1, ITERS + 1))
    for i in range(1, ITERS + 1):
        assert _state(work / f'iter_{i}.pth')
    # and the run ends where the uninterrupted one did, bit for bit
    final, expected = _state(work / f'iter_{ITERS}.pth'), _state(
        ref / f'iter_{ITERS}.pth')
    assert final.keys() == expected.keys()
    for k in expected:
        assert torch.equal(final[k], expected[k]), k


def _touch(path, t):
    path.write_bytes(b'x')
    os.utime(path, ns=(t, t))


@pytest.mark.parametrize('pointer', ['', 'missing', 'behind', 'current'])
def test_find_latest_checkpoint_survives_a_broken_pointer(tmp_path, pointer):
    t0 = 1_700_000_000_000_000_000
    _touch(tmp_path / 'iter_1.pth', t0)
    _touch(tmp_path / 'iter_2.pth', t0 + 10**9)
    _touch(tmp_path / 'best_acc_iter_1.pth', t0 + 2 * 10**9)  # not a step
    _touch(tmp_path / '.iter_3.pth.123.abcd.tmp', t0 + 3 * 10**9)  # partial
    target = dict(missing=str(tmp_path / 'iter_9.pth'),
                  behind=str(tmp_path / 'iter_1.pth'),
                  current=str(tmp_path / 'iter_2.pth')).get(pointer, '')
    (tmp_path / 'last_checkpoint').write_text(target)
    assert find_latest_checkpoint(str(tmp_path)) == str(tmp_path /
                                                        'iter_2.pth')


def test_find_latest_checkpoint_without_checkpoints(tmp_path):
    assert find_latest_checkpoint(str(tmp_path)) is None
    (tmp_path / 'last_checkpoint').write_text('')
    assert find_latest_checkpoint(str(tmp_path)) is None
    # a remote URI cannot be checked: kept as mmengine does
    (tmp_path / 'last_checkpoint').write_text('s3://bucket/iter_4.pth')
    assert find_latest_checkpoint(str(tmp_path)) == 's3://bucket/iter_4.pth'


def test_the_runner_uses_it():
    import mixplugins  # noqa: F401
    from mmengine.runner import runner
    assert runner.find_latest_checkpoint is find_latest_checkpoint
