"""Checkpoint fixes for mmengine 0.10.7 on torch >= 2.6.

A real mmengine ``Runner`` (tiny mmpretrain ``ImageClassifier`` on an
in-memory dataset) trains, saves and resumes with torch's default
``weights_only`` loader; failed saves leave the previous checkpoint intact.
"""
import io
import os
import os.path as osp
import pickle
import shutil
import subprocess
import sys
import uuid

import mmengine.runner
import mmengine.runner.checkpoint as ckpt_module
import mmengine.runner.runner as runner_module
import numpy as np
import pytest
import torch
from mmengine.dataset import pseudo_collate
from mmengine.fileio import FileClient, register_backend
from mmengine.fileio.backends import BaseStorageBackend
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.runner import Runner
from mmpretrain.structures import DataSample
from torch.serialization import get_unsafe_globals_in_checkpoint
from torch.utils.data import DataLoader, Dataset

from mixplugins.engine.checkpoint import (allow_mm_checkpoint_globals,
                                         atomic_save_checkpoint,
                                         mm_checkpoint_getattr)
from mixplugins.engine.patches import install_patches

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


class _RandomImages(Dataset):
    """Eight 3x16x16 uint8 images, labels 0/1, fixed by the index."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(i)
        img = torch.randint(0, 256, (3, 16, 16), generator=g,
                            dtype=torch.uint8)
        return dict(inputs=img, data_samples=DataSample().set_gt_label(i % 2))


def _runner(work_dir, max_iters: int, resume: bool = False,
            scheduler: dict = None) -> Runner:
    model = dict(
        type='ImageClassifier',
        data_preprocessor=dict(num_classes=2),
        backbone=dict(
            type='ResNet_CIFAR', depth=18, stem_channels=8, base_channels=8),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=2, in_channels=64))
    return Runner(
        model=model,
        work_dir=str(work_dir),
        experiment_name=f'ckpt_test_{uuid.uuid4().hex[:8]}',
        train_dataloader=DataLoader(
            _RandomImages(), batch_size=4, collate_fn=pseudo_collate),
        optim_wrapper=dict(
            optimizer=dict(type='SGD', lr=0.01, momentum=0.9)),
        param_scheduler=scheduler or dict(
            type='MultiStepLR', by_epoch=False, milestones=[1]),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(
            checkpoint=dict(type='CheckpointHook', interval=1,
                            by_epoch=False)),
        default_scope='mmpretrain',
        resume=resume,
        log_level='WARNING')


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """A work dir where a runner trained 2 iterations (iter_1/2.pth)."""
    install_patches()
    work_dir = tmp_path_factory.mktemp('trained')
    runner = _runner(work_dir, max_iters=2)
    runner.train()
    return runner, work_dir


@pytest.fixture
def no_weights_only_env(monkeypatch):
    for var in ('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD',
                'TORCH_FORCE_WEIGHTS_ONLY_LOAD'):
        monkeypatch.delenv(var, raising=False)


def _spy_torch_load(monkeypatch) -> list:
    """Record the ``weights_only`` argument of every ``torch.load``."""
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get('weights_only', 'default'))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, 'load', spy)
    return calls


def test_checkpoint_needs_exactly_the_allowed_globals(trained):
    _, work_dir = trained
    path = str(work_dir / 'iter_2.pth')
    assert get_unsafe_globals_in_checkpoint(path) == []
    # Without the allow-list the same file names these globals: the list
    # above is empty because of allow_mm_checkpoint_globals, not because the
    # checkpoint is plain.
    saved = torch.serialization.get_safe_globals()
    torch.serialization.clear_safe_globals()
    try:
        unsafe = set(get_unsafe_globals_in_checkpoint(path))
    finally:
        torch.serialization.add_safe_globals(saved)
    assert {
        'mmengine.logging.history_buffer.HistoryBuffer', 'builtins.getattr',
        'numpy.ndarray', 'numpy.dtype'
    } <= unsafe


def test_resume_with_default_weights_only(trained, tmp_path, monkeypatch,
                                          no_weights_only_env):
    _, src = trained
    work_dir = tmp_path / 'work'
    shutil.copytree(src, work_dir)
    calls = _spy_torch_load(monkeypatch)

    runner = _runner(work_dir, max_iters=3, resume=True)
    runner.load_or_resume()
    # weights_only was never turned off: torch's safe loader did the work
    assert calls and all(c in ('default', True) for c in calls)
    assert runner.iter == 2
    saved = torch.load(str(work_dir / 'iter_2.pth'), map_location='cpu')
    state = runner.model.state_dict()
    assert set(state) == set(saved['state_dict'])
    for key, value in saved['state_dict'].items():
        torch.testing.assert_close(state[key], value)
    loss = runner.message_hub.get_scalar('train/loss')
    assert isinstance(loss, HistoryBuffer)
    np.testing.assert_allclose(
        loss.data[0],
        saved['message_hub']['log_scalars']['train/loss'].data[0])
    assert runner.param_schedulers[0].last_step == \
        saved['param_schedulers'][0]['last_step']

    runner.train()
    assert runner.iter == 3
    assert torch.load(str(work_dir / 'iter_3.pth'))['meta']['iter'] == 3


@pytest.mark.parametrize('anneal', ['cos', 'linear'])
def test_one_cycle_scheduler_resumes(tmp_path, anneal, no_weights_only_env):
    install_patches()
    sched = dict(type='OneCycleLR', eta_max=0.1, total_steps=10,
                 by_epoch=False, anneal_strategy=anneal)
    _runner(tmp_path, max_iters=2, scheduler=sched).train()
    runner = _runner(tmp_path, max_iters=3, resume=True, scheduler=sched)
    runner.train()
    assert runner.iter == 3
    lr_2 = torch.load(str(tmp_path / 'iter_2.pth'))['param_schedulers'][0]
    lr_3 = torch.load(str(tmp_path / 'iter_3.pth'))['param_schedulers'][0]
    # a scheduler restored from iter_2 continues counting (a fresh one
    # would be at global step 1 after one more iteration)
    assert lr_2['_global_step'] == 2 and lr_3['_global_step'] == 3
    assert lr_3['anneal_func'].__name__ == f'_annealing_{anneal}'


def test_fresh_process_loads_checkpoint(trained, no_weights_only_env):
    """The getattr allow-list must not rely on state of this process."""
    _, work_dir = trained
    code = ('import sys, torch, mixplugins.engine.patches as c; '
            'c.install_patches(); '
            'ckpt = torch.load(sys.argv[1]); '
            'print(ckpt["meta"]["iter"], '
            'sorted(ckpt["message_hub"]["log_scalars"])[0])')
    env = dict(os.environ, PYTHONPATH=REPO)
    env.pop('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', None)
    proc = subprocess.run(
        [sys.executable, '-c', code,
         str(work_dir / 'iter_2.pth')],
        capture_output=True,
        text=True,
        env=env,
        timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ['2', 'train/data_time']


class _Sneaky:
    """Pickles as ``getattr(HistoryBuffer, '__init__')``."""

    def __reduce__(self):
        return getattr, (HistoryBuffer, '__init__')


class _NotAllowed:
    pass


def test_safe_loader_still_rejects_other_objects(tmp_path):
    allow_mm_checkpoint_globals()
    for obj in (_Sneaky(), _NotAllowed()):
        buf = io.BytesIO()
        torch.save({'x': obj}, buf)
        buf.seek(0)
        with pytest.raises(pickle.UnpicklingError):
            torch.load(buf)


def test_restricted_getattr():
    assert mm_checkpoint_getattr(HistoryBuffer, 'mean') is HistoryBuffer.mean
    for obj, name in ((HistoryBuffer, '__init__'), (HistoryBuffer, 'update'),
                      (os, 'system'), (HistoryBuffer(), 'min')):
        with pytest.raises(pickle.UnpicklingError):
            mm_checkpoint_getattr(obj, name)


def test_numpy_objects_pickled_by_numpy_1_and_2_load():
    allow_mm_checkpoint_globals()
    obj = {
        'arr': np.arange(6, dtype=np.float32).reshape(2, 3),
        'int': np.int64(7),
        'float': np.float64(0.25),
        'flag': np.bool_(True),
        'dtype': np.dtype('uint8'),
    }
    buf = io.BytesIO()
    # The legacy format is one pickle stream, so its global names can be
    # rewritten to what numpy 1.x wrote (``numpy.core.multiarray``).
    torch.save(obj, buf, _use_new_zipfile_serialization=False)
    new_names = buf.getvalue()
    old_names = new_names.replace(b'numpy._core.multiarray',
                                  b'numpy.core.multiarray')
    assert old_names.count(b'numpy.core.multiarray') >= 2
    for data in (new_names, old_names):
        out = torch.load(io.BytesIO(data))
        np.testing.assert_array_equal(out['arr'], obj['arr'])
        assert out['arr'].dtype == np.float32
        assert out['int'] == 7 and out['int'].dtype == np.int64
        assert out['float'] == 0.25 and out['flag']
        assert out['dtype'] == np.dtype('uint8')


def test_allow_globals_is_idempotent():
    allow_mm_checkpoint_globals()
    before = len(torch.serialization.get_safe_globals())
    allow_mm_checkpoint_globals()
    install_patches()
    assert len(torch.serialization.get_safe_globals()) == before


def test_install_patches_is_idempotent_and_covers_all_callers():
    install_patches()
    patched = ckpt_module.save_checkpoint
    install_patches()
    assert ckpt_module.save_checkpoint is patched
    # Runner.save_checkpoint calls runner.py's name; CheckpointHook imports
    # it from mmengine.runner.
    assert runner_module.save_checkpoint is patched
    assert mmengine.runner.save_checkpoint is patched
    original = patched.__wrapped__
    assert not hasattr(original, '__wrapped__')
    assert original.__module__ == 'mmengine.runner.checkpoint'


@pytest.mark.parametrize('error', [RuntimeError, KeyboardInterrupt])
def test_failed_save_keeps_old_checkpoint(trained, tmp_path, monkeypatch,
                                          error):
    runner, src = trained
    work_dir = tmp_path / 'work'
    shutil.copytree(src, work_dir)
    path = work_dir / 'iter_2.pth'
    assert torch.load(str(path))['meta']['iter'] == 2
    old_bytes = path.read_bytes()
    files_before = sorted(os.listdir(work_dir))

    def failing_save(obj, f, *args, **kwargs):
        f.write(b'half a checkpoint' * 1000)
        raise error('disk full')

    monkeypatch.setattr(torch, 'save', failing_save)
    with pytest.raises(error):
        runner.save_checkpoint(str(work_dir), 'iter_2.pth', by_epoch=False)
    with pytest.raises(error):
        ckpt_module.save_checkpoint({'a': 1}, str(path))
    assert path.read_bytes() == old_bytes
    assert sorted(os.listdir(work_dir)) == files_before


def test_save_replaces_file_and_leaves_nothing_else(tmp_path):
    install_patches()
    path = tmp_path / 'sub' / 'ckpt.pth'
    ckpt_module.save_checkpoint({'step': 1}, str(path))
    ckpt_module.save_checkpoint({'step': 2, 'w': torch.ones(3)}, str(path))
    assert os.listdir(tmp_path / 'sub') == ['ckpt.pth']
    out = torch.load(str(path))
    assert out['step'] == 2
    torch.testing.assert_close(out['w'], torch.ones(3))


class _MemoryBackend(BaseStorageBackend):
    """A non-local backend: ``memtest://`` paths stored in a dict."""

    store: dict = {}

    def get(self, filepath):
        return self.store[str(filepath)]

    def get_text(self, filepath, encoding='utf-8'):
        return self.store[str(filepath)].decode(encoding)

    def put(self, obj, filepath):
        self.store[str(filepath)] = obj


def test_non_local_destinations_use_their_backend():
    # mmengine's own save_checkpoint consults both registries
    register_backend('mixplugins_memtest', _MemoryBackend,
                     force=True, prefixes='memtest')
    FileClient.register_backend('mixplugins_memtest', _MemoryBackend,
                                force=True, prefixes='memtest')
    atomic_save_checkpoint({'step': 5}, 'memtest://bucket/ckpt.pth')
    data = _MemoryBackend.store['memtest://bucket/ckpt.pth']
    assert torch.load(io.BytesIO(data))['step'] == 5


def test_last_checkpoint_pointer_is_written_atomically(tmp_path, monkeypatch):
    """``CheckpointHook`` writes ``last_checkpoint`` through a temporary file
    and ``os.replace`` (patch ``atomic_last_checkpoint``); a write that dies
    half-way leaves the previous pointer, and no temporary file."""
    import mmengine.hooks.checkpoint_hook as hook_module
    install_patches()
    replaced = []
    real_replace = os.replace

    def spy(src, dst):
        replaced.append(osp.basename(dst))
        return real_replace(src, dst)

    monkeypatch.setattr(os, 'replace', spy)
    _runner(tmp_path, max_iters=1).train()
    pointer = tmp_path / 'last_checkpoint'
    assert pointer.read_text() == str(tmp_path / 'iter_1.pth')
    assert 'last_checkpoint' in replaced and 'iter_1.pth' in replaced

    def dying_fsync(fd):
        raise KeyboardInterrupt  # killed between the write and the rename

    monkeypatch.setattr(os, 'fsync', dying_fsync)
    with pytest.raises(KeyboardInterrupt):
        with hook_module.open(str(pointer), 'w') as f:
            f.write(str(tmp_path / 'iter_2.pth'))
    assert pointer.read_text() == str(tmp_path / 'iter_1.pth')
    assert not [n for n in os.listdir(tmp_path) if n.endswith('.tmp')]
    # other files the hook opens are the builtin open's
    with hook_module.open(str(tmp_path / 'other.txt'), 'w') as f:
        assert isinstance(f, io.TextIOWrapper)
