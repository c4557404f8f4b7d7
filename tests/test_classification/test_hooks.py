"""DataloaderSwitchHook and PiecewiseLinearLRHook inside a real Runner."""
import numpy as np
import pytest
import torch
from mmengine.dataset import BaseDataset
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import DefaultScope
from mmengine.runner import Runner
from mmpretrain.registry import DATASETS, HOOKS

from mixplugins.engine.hooks import (DataloaderSwitchHook,
                                             PiecewiseLinearLRHook)


@DATASETS.register_module(force=True)
class _ToySizedDataset(BaseDataset):
    """``length`` samples whose input is a ``size`` x ``size`` image."""

    def __init__(self, length=12, size=4, **kwargs):
        self.length, self.size = length, size
        super().__init__(lazy_init=False, serialize_data=False, **kwargs)

    def load_data_list(self):
        return [dict(index=i) for i in range(self.length)]

    def prepare_data(self, idx):
        return dict(inputs=torch.full((1, self.size, self.size), float(idx)))


class _ToyModel(BaseModel):

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(1))
        self.bn = torch.nn.BatchNorm1d(1)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        out = self.bn(inputs.mean((2, 3))) * self.scale
        if mode == 'loss':
            return dict(loss=out.pow(2).mean())
        return out


class _Recorder(Hook):
    priority = 'LOWEST'

    def __init__(self):
        self.rows = []

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        lrs = [g['lr'] for g in runner.optim_wrapper.param_groups]
        self.rows.append(
            dict(
                epoch=runner.epoch,
                idx=batch_idx,
                len=len(runner.train_loop.dataloader),
                batch=data_batch['inputs'].shape[0],
                size=data_batch['inputs'].shape[-1],
                lrs=lrs,
                logged=runner.message_hub.get_scalar('train/lr').current()))


LR_PHASES = [
    dict(epochs=(0, 1, 2), values=(0.5, 1.0, 0.125)),
    dict(epochs=(2, 4), values=(0.2, 0.02)),
    dict(epochs=(4, 5, 6), values=(0.02, 0.002, 0.0002)),
]


def _runner(tmp_path, recorder, max_epochs=6, name='x'):
    train_dataloader = dict(
        batch_size=4,
        num_workers=0,
        dataset=dict(type='_ToySizedDataset', length=12, size=4),
        sampler=dict(type='DefaultSampler', shuffle=True),
        collate_fn=dict(type='default_collate'))
    return Runner(
        model=_ToyModel(),
        work_dir=str(tmp_path),
        train_dataloader=train_dataloader,
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs),
        # two param groups (BN without decay), lr 0 as in the reference
        optim_wrapper=dict(
            optimizer=dict(
                type='SGD',
                lr=0.0,
                momentum=0.9,
                nesterov=True,
                weight_decay=1e-4),
            paramwise_cfg=dict(norm_decay_mult=0.0)),
        custom_hooks=[
            dict(
                type='DataloaderSwitchHook',
                phases=[
                    dict(
                        epoch=2,
                        dataloader=dict(batch_size=2, dataset=dict(size=8))),
                ]),
            dict(type='PiecewiseLinearLRHook', phases=LR_PHASES),
            recorder,
        ],
        default_hooks=dict(checkpoint=None),
        default_scope='mmpretrain',
        randomness=dict(seed=1),
        cfg=dict(train_dataloader=train_dataloader),
        experiment_name=name)


def _reference_lr(epoch, i, num_iters):
    """Reference: lr_schedule(epoch + (i + 1) / len) of the phase config."""
    if epoch < 2:
        xs, ys = (0, 1, 2), (0.5, 1.0, 0.125)
    elif epoch < 4:
        xs, ys = (2, 4), (0.2, 0.02)
    else:
        xs, ys = (4, 5, 6), (0.02, 0.002, 0.0002)
    return np.interp([epoch + (i + 1) / num_iters], xs, ys)[0]


def test_phases_and_lr_in_runner(tmp_path):
    recorder = _Recorder()
    runner = _runner(tmp_path, recorder)
    runner.train()
    rows = recorder.rows
    # 12 samples: 3 iterations of 4 (phase 0), then 6 iterations of 2
    assert [r['epoch'] for r in rows] == [0] * 3 + [1] * 3 + sum(
        ([e] * 6 for e in range(2, 6)), [])
    for r in rows:
        phase2 = r['epoch'] >= 2
        assert r['batch'] == (2 if phase2 else 4)
        assert r['size'] == (8 if phase2 else 4)
        assert r['len'] == (6 if phase2 else 3)
        expected = _reference_lr(r['epoch'], r['idx'], r['len'])
        assert len(r['lrs']) > 1
        assert all(lr == pytest.approx(expected, rel=1e-12) for lr in r['lrs'])
        # RuntimeInfoHook logs the LR this iteration really uses
        assert r['logged'] == pytest.approx(expected, rel=1e-12)
    # the jump between the phase tables is kept: 0.125 then ~0.2
    assert rows[5]['lrs'][0] == pytest.approx(0.125)
    assert rows[6]['lrs'][0] == pytest.approx(0.2 - 0.18 / 12)
    assert runner.train_loop.max_iters == 3 * 2 + 6 * 4


def test_resume_inside_later_phase_starts_with_its_loader(tmp_path):
    runner = _runner(tmp_path, _Recorder())
    loop = runner.train_loop
    switch = next(
        h for h in runner.hooks if isinstance(h, DataloaderSwitchHook))
    switch.before_train(runner)
    assert loop.dataloader.batch_size == 4
    loop._epoch = 3  # what Runner.resume sets from a checkpoint of epoch 3
    switch.before_train(runner)
    assert loop.dataloader.batch_size == 2
    assert loop.dataloader.dataset.size == 8
    # phases merge onto the config, other keys are kept
    cfg = switch.dataloader_cfg(1)
    assert cfg['dataset'] == dict(type='_ToySizedDataset', length=12, size=8)
    assert cfg['sampler'] == dict(type='DefaultSampler', shuffle=True)


def test_phase_index_and_cumulative_overrides(tmp_path):
    hook = DataloaderSwitchHook(phases=[
        dict(epoch=3, dataloader=dict(batch_size=2)),
        dict(epoch=5, dataloader=dict(dataset=dict(size=9), num_workers=1)),
    ])
    assert [hook.phase_index(e) for e in range(7)] == [0, 0, 0, 1, 1, 2, 2]
    hook._base_cfg = dict(
        batch_size=4,
        num_workers=0,
        dataset=dict(type='T', size=4, pipeline=[1, 2]))
    assert hook.dataloader_cfg(2) == dict(
        batch_size=2,
        num_workers=1,
        dataset=dict(type='T', size=9, pipeline=[1, 2]))
    # lists are replaced, not merged
    hook.phases[0]['dataloader'] = dict(dataset=dict(pipeline=[3]))
    assert hook.dataloader_cfg(1)['dataset']['pipeline'] == [3]


def test_lr_at_matches_reference_tables():
    hook = PiecewiseLinearLRHook(phases=[
        dict(epochs=(0, 8, 15), values=(0.5, 1.0, 0.125)),
        dict(epochs=(15, 40), values=(0.2, 0.02)),
        dict(epochs=(40, 65, 90, 100), values=(0.02, 0.002, 0.0002, 0.00002)),
    ])
    # hand-computed points of the R-Mix tables
    assert hook.lr_at(0, 0.5) == pytest.approx(0.5 + 0.5 * 0.5 / 8)
    assert hook.lr_at(8, 0.) == pytest.approx(1.0)
    assert hook.lr_at(14, 1.) == pytest.approx(0.125)
    assert hook.lr_at(15, 0.5) == pytest.approx(0.2 - 0.18 * 0.5 / 25)
    assert hook.lr_at(39, 1.) == pytest.approx(0.02)
    assert hook.lr_at(64, 1.) == pytest.approx(0.002)
    assert hook.lr_at(99, 1.) == pytest.approx(0.00002)


def test_registered_in_mmpretrain_hooks():
    assert HOOKS.parent is MMENGINE_HOOKS
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        hook = MMENGINE_HOOKS.build(
            dict(
                type='PiecewiseLinearLRHook',
                phases=[dict(epochs=(0, 1), values=(1., 0.))]))
        assert isinstance(hook, PiecewiseLinearLRHook)
        hook = MMENGINE_HOOKS.build(
            dict(
                type='DataloaderSwitchHook',
                phases=[dict(epoch=1, dataloader=dict(batch_size=1))]))
        assert isinstance(hook, DataloaderSwitchHook)


@pytest.mark.parametrize('phases, exc', [
    ([], TypeError),
    (dict(epoch=1, dataloader=dict()), TypeError),
    ([dict(epoch=0, dataloader=dict())], ValueError),
    ([dict(epoch=2, dataloader=dict()),
      dict(epoch=2, dataloader=dict())], ValueError),
    ([dict(epoch=1, loader=dict())], ValueError),
    ([dict(epoch=1, dataloader=[1])], TypeError),
])
def test_switch_bad_args(phases, exc):
    with pytest.raises(exc, match='phases'):
        DataloaderSwitchHook(phases=phases)


@pytest.mark.parametrize('phases', [
    [],
    [dict(epochs=(0, 1), values=(1., ))],
    [dict(epochs=(1, 0), values=(1., 2.))],
    [dict(epochs=(0, 1), values=(1., -2.))],
    [dict(epochs=(0, 1))],
    [
        dict(epochs=(2, 3), values=(1., 2.)),
        dict(epochs=(1, 3), values=(1., 2.))
    ],
])
def test_lr_bad_args(phases):
    with pytest.raises((TypeError, ValueError), match='phases'):
        PiecewiseLinearLRHook(phases=phases)


def test_lr_hook_needs_epoch_loop(tmp_path):
    runner = Runner(
        model=_ToyModel(),
        work_dir=str(tmp_path),
        train_dataloader=dict(
            batch_size=4,
            num_workers=0,
            dataset=dict(type='_ToySizedDataset'),
            sampler=dict(type='DefaultSampler', shuffle=False),
            collate_fn=dict(type='default_collate')),
        train_cfg=dict(by_epoch=False, max_iters=2),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
        custom_hooks=[
            dict(
                type='PiecewiseLinearLRHook',
                phases=[dict(epochs=(0, 1), values=(1., 0.))])
        ],
        default_hooks=dict(checkpoint=None),
        default_scope='mmpretrain',
        experiment_name='iterloop')
    with pytest.raises(TypeError, match='epoch-based'):
        runner.train()
