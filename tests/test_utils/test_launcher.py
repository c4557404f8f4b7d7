"""Runner building for the tools: framework scope and CPU-distributed DDP."""
from unittest.mock import MagicMock

import pytest
import torch.distributed as dist
import torch.nn as nn
from mmengine.config import Config
from mmengine.model import MMDistributedDataParallel
from mmengine.registry import DefaultScope
from mmengine.runner import Runner

from mixplugins.utils.launcher import (apply_framework_defaults,
                                       cpu_distributed_runner, framework_of,
                                       init_framework_scope)


@pytest.mark.parametrize('scope', ['mmpretrain', 'mmdet', 'mmseg'])
def test_framework_of_accepts_the_three_scopes(scope):
    assert framework_of(Config(dict(default_scope=scope))) == scope


@pytest.mark.parametrize('cfg', [dict(), dict(default_scope='mmcls'),
                                 dict(default_scope=None)])
def test_framework_of_rejects_other_scopes(cfg):
    with pytest.raises(ValueError, match='default_scope must be one of'):
        framework_of(Config(cfg))


@pytest.fixture
def restore_default_scope():
    """Leave the process-wide default scope as it was."""
    saved = dict(DefaultScope._instance_dict)
    yield
    DefaultScope._instance_dict.clear()
    DefaultScope._instance_dict.update(saved)


def test_init_framework_scope_sets_default_scope(restore_default_scope):
    scope = init_framework_scope(Config(dict(default_scope='mmseg')))
    assert scope == 'mmseg'
    assert DefaultScope.get_current_instance().scope_name == 'mmseg'


def test_mmpretrain_dataloader_defaults_keep_config_values():
    cfg = Config(
        dict(
            train_dataloader=dict(batch_size=2, num_workers=0),
            val_dataloader=dict(num_workers=2, pin_memory=False),
            test_dataloader=None))
    apply_framework_defaults(cfg, 'mmpretrain')
    train, val = cfg.train_dataloader, cfg.val_dataloader
    assert train.collate_fn == dict(type='default_collate')
    assert train.pin_memory is True and train.batch_size == 2
    # torch refuses persistent workers without workers
    assert 'persistent_workers' not in train
    assert val.persistent_workers is True and val.pin_memory is False
    assert cfg.test_dataloader is None


def test_mmseg_config_is_left_alone():
    cfg = Config(dict(train_dataloader=dict(batch_size=2, num_workers=0)))
    apply_framework_defaults(cfg, 'mmseg')
    assert cfg.train_dataloader == dict(batch_size=2, num_workers=0)


class _TinyNet(nn.Module):

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.SyncBatchNorm(4)
        self.head = nn.Linear(4, 2)


@pytest.fixture
def gloo_group(monkeypatch):
    """A one-process gloo group, as under torchrun on a CPU machine."""
    if dist.is_initialized():
        pytest.fail('a process group is already initialised')
    monkeypatch.setenv('LOCAL_RANK', '0')
    dist.init_process_group(
        'gloo', store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def _fake_runner(cfg: dict):
    """An instance of the derived class with only what wrap_model reads."""
    cls = cpu_distributed_runner(Runner)
    runner = cls.__new__(cls)
    runner._distributed = True
    runner.cfg = Config(cfg)
    runner.logger = MagicMock()
    return runner


@pytest.mark.parametrize('wrapper_cfg', [
    None,
    dict(type='MMDistributedDataParallel', find_unused_parameters=True),
])
def test_cpu_wrap_model_reverts_syncbn_and_drops_device_ids(
        gloo_group, wrapper_cfg, monkeypatch):
    # the CPU path, also on a machine with CUDA
    monkeypatch.setattr('mmengine.device.get_device', lambda: 'cpu')
    monkeypatch.setattr('mmengine.runner.runner.get_device', lambda: 'cpu')
    runner = _fake_runner(dict(sync_bn='torch', find_unused_parameters=False))
    wrapped = runner.wrap_model(wrapper_cfg, _TinyNet())

    assert isinstance(wrapped, MMDistributedDataParallel)
    assert wrapped.device_ids is None
    assert not any(
        isinstance(m, nn.SyncBatchNorm) for m in wrapped.modules())
    assert isinstance(wrapped.module.bn, nn.modules.batchnorm._BatchNorm)
    assert wrapped.find_unused_parameters is (wrapper_cfg is not None)
    assert wrapped.broadcast_buffers is False
    messages = ' '.join(
        str(c.args[0]) for c in runner.logger.warning.call_args_list)
    assert 'reverted 1 SyncBatchNorm' in messages
    assert "ignoring sync_bn='torch'" in messages
    assert 'sync_bn' not in runner.cfg


def test_derived_runner_keeps_base_class():

    class CustomRunner(Runner):
        pass

    cls = cpu_distributed_runner(CustomRunner)
    assert issubclass(cls, CustomRunner) and cls.__name__ == \
        'CPUDistCustomRunner'
    assert cls.from_cfg.__func__ is Runner.from_cfg.__func__
