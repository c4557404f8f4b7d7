"""SafeOneCycleLR / OneCycleMomentum against torch.optim.lr_scheduler.

The reference is PyTorch's own ``OneCycleLR`` with ``cycle_momentum=True``
(what the R-Mix CIFAR recipe runs), stepped after every optimizer step. The
mm side is driven as mmengine's runner drives it: an ``OptimWrapper``, and
the schedulers stepped by ``ParamSchedulerHook.after_train_iter``.
"""
import io
import math

import pytest
import torch
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.optim import OptimWrapper
from mmengine.optim.scheduler import OneCycleLR as MMOneCycleLR
from mmengine.registry import PARAM_SCHEDULERS as MMENGINE_PARAM_SCHEDULERS
from mmengine.registry import DefaultScope
from mmengine.runner import Runner
from mmpretrain.registry import PARAM_SCHEDULERS

from mixplugins.engine.schedulers import (OneCycleMomentum,
                                                  SafeOneCycleLR)

# R-Mix CIFAR values (minhlong94/Random-Mixup parse_args.py)
MAX_LR = 0.29947526988779305
RECIPE = dict(div_factor=100., pct_start=0.3, final_div_factor=1e4)


def _params(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [
        torch.nn.Parameter(torch.randn(3, 2, generator=gen)),
        torch.nn.Parameter(torch.randn(2, generator=gen))
    ]


def _loss(params, step):
    w, b = params
    x = torch.linspace(-1, 1, 6).view(3, 2) * (1 + step % 3)
    return ((x * w).sum(0) + b).pow(2).sum()


def _torch_reference(total_steps,
                     optim_cls=torch.optim.SGD,
                     three_phase=False,
                     anneal_strategy='cos',
                     **optim_kwargs):
    params = _params()
    opt = optim_cls(params, **optim_kwargs)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt,
        max_lr=MAX_LR,
        total_steps=total_steps,
        cycle_momentum=True,
        base_momentum=0.85,
        max_momentum=0.95,
        three_phase=three_phase,
        anneal_strategy=anneal_strategy,
        **RECIPE)
    lrs, moms = [], []
    for step in range(total_steps):
        group = opt.param_groups[0]
        lrs.append(group['lr'])
        moms.append(group['betas'][0] if 'betas' in
                    group else group['momentum'])
        opt.zero_grad()
        _loss(params, step).backward()
        opt.step()
        sched.step()
    return lrs, moms, [p.detach().clone() for p in params]


def _mm_schedulers(optim_wrapper,
                   total_steps,
                   three_phase=False,
                   anneal_strategy='cos'):
    lr = SafeOneCycleLR(
        optim_wrapper,
        eta_max=MAX_LR,
        total_steps=total_steps,
        three_phase=three_phase,
        anneal_strategy=anneal_strategy,
        by_epoch=False,
        **RECIPE)
    mom = OneCycleMomentum(
        optim_wrapper,
        base_momentum=0.85,
        max_momentum=0.95,
        total_steps=total_steps,
        pct_start=RECIPE['pct_start'],
        three_phase=three_phase,
        anneal_strategy=anneal_strategy,
        by_epoch=False)
    return [lr, mom]


def _mm_run(total_steps,
            optim_cls=torch.optim.SGD,
            three_phase=False,
            anneal_strategy='cos',
            **optim_kwargs):
    params = _params()
    wrapper = OptimWrapper(optim_cls(params, **optim_kwargs))
    schedulers = _mm_schedulers(wrapper, total_steps, three_phase,
                                anneal_strategy)
    lrs, moms = [], []
    for step in range(total_steps):
        group = wrapper.param_groups[0]
        lrs.append(group['lr'])
        moms.append(group['betas'][0] if 'betas' in
                    group else group['momentum'])
        wrapper.update_params(_loss(params, step))
        for s in schedulers:  # ParamSchedulerHook.after_train_iter
            s.step()
    return lrs, moms, [p.detach().clone() for p in params]


def _assert_close_seq(actual, expected):
    assert len(actual) == len(expected)
    for i, (a, e) in enumerate(zip(actual, expected)):
        assert math.isclose(a, e, rel_tol=1e-12, abs_tol=0), (i, a, e)


@pytest.mark.parametrize('three_phase', [False, True])
@pytest.mark.parametrize('anneal_strategy', ['cos', 'linear'])
@pytest.mark.parametrize('total_steps', [17, 40])
def test_sgd_nesterov_matches_torch(three_phase, anneal_strategy, total_steps):
    kwargs = dict(lr=0.2, momentum=0.9, nesterov=True, weight_decay=1e-4)
    ref = _torch_reference(
        total_steps,
        three_phase=three_phase,
        anneal_strategy=anneal_strategy,
        **kwargs)
    got = _mm_run(
        total_steps,
        three_phase=three_phase,
        anneal_strategy=anneal_strategy,
        **kwargs)
    _assert_close_seq(got[0], ref[0])
    _assert_close_seq(got[1], ref[1])
    # the optimizer really used these values: same trajectory
    for p_got, p_ref in zip(got[2], ref[2]):
        torch.testing.assert_close(p_got, p_ref, rtol=1e-6, atol=1e-7)
    # sanity of the reference itself: 0.95 -> 0.85 -> 0.95 and the LR peak
    assert ref[1][0] == pytest.approx(0.95)
    assert 0.85 <= min(ref[1]) < 0.86
    assert 0.95 * MAX_LR < max(ref[0]) <= MAX_LR


def test_adam_beta1_matches_torch():
    kwargs = dict(lr=1e-3, betas=(0.9, 0.999))
    ref = _torch_reference(25, optim_cls=torch.optim.Adam, **kwargs)
    got = _mm_run(25, optim_cls=torch.optim.Adam, **kwargs)
    _assert_close_seq(got[0], ref[0])
    _assert_close_seq(got[1], ref[1])


class _ToyModel(BaseModel):

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(2, 1)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        out = self.linear(inputs.float())
        if mode == 'loss':
            return dict(loss=out.pow(2).mean())
        return out


class _RecorderHook(Hook):
    """Record the lr/momentum every training iteration runs with."""

    priority = 'LOW'

    def __init__(self):
        self.lrs, self.moms = [], []

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        group = runner.optim_wrapper.param_groups[0]
        self.lrs.append(group['lr'])
        self.moms.append(group['momentum'])


@pytest.mark.parametrize('by_epoch', [True, False])
def test_runner_drives_schedulers_like_torch(tmp_path, by_epoch):
    epochs, dataset_len, batch_size = 3, 10, 2  # 5 iterations per epoch
    total = epochs * dataset_len // batch_size
    if by_epoch:  # how the configs write it
        extra = dict(
            by_epoch=True, begin=0, end=epochs, convert_to_iter_based=True)
    else:
        extra = dict(by_epoch=False, total_steps=total)
    recorder = _RecorderHook()
    runner = Runner(
        model=_ToyModel(),
        work_dir=str(tmp_path),
        train_dataloader=dict(
            dataset=[
                dict(inputs=torch.ones(2) * i) for i in range(dataset_len)
            ],
            sampler=dict(type='DefaultSampler', shuffle=False),
            batch_size=batch_size,
            collate_fn=dict(type='default_collate'),
            num_workers=0),
        train_cfg=dict(by_epoch=True, max_epochs=epochs),
        optim_wrapper=dict(
            optimizer=dict(
                type='SGD',
                lr=0.2,
                momentum=0.9,
                nesterov=True,
                weight_decay=1e-4)),
        param_scheduler=[
            dict(type='SafeOneCycleLR', eta_max=MAX_LR, **RECIPE, **extra),
            dict(
                type='OneCycleMomentum',
                base_momentum=0.85,
                max_momentum=0.95,
                pct_start=0.3,
                **extra),
        ],
        custom_hooks=[recorder],
        default_hooks=dict(checkpoint=None, logger=None),
        default_scope='mmpretrain',
        experiment_name=f'onecycle_{by_epoch}')
    runner.train()
    ref_lrs, ref_moms, _ = _torch_reference(
        total, lr=0.2, momentum=0.9, nesterov=True, weight_decay=1e-4)
    _assert_close_seq(recorder.lrs, ref_lrs)
    _assert_close_seq(recorder.moms, ref_moms)


def _roundtrip(state):
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def test_state_dict_roundtrip_weights_only():
    total = 30
    params = _params()
    wrapper = OptimWrapper(
        torch.optim.SGD(params, lr=0.2, momentum=0.9, nesterov=True))
    scheds = _mm_schedulers(wrapper, total, anneal_strategy='linear')
    for step in range(11):
        wrapper.update_params(_loss(params, step))
        for s in scheds:
            s.step()
    saved = _roundtrip(
        dict(
            optimizer=wrapper.state_dict(),
            schedulers=[s.state_dict() for s in scheds]))
    assert 'anneal_func' not in saved['schedulers'][0]
    assert saved['schedulers'][0]['anneal_strategy'] == 'linear'

    # resume into fresh objects, as Runner.resume does
    params2 = [p.detach().clone().requires_grad_() for p in params]
    wrapper2 = OptimWrapper(
        torch.optim.SGD(params2, lr=0.2, momentum=0.9, nesterov=True))
    scheds2 = _mm_schedulers(wrapper2, total)  # 'cos' until loaded
    wrapper2.load_state_dict(saved['optimizer'])
    for s, state in zip(scheds2, saved['schedulers']):
        s.load_state_dict(state)
    assert scheds2[0].anneal_func == SafeOneCycleLR._annealing_linear
    for step in range(11, total):
        group, group2 = wrapper.param_groups[0], wrapper2.param_groups[0]
        assert (group2['lr'], group2['momentum']) == (group['lr'],
                                                      group['momentum'])
        wrapper.update_params(_loss(params, step))
        wrapper2.update_params(_loss(params2, step))
        for s in scheds + scheds2:
            s.step()
    for p, p2 in zip(params, params2):
        torch.testing.assert_close(p, p2, rtol=0, atol=0)


def test_loads_state_of_mmengine_onecycle():
    """A checkpoint written with mmengine's OneCycleLR (function in the
    state) still loads, and the strategy is recovered from the function."""
    wrapper = OptimWrapper(torch.optim.SGD(_params(), lr=0.1, momentum=0.9))
    mm = MMOneCycleLR(
        wrapper,
        eta_max=1.0,
        total_steps=10,
        anneal_strategy='linear',
        by_epoch=False)
    for _ in range(4):
        wrapper.step()
        mm.step()
    state = mm.state_dict()
    assert callable(state['anneal_func'])  # the reason for SafeOneCycleLR
    wrapper2 = OptimWrapper(torch.optim.SGD(_params(), lr=0.1, momentum=0.9))
    safe = SafeOneCycleLR(
        wrapper2, eta_max=1.0, total_steps=10, by_epoch=False)
    safe.load_state_dict(state)
    assert safe.anneal_strategy == 'linear'
    assert safe.last_step == mm.last_step
    assert 'anneal_func' not in safe.state_dict()


def test_registered_for_mmpretrain_scope():
    assert PARAM_SCHEDULERS.parent is MMENGINE_PARAM_SCHEDULERS
    wrapper = OptimWrapper(torch.optim.SGD(_params(), lr=0.1, momentum=0.9))
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        built = MMENGINE_PARAM_SCHEDULERS.build(
            dict(type='OneCycleMomentum', total_steps=5, by_epoch=False),
            default_args=dict(optimizer=wrapper))
        assert isinstance(built, OneCycleMomentum)
        built = MMENGINE_PARAM_SCHEDULERS.build(
            dict(
                type='SafeOneCycleLR',
                eta_max=1.,
                total_steps=5,
                by_epoch=False),
            default_args=dict(optimizer=wrapper))
        assert isinstance(built, SafeOneCycleLR)


def test_convert_to_iter_based():
    wrapper = OptimWrapper(torch.optim.SGD(_params(), lr=0.1, momentum=0.9))
    s = OneCycleMomentum.build_iter_from_epoch(
        wrapper, begin=0, end=4, by_epoch=True, epoch_length=7)
    assert (s.total_steps, s.end, s.by_epoch) == (28, 28, False)
    s = OneCycleMomentum.build_iter_from_epoch(
        wrapper, total_steps=3, by_epoch=True, epoch_length=7)
    assert s.total_steps == 21


@pytest.mark.parametrize('kwargs, match', [
    (dict(total_steps=None), 'total_steps'),
    (dict(total_steps=0), 'total_steps'),
    (dict(total_steps=2.5), 'total_steps'),
    (dict(total_steps=5, pct_start=1.5), 'pct_start'),
    (dict(total_steps=5, anneal_strategy='exp'), 'anneal_strategy'),
    (dict(total_steps=5, base_momentum=-0.1), 'base_momentum'),
    (dict(total_steps=5, max_momentum=[0.9, 0.95]), 'max_momentum'),
])
def test_momentum_bad_args(kwargs, match):
    wrapper = OptimWrapper(torch.optim.SGD(_params(), lr=0.1, momentum=0.9))
    with pytest.raises(ValueError, match=match):
        OneCycleMomentum(wrapper, by_epoch=False, **kwargs)


def test_momentum_needs_momentum_optimizer():
    wrapper = OptimWrapper(torch.optim.Adagrad(_params(), lr=0.1))
    with pytest.raises(ValueError, match='momentum'):
        OneCycleMomentum(wrapper, total_steps=5, by_epoch=False)


def test_stepping_past_total_steps_raises():
    wrapper = OptimWrapper(torch.optim.SGD(_params(), lr=0.1, momentum=0.9))
    s = OneCycleMomentum(wrapper, total_steps=3, by_epoch=False)
    for _ in range(3):
        wrapper.step()
        s.step()
    wrapper.step()
    with pytest.raises(ValueError, match='total steps'):
        s.step()


def test_lr_bad_args():
    wrapper = OptimWrapper(torch.optim.SGD(_params(), lr=0.1, momentum=0.9))
    with pytest.raises(ValueError, match='total_steps'):
        SafeOneCycleLR(wrapper, eta_max=1., by_epoch=False)
    with pytest.raises(ValueError, match='anneal_strategy'):
        SafeOneCycleLR(
            wrapper,
            eta_max=1.,
            total_steps=4,
            anneal_strategy='exp',
            by_epoch=False)
