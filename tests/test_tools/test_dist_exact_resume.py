"""``ExactResumeHook`` under DDP: 2 CPU processes (gloo) through
``tools/dist_train.sh``; stop at a mid-epoch checkpoint, resume, continue ==
never stop, on every rank.

A tiny ResNet_CIFAR ``MixImageClassifier`` (8 training images, batch 2 per
process: 2 iterations per epoch, 3 epochs, a checkpoint after every
iteration, a validation after every epoch) trains once without a stop. A
test-only hook (written into ``tmp_path``, loaded by its dotted name) writes
on every rank, per iteration, the losses, the hashes of the tensors that
entered the backbone in training mode (the mixed batch; R-Mix also feeds
its saliency pass) and the hash of the RecursiveMix history after the step,
per validation batch the hash of the rank's predicted scores, and at the end
the hash of the rank's whole ``state_dict`` (its own history and BatchNorm
statistics included), to ``work_dir/rec_rank{r}.json``. A second 2-process
run resumes (``--resume``) from ``iter_3.pth`` -- epoch 2, after its first
batch -- and must record on each rank exactly (bitwise) what the
uninterrupted run recorded from iteration 3 on, and write the same final
checkpoint.

RecursiveMix is the case with per-rank state: each process pastes its own
previous batch, and ``Runner.save_checkpoint`` runs on rank 0 only, so the
checkpoint's ``state_dict`` holds rank 0's history. Rank 1 must get its own
from the hook's ``'exact_resume'`` entry. Control: resuming with
``ExactResumeHook(per_rank_modules=False)`` leaves every rank with rank 0's
history, and rank 1's first resumed iteration differs (then, through the
averaged gradients, both ranks' losses and the weights).

BatchNorm running statistics are per-rank state too: mmengine wraps the
model with ``broadcast_buffers=False``, so rank 1 keeps its own and scores
its validation shard with them; the validation records of rank 1 differ
when only rank 0's are restored.

R-Mix has no module state, but its draws come from each rank's own RNG
(``randomness.diff_rank_seed=True`` gives the ranks different streams; the
train sampler is then seeded by a random broadcast seed, not by
``randomness.seed``).
"""
import json
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from tests._helpers import (det_config, free_port, same_history, seg_config,
                            tool_env)

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TINY_CLS = osp.join(REPO, 'tests', 'test_tools', 'configs',
                    'tiny_resnet_custom.py')
RESUME_AT = 3  # iter_3.pth: epoch 2 (iterations 2, 3), after its 1st batch
N_ITERS = 6  # 3 epochs x 2 iterations

PROBE = r'''
"""Test-only hook: per-rank records of a run (see the test module)."""
import hashlib
import json
import os.path as osp

import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper


def _update(h, obj):
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(repr((t.dtype, tuple(t.shape))).encode())
        h.update(t.numpy().tobytes())
    elif isinstance(obj, dict):
        for k in sorted(obj):
            h.update(repr(k).encode())
            _update(h, obj[k])
    elif isinstance(obj, (list, tuple)):
        h.update(repr(len(obj)).encode())
        for v in obj:
            _update(h, v)
    else:
        h.update(repr(obj).encode())


def digest(obj):
    h = hashlib.sha1()
    _update(h, obj)
    return h.hexdigest()


class Record(Hook):

    priority = 'LOWEST'

    def __init__(self):
        self.records = []
        self.val = []
        self.inputs = []

    def _model(self, runner):
        m = runner.model
        return m.module if is_model_wrapper(m) else m

    def _write(self, runner, **extra):
        path = osp.join(runner.work_dir, f'rec_rank{get_rank()}.json')
        with open(path, 'w') as f:
            json.dump(dict(records=self.records, val=self.val, **extra), f)

    def before_train(self, runner):
        self._model(runner).backbone.register_forward_pre_hook(self._pre)

    def _pre(self, module, args):
        if module.training:  # not validation
            self.inputs.append(digest(args[0]))

    def _history(self, runner):
        """cls: the classifier's; det/seg: the batch augment's."""
        model = self._model(runner)
        if hasattr(model, 'rm_history'):
            return model.rm_history
        augments = getattr(model.data_preprocessor, 'batch_augments', None)
        if not isinstance(augments, torch.nn.ModuleList):
            return None  # mmpretrain's: a RandomBatchAugment or None
        return next((a.history for a in augments if hasattr(a, 'history')),
                    None)

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        hist = self._history(runner)
        self.records.append(dict(
            iter=runner.iter,
            batch_idx=batch_idx,
            losses={k: float(v) for k, v in outputs.items()},
            inputs=self.inputs,
            history=None if hist is None else digest(hist.get_extra_state()),
            samples=[s.img_path for s in data_batch['data_samples']]))
        self.inputs = []
        self._write(runner)

    def after_val_iter(self, runner, batch_idx, data_batch=None,
                       outputs=None):
        self.val.append(dict(
            epoch=runner.epoch,
            scores=digest([o.pred_score for o in outputs])))

    def after_train(self, runner):
        self._write(runner, final=digest(self._model(runner).state_dict()))
'''

CONFIG = """_base_ = [{base!r}]
data_root = {root!r}
model = dict(
    type='MixImageClassifier',
    head=dict(loss=dict(type='CrossEntropyLoss', use_soft=True)),
    train_cfg=dict(augments=[{augment!r}]))
train_dataloader = dict(dataset=dict(
    data_root=data_root,
    pipeline=[
        dict(type='LoadImageFromFile'),
        dict(type='RandomFlip', prob=0.5),
        dict(type='PackInputs')
    ]))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = dict(dataset=dict(data_root=data_root))
train_cfg = dict(_delete_=True, by_epoch=True, max_epochs=3, val_interval=1)
param_scheduler = dict(milestones=[4], gamma=0.5)
default_hooks = dict(
    logger=dict(interval=1),
    checkpoint=dict(interval=1, by_epoch=False, save_best='auto'))
custom_hooks = [
    dict(type='ExactResumeHook', per_rank_modules={per_rank}),
    dict(type='exact_resume_probe.Record')
]
randomness = {randomness!r}
"""

AUGMENTS = dict(
    RecursiveMix=(dict(type='RecursiveMix'), dict(seed=0)),
    RMix=(dict(type='RMix', grids=(2, 4)), dict(seed=0, diff_rank_seed=True)),
    RLMix=(dict(type='RLMix', agent_grid=4, n_steps=2, batch_size=2,
                n_epochs=1), dict(seed=0, diff_rank_seed=True)),
)


def _write_pngs(root: str) -> None:
    """8 training images (2 classes), 2 validation images, 16x16."""
    rng = np.random.default_rng(0)
    for split, n in (('train', 4), ('val', 1)):
        for cls in ('cat', 'dog'):
            d = osp.join(root, split, cls)
            os.makedirs(d)
            for i in range(n):
                img = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
                Image.fromarray(img).save(osp.join(d, f'{i}.png'))


def _config(tmp_path, augment: str, per_rank: bool = True) -> str:
    root = tmp_path / 'data'
    if not root.exists():
        _write_pngs(str(root))
        (tmp_path / 'exact_resume_probe.py').write_text(PROBE)
    aug, randomness = AUGMENTS[augment]
    path = tmp_path / f'{augment}_{per_rank}.py'
    path.write_text(
        CONFIG.format(base=TINY_CLS, root=str(root), augment=aug,
                      per_rank=per_rank, randomness=randomness))
    return str(path)


def _dist_train(tmp_path, config: str, name: str, resume=None):
    """``dist_train.sh CONFIG 2`` into ``tmp_path/name``; the two ranks'
    records."""
    work_dir = tmp_path / name
    env = tool_env(tmp_path,
                   threads=1,
                   PYTHON=sys.executable,
                   PORT=free_port())
    cmd = ['bash', osp.join(REPO, 'tools', 'dist_train.sh'), config, '2',
           '--work-dir', str(work_dir)]
    if resume is not None:
        cmd += ['--resume', str(resume)]
    proc = subprocess.run(cmd, cwd=str(tmp_path), env=env,
                          capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    for rank in (0, 1):
        assert f"backend 'gloo' (rank {rank}/2)" in out
    recs = []
    for rank in (0, 1):
        with open(work_dir / f'rec_rank{rank}.json') as f:
            recs.append(json.load(f))
    return recs, out


def _load(path):
    return torch.load(str(path), map_location='cpu', weights_only=False)


def _tail(rec):
    return [r for r in rec['records'] if r['iter'] >= RESUME_AT]


def _check_full_run(full):
    for rec in full:
        assert [r['iter'] for r in rec['records']] == list(range(N_ITERS))
        assert [r['batch_idx'] for r in rec['records']] == [0, 1] * 3
    # each rank reads its own half of the images, and mixes its own batch
    for it in range(N_ITERS):
        r0, r1 = (rec['records'][it] for rec in full)
        assert not set(r0['samples']) & set(r1['samples'])
        assert r0['inputs'] != r1['inputs']
        assert r0['losses'] != r1['losses']


def _check_exact(tmp_path, full, resumed, out):
    assert 'epoch 2 continues at batch 2' in out, out[-3000:]
    # rank 1 first: the checkpoint's state_dict is rank 0's state
    for rank in (1, 0):
        want, got = _tail(full[rank]), resumed[rank]['records']
        assert [r['iter'] for r in got] == list(range(RESUME_AT, N_ITERS))
        for g, w in zip(got, want):
            assert g == w, f'rank {rank}, iteration {w["iter"]} differs'
        # the validations after the resume: each rank scores its own shard
        # with its own BatchNorm statistics (broadcast_buffers=False)
        assert resumed[rank]['val'] == [
            v for v in full[rank]['val'] if v['epoch'] >= 2
        ]
        assert [v['epoch'] for v in resumed[rank]['val']] == [2, 3]
        # the rank's whole final state: weights, its own BatchNorm
        # statistics and RecursiveMix history
        assert resumed[rank]['final'] == full[rank]['final']
    # rank 0 writes the checkpoints: the same weights, optimizer state,
    # scheduler and (rank 0's) history
    a = _load(tmp_path / 'full' / f'iter_{N_ITERS}.pth')
    b = _load(tmp_path / 'resumed' / f'iter_{N_ITERS}.pth')
    assert a['state_dict'].keys() == b['state_dict'].keys()
    for k in a['state_dict']:
        assert same_history(a['state_dict'][k], b['state_dict'][k]), k
    assert same_history(a['optimizer'], b['optimizer'])
    assert same_history(a['exact_resume'], b['exact_resume'])


@pytest.fixture(scope='module')
def recursivemix_runs(tmp_path_factory):
    """The uninterrupted run and the exact resume (both shared by the
    tests below)."""
    tmp = tmp_path_factory.mktemp('dist_rm')
    config = _config(tmp, 'RecursiveMix')
    full, _ = _dist_train(tmp, config, 'full')
    resumed, out = _dist_train(tmp, config, 'resumed',
                               resume=tmp / 'full' / f'iter_{RESUME_AT}.pth')
    return tmp, full, resumed, out


@pytest.mark.slow
def test_recursivemix_dist_resume_is_exact_on_every_rank(recursivemix_runs):
    tmp, full, resumed, out = recursivemix_runs
    _check_full_run(full)
    # the histories differ between the ranks, at every iteration
    for it in range(N_ITERS):
        h0, h1 = (rec['records'][it]['history'] for rec in full)
        assert h0 != h1
    _check_exact(tmp, full, resumed, out)


@pytest.mark.slow
def test_recursivemix_checkpoint_holds_each_ranks_state(recursivemix_runs):
    tmp = recursivemix_runs[0]
    ckpt = _load(tmp / 'full' / f'iter_{RESUME_AT}.pth')
    entry = ckpt['exact_resume']
    assert entry['world_size'] == 2
    assert entry['batch_in_epoch'] == 1
    assert len(entry['ranks']) == 2
    hists = [r['modules']['rm_history'] for r in entry['ranks']]
    for h in hists:
        assert set(h) == {'epoch', 'inputs', 'targets', 'logits'}
        assert h['epoch'] == 1 and h['inputs'].shape[0] == 2
    assert not torch.equal(hists[0]['inputs'], hists[1]['inputs'])
    # the checkpoint's own state_dict holds rank 0's history only
    assert same_history(ckpt['state_dict']['rm_history._extra_state'], hists[0])
    # ... and rank 0's BatchNorm statistics; rank 1's are its own
    key = 'backbone.bn1.running_mean'
    bufs = [r['buffers'] for r in entry['ranks']]
    assert bufs[0].keys() == bufs[1].keys() and key in bufs[0]
    assert all(same_history(bufs[0][k], ckpt['state_dict'][k]) for k in bufs[0])
    assert not torch.equal(bufs[0][key], bufs[1][key])
    for r in entry['ranks']:
        assert set(r['rng']) >= {'random', 'numpy', 'torch'}
    assert entry['sampler_seed'] == ckpt['meta']['seed'] == 0


@pytest.mark.slow
def test_recursivemix_without_per_rank_state_rank1_differs(
        recursivemix_runs):
    """Control: the same resume without the per-rank module states."""
    tmp, full, _, _ = recursivemix_runs
    config = _config(tmp, 'RecursiveMix', per_rank=False)
    control, _ = _dist_train(tmp, config, 'control',
                             resume=tmp / 'full' / f'iter_{RESUME_AT}.pth')
    want = [_tail(rec) for rec in full]
    got = [rec['records'] for rec in control]
    for rec in got:
        assert [r['iter'] for r in rec] == list(range(RESUME_AT, N_ITERS))
    # first resumed iteration: rank 0 has its own history (the
    # checkpoint's), the same weights and RNG: identical
    assert got[0][0] == want[0][0]
    # rank 1 pasted rank 0's history: other mixed batch, other loss
    assert got[1][0]['samples'] == want[1][0]['samples']
    assert got[1][0]['inputs'] != want[1][0]['inputs']
    assert got[1][0]['losses'] != want[1][0]['losses']
    assert got[1][0]['history'] != want[1][0]['history']
    # the gradients are averaged: from then on both ranks train other
    # weights. Epoch 3 starts with an empty history (iteration 4 is not
    # mixed) and RecursiveMix's boxes do not depend on the weights: the
    # same batches enter the backbone, with other losses
    for rank in (0, 1):
        for g, w in zip(got[rank][1:], want[rank][1:]):
            assert g['samples'] == w['samples']
            assert g['inputs'] == w['inputs']
            assert g['losses'] != w['losses']
        assert control[rank]['final'] != full[rank]['final']


@pytest.mark.slow
def test_rmix_dist_resume_is_exact_on_every_rank(tmp_path):
    config = _config(tmp_path, 'RMix')
    full, _ = _dist_train(tmp_path, config, 'full')
    _check_full_run(full)
    for rec in full:  # saliency pass + training pass
        assert all(len(r['inputs']) == 2 for r in rec['records'])
        assert all(r['history'] is None for r in rec['records'])
    # diff_rank_seed: the ranks' RNG streams (so their R-Mix draws) differ
    ckpt = _load(tmp_path / 'full' / f'iter_{RESUME_AT}.pth')
    rngs = [r['rng'] for r in ckpt['exact_resume']['ranks']]
    assert not torch.equal(rngs[0]['torch'], rngs[1]['torch'])
    # the sampler's seed is a random one broadcast by rank 0, not the
    # runner's (0): the resumed run must take the checkpoint's
    assert isinstance(ckpt['exact_resume']['sampler_seed'], int)
    resumed, out = _dist_train(tmp_path, config, 'resumed',
                               resume=tmp_path / 'full' /
                               f'iter_{RESUME_AT}.pth')
    _check_exact(tmp_path, full, resumed, out)


@pytest.mark.slow
def test_best_checkpoint_holds_each_ranks_state(recursivemix_runs):
    """``best_*`` checkpoints are written outside ``CheckpointHook``'s
    regular path; they hold every rank's entry too, the same as the regular
    checkpoint of that iteration (issue 14)."""
    tmp = recursivemix_runs[0]
    best = sorted((tmp / 'full').glob('best_*.pth'))
    assert best, list((tmp / 'full').iterdir())
    ckpt = _load(best[-1])
    it = ckpt['meta']['iter']
    entry = ckpt['exact_resume']
    assert entry['world_size'] == 2 and len(entry['ranks']) == 2
    regular = _load(tmp / 'full' / f'iter_{it}.pth')['exact_resume']
    for got, want in zip(entry['ranks'], regular['ranks']):
        assert same_history(got['modules'], want['modules'])
        assert same_history(got['buffers'], want['buffers'])
        assert same_history(got['rng'], want['rng'])
    hists = [r['modules']['rm_history'] for r in entry['ranks']]
    assert not torch.equal(hists[0]['inputs'], hists[1]['inputs'])


@pytest.mark.slow
def test_rlmix_dist_resume_is_exact_on_every_rank(tmp_path):
    """RL-Mix: each rank's PPO agent (its rollout, policy and optimiser) is
    per-rank state, restored from the hook's entry."""
    pytest.importorskip('stable_baselines3')
    config = _config(tmp_path, 'RLMix')
    full, _ = _dist_train(tmp_path, config, 'full')
    _check_full_run(full)
    ckpt = _load(tmp_path / 'full' / f'iter_{RESUME_AT}.pth')
    agents = [r['modules'] for r in ckpt['exact_resume']['ranks']]
    assert agents[0].keys() == agents[1].keys() and agents[0]
    assert not same_history(agents[0], agents[1])
    resumed, out = _dist_train(tmp_path, config, 'resumed',
                               resume=tmp_path / 'full' /
                               f'iter_{RESUME_AT}.pth')
    _check_exact(tmp_path, full, resumed, out)


# ------------------------------------------------ detection, segmentation
#: The key of the det/seg augment's history among the hook's module states.
AUGMENT_HISTORY = 'data_preprocessor.batch_augments.0.history'


def _detseg_config(tmp_path, task: str) -> str:
    """The shrunk exact-resume configs of ``tests/_helpers.py`` as a file:
    det (ATSS, RecursiveMix, 8 images: 2 iterations per epoch and rank,
    2 epochs) or seg (UPerNet, RecursiveMix, ``IterBasedTrainLoop``, 5
    iterations), with the hook and the probe."""
    if task == 'det':
        cfg = det_config(tmp_path, num_train=8)
    else:
        cfg = seg_config(tmp_path, 'RecursiveMix', num_train=8)
    cfg.randomness = dict(seed=0)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    cfg.custom_imports = dict(imports=['mixplugins'],
                              allow_failed_imports=False)
    cfg.custom_hooks = [dict(type='ExactResumeHook'),
                        dict(type='exact_resume_probe.Record')]
    (tmp_path / 'exact_resume_probe.py').write_text(PROBE)
    path = tmp_path / f'{task}.py'
    cfg.dump(str(path))
    return str(path)


@pytest.mark.slow
@pytest.mark.parametrize('task,resume_at,n_iters', [('det', 3, 4),
                                                    ('seg', 3, 5)])
def test_detseg_recursivemix_dist_resume_is_exact_on_every_rank(
        tmp_path, task, resume_at, n_iters):
    """det RecursiveMix (epoch loop, resumed mid-epoch 2) and seg
    RecursiveMix (iteration loop): each rank pastes its own history, saved
    in the hook's entry; the resumed ranks record exactly what the
    uninterrupted ones did, and end in the same state."""
    config = _detseg_config(tmp_path, task)
    full, _ = _dist_train(tmp_path, config, 'full')
    for rec in full:
        assert [r['iter'] for r in rec['records']] == list(range(n_iters))
    for it in range(n_iters):
        r0, r1 = (rec['records'][it] for rec in full)
        assert not set(r0['samples']) & set(r1['samples'])
        assert r0['history'] != r1['history']
    ckpt = _load(tmp_path / 'full' / f'iter_{resume_at}.pth')
    entry = ckpt['exact_resume']
    assert entry['world_size'] == 2 and len(entry['ranks']) == 2
    hists = [r['modules'][AUGMENT_HISTORY] for r in entry['ranks']]
    assert not torch.equal(hists[0]['inputs'], hists[1]['inputs'])
    # the checkpoint's own state_dict holds rank 0's history only
    assert same_history(ckpt['state_dict'][AUGMENT_HISTORY + '._extra_state'],
                        hists[0])

    resumed, _ = _dist_train(tmp_path, config, 'resumed',
                             resume=tmp_path / 'full' /
                             f'iter_{resume_at}.pth')
    for rank in (1, 0):
        want = [r for r in full[rank]['records'] if r['iter'] >= resume_at]
        got = resumed[rank]['records']
        assert [r['iter'] for r in got] == list(range(resume_at, n_iters))
        for g, w in zip(got, want):
            assert g == w, f'rank {rank}, iteration {w["iter"]} differs'
        assert resumed[rank]['final'] == full[rank]['final']
