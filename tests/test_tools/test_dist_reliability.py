"""Distributed training on CPU (gloo, 2 processes): RecursiveMix for
detection and segmentation through ``tools/dist_train.sh``, and R-Mix's
saliency pass under DDP (issue 7, item 1).

* ``test_dist_train_recursivemix_{det,seg}``: the repository's RecursiveMix
  ATSS and UPerNet configs, shrunk to a ResNet-18 with 8 base channels (the
  shrink of ``tests/test_reliability/_helpers.py``), train 2 iterations per
  process on generated COCO / ADE20K data
  (:mod:`mixplugins.datasets.synthetic`). A test-only hook, written into
  ``tmp_path`` and loaded by its dotted name, dumps each rank's augment
  history after every iteration to ``work_dir/hist_rank{r}.pt``.
  ``test_empty_history_state_survives_mmengine_broadcast`` is the unit
  check of what made these runs fail at first (mmengine broadcasts every
  ``state_dict`` entry when training starts under DDP).
* ``test_rmix_saliency_pass_adds_no_ddp_reduction``: two processes spawned
  here wrap the real ``MixImageClassifier`` in mmengine's
  ``MMDistributedDataParallel`` (``device_ids=None``) and train through its
  ``train_step``. A DDP communication hook counts the reducer's bucket
  all-reduces; R-Mix must do as many per iteration as the plain model, and
  a forward/backward through the wrapper (what a saliency pass through DDP
  would be) is counted.
* ``test_ddp_gradient_is_the_mean_of_the_shards``: the averaged DDP
  gradient equals the mean over both shards of (a) single-process steps
  with the same random draws and (b) the gradient of the loss written out
  by hand on the recorded mixed batches, with no saliency pass.
"""
import copy
import os
import os.path as osp
import random
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from mixplugins.datasets.synthetic import (SHAPE_CLASSES, make_ade20k_shapes,
                                           make_coco_shapes)
from tests._helpers import (TINY_SEG_MODEL, cls_batch, cls_model,
                            free_port, same_history, tiny_det_model,
                            tool_env)

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DET_CONFIG = osp.join(REPO, 'configs', 'detection',
                      'atss_r50_fpn_rm-det_1x_coco.py')
SEG_CONFIG = osp.join(REPO, 'configs', 'segmentation',
                      'upernet_r50_rm-seg_512x512_80k_ade20k.py')
HIST_KEY = 'data_preprocessor.batch_augments.0.history._extra_state'

# ------------------------------------------------ tools/dist_train.sh runs
HIST_PROBE = r'''
"""Test-only hook: dump this rank's RecursiveMix history every iteration."""
import copy
import os.path as osp

import torch
from mmengine.dist import get_rank, get_world_size
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper


class HistDump(Hook):

    def __init__(self):
        self.records = []

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        model = runner.model
        if is_model_wrapper(model):
            model = model.module
        aug = model.data_preprocessor.batch_augments[0]
        rank = get_rank()
        self.records.append(dict(
            iter=runner.iter + 1,
            rank=rank,
            world_size=get_world_size(),
            wrapped=type(runner.model).__name__,
            sync_bn=sum(isinstance(m, torch.nn.SyncBatchNorm)
                        for m in model.modules()),
            bn=sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                   for m in model.modules()),
            img_paths=[s.img_path for s in data_batch['data_samples']],
            history=copy.deepcopy(aug.history.get_extra_state())))
        torch.save(self.records,
                   osp.join(runner.work_dir, f'hist_rank{rank}.pt'))
'''

# ResNet-18 with 8 stem/base channels (stage outputs 8, 16, 32, 64), as
# tests/_helpers.py shrinks the repository's configs (``model`` is
# ``tiny_det_model(...)`` / ``TINY_SEG_MODEL`` there).
DET_SHRINK = """_base_ = [{config!r}]
data_root = {root!r}
model = {model!r}
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(80, 64), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=train_pipeline,
                 metainfo=dict(classes={classes!r})))
train_cfg = dict(max_epochs=1)
default_hooks = dict(logger=dict(interval=1))
custom_hooks = [dict(type='hist_probe.HistDump')]
randomness = dict(seed=0)
"""

SEG_SHRINK = """_base_ = [{config!r}]
data_root = {root!r}
crop_size = (64, 64)
model = dict(data_preprocessor=dict(size=crop_size), **{model!r})
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(128, 64), ratio_range=(0.5, 2.0),
         keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs')
]
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
train_cfg = dict(max_iters=2, val_interval=1000)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=2))
custom_hooks = [dict(type='hist_probe.HistDump')]
randomness = dict(seed=0)
"""

# UPerNet on mmseg's ResNet-18 with SyncBN everywhere (the config's
# norm_cfg): backbone stem 1 + 8 basic blocks x 2 + 3 downsamples = 20;
# UPerHead: 4 PPM branches (pool scales 1, 2, 3, 6) + PPM bottleneck 1
# + 3 lateral + 3 FPN convs + FPN bottleneck 1 = 12; FCNHead (1 conv) 1.
SEG_SYNC_BN = 20 + 12 + 1
N_TRAIN = 8  # images: 2 processes x 2 iterations x 2 images


def _dist_train(tmp_path, config_text: str) -> str:
    """Write the shrunk config and the probe, run ``dist_train.sh CONFIG 2``
    and return its output (expecting success)."""
    config = tmp_path / 'shrunk.py'
    config.write_text(config_text)
    (tmp_path / 'hist_probe.py').write_text(HIST_PROBE)
    env = tool_env(tmp_path,
                   threads=1,
                   PYTHON=sys.executable,
                   PORT=free_port())
    proc = subprocess.run([
        'bash',
        osp.join(REPO, 'tools', 'dist_train.sh'),
        str(config), '2', '--work-dir',
        str(tmp_path / 'work'), '--no-validate'
    ],
                          cwd=str(tmp_path),
                          env=env,
                          capture_output=True,
                          text=True,
                          timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    return out


def _check_per_rank_history(work_dir, checkpoint: str) -> list:
    """Common assertions on the two ranks' dumps; returns them."""
    recs = [
        torch.load(str(work_dir / f'hist_rank{r}.pt'), weights_only=False)
        for r in (0, 1)
    ]
    for r, rec in enumerate(recs):
        assert [x['iter'] for x in rec] == [1, 2]
        assert all(x['rank'] == r and x['world_size'] == 2 for x in rec)
        assert all(x['wrapped'] == 'MMDistributedDataParallel' for x in rec)
        assert all(x['history']['inputs'] is not None for x in rec)
    # each rank read its own shard: disjoint images, together all of them
    paths = [{p for x in rec for p in x['img_paths']} for rec in recs]
    assert len(paths[0]) == len(paths[1]) == N_TRAIN // 2
    assert not paths[0] & paths[1]
    assert len(paths[0] | paths[1]) == N_TRAIN
    # ... so the histories (the last mixed batch of each rank) differ
    for it in (0, 1):
        h0, h1 = recs[0][it]['history'], recs[1][it]['history']
        assert h0['inputs'].shape[0] == h1['inputs'].shape[0] == 2
        assert not (h0['inputs'].shape == h1['inputs'].shape
                    and torch.equal(h0['inputs'], h1['inputs']))
    # every iteration replaces the history
    for rec in recs:
        assert not torch.equal(rec[0]['history']['inputs'],
                               rec[1]['history']['inputs'])
    # rank 0 writes the checkpoint: it holds rank 0's final history
    ckpt = torch.load(str(work_dir / checkpoint), weights_only=False)
    saved = ckpt['state_dict'][HIST_KEY]
    assert same_history(saved, recs[0][-1]['history'])
    assert not same_history(saved, recs[1][-1]['history'])
    assert ckpt['meta']['iter'] == 2
    return recs


def _det_step(aug):
    from mmdet.structures import DetDataSample
    samples = [
        DetDataSample(metainfo=dict(img_shape=(16, 16))) for _ in range(2)
    ]
    aug(torch.rand(2, 3, 16, 16), samples)


def _seg_step(aug):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    samples = []
    for _ in range(2):
        s = SegDataSample(metainfo=dict(img_shape=(16, 16)))
        s.gt_sem_seg = PixelData(data=torch.zeros(1, 16, 16,
                                                  dtype=torch.long))
        samples.append(s)
    aug(torch.rand(2, 3, 16, 16), samples)


@pytest.mark.parametrize('framework', ['det', 'seg'])
def test_empty_history_state_survives_mmengine_broadcast(framework):
    """Under DDP, ``Runner._init_model_weights`` broadcasts every
    ``state_dict`` entry from rank 0 before training: an empty
    RecursiveMix history must be made of tensors (it was a dict of None,
    and ``dist_train.sh`` failed there); loading it clears a history."""
    from mmengine.dist.utils import get_data_device
    if framework == 'det':
        from mixplugins.detection.recursivemix import RecursiveMix
        step = _det_step
    else:
        from mixplugins.segmentation.recursivemix import RecursiveMix
        step = _seg_step
    fresh = RecursiveMix()
    state = fresh.state_dict()
    assert list(state) == ['history._extra_state']
    assert get_data_device(
        state['history._extra_state']) == torch.device('cpu')
    used = RecursiveMix()
    step(used)
    assert used.history.inputs is not None
    used.load_state_dict(state)
    assert used.history.inputs is None


@pytest.mark.slow
def test_dist_train_recursivemix_det(tmp_path):
    info = make_coco_shapes(str(tmp_path / 'coco'),
                            num_train=N_TRAIN,
                            num_val=1,
                            sizes=((64, 80), ))
    out = _dist_train(
        tmp_path,
        DET_SHRINK.format(config=DET_CONFIG,
                          root=info['data_root'] + '/',
                          model=tiny_det_model(len(SHAPE_CLASSES)),
                          classes=tuple(SHAPE_CLASSES)))
    for rank in (0, 1):
        assert f"backend 'gloo' (rank {rank}/2)" in out
    # ATSS uses BN (ResNet-18: 20 layers; GN in the head): nothing to revert
    assert 'SyncBatchNorm' not in out
    # 8 images, 2 per batch, 2 processes: 2 iterations in the epoch
    assert re.search(r'Epoch\(train\) \[1\]\[2/2\]', out), out[-3000:]
    assert not re.search(r'Epoch\(train\) \[1\]\[3/', out)
    recs = _check_per_rank_history(tmp_path / 'work', 'epoch_1.pth')
    for rec in recs:
        for x in rec:
            assert (x['sync_bn'], x['bn']) == (0, 20)
            assert len(x['history']['samples']) == 2
            assert tuple(x['history']['inputs'].shape) == (2, 3, 64, 96)
            assert x['history']['epoch'] == 0
    # the box targets go with each rank's own images
    b0, b1 = (torch.cat([
        s['gt_instances']['bboxes'] for s in rec[-1]['history']['samples']
    ]) for rec in recs)
    assert len(b0) and len(b1)
    assert not (b0.shape == b1.shape and torch.equal(b0, b1))


@pytest.mark.slow
def test_dist_train_recursivemix_seg(tmp_path):
    info = make_ade20k_shapes(str(tmp_path / 'ade'),
                              num_train=N_TRAIN,
                              num_val=1,
                              sizes=((64, 80), (48, 64)))
    out = _dist_train(
        tmp_path,
        SEG_SHRINK.format(config=SEG_CONFIG,
                          root=info['data_root'],
                          model=TINY_SEG_MODEL))
    for rank in (0, 1):
        assert f"backend 'gloo' (rank {rank}/2)" in out
    # the warning of rank 0 (mmengine shows only errors of other ranks)
    assert (f'reverted {SEG_SYNC_BN} SyncBatchNorm layer(s) to BatchNorm'
            in out), out[-3000:]
    assert re.search(r'Iter\(train\) \[2/2\]', out), out[-3000:]
    assert not re.search(r'Iter\(train\) \[3/', out)
    recs = _check_per_rank_history(tmp_path / 'work', 'iter_2.pth')
    for rec in recs:
        for x in rec:
            # reverted on every rank
            assert (x['sync_bn'], x['bn']) == (0, SEG_SYNC_BN)
            assert tuple(x['history']['inputs'].shape) == (2, 3, 64, 64)
            assert sorted(x['history']['maps']) == ['gt_sem_seg']
    m0 = recs[0][-1]['history']['maps']['gt_sem_seg']
    m1 = recs[1][-1]['history']['maps']['gt_sem_seg']
    assert not torch.equal(m0, m1)


# ------------------------------------ R-Mix's saliency pass under DDP
NUM_CLASSES = 5
ITERS = 2
LR = 0.1
#: Small buckets: several all-reduces per iteration, so a whole extra
#: reduction pass would show even where the bucket layout changes.
BUCKET_MB = 0.01
VARIANTS = {
    'plain': None,
    'rmix': dict(type='RMix'),
    'rmix_clean': dict(type='RMix', clean_loss_weight=1.0),
}


def _classifier(augment, soft=None):
    """A tiny ``MixImageClassifier`` (ResNet-18, 8 base channels) with
    ``augment`` as its only batch augment, or none; the loss takes soft
    targets when ``soft`` (default: with an augment). Every call gives the
    same initial weights."""
    soft = augment is not None if soft is None else soft
    torch.manual_seed(0)
    return cls_model(augment,
                     num_classes=NUM_CLASSES,
                     head=dict(type='LinearClsHead',
                               num_classes=NUM_CLASSES,
                               in_channels=64,
                               loss=dict(type='CrossEntropyLoss',
                                         use_soft=soft)))


def _shard(rank: int, it: int) -> dict:
    """Rank ``rank``'s batch of iteration ``it`` (4 raw 32x32 images)."""
    return cls_batch(4, 32, seed=100 * it + rank, num_classes=NUM_CLASSES)


def _seed(rank: int, it: int) -> None:
    """The random state of rank ``rank`` at iteration ``it`` (python, numpy
    and torch: the draws of the mix)."""
    s = 1000 * it + rank
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)


def _grads(model) -> dict:
    return {
        n: p.grad.detach().clone()
        for n, p in model.named_parameters() if p.grad is not None
    }


def _sgd_step(model, opt, grads: dict) -> None:
    for n, p in model.named_parameters():
        p.grad = grads[n].clone() if n in grads else None
    opt.step()


def _mean(per_shard: list) -> dict:
    return {
        n: sum(g[n] for g in per_shard) / len(per_shard)
        for n in per_shard[0]
    }


def _replay_step(model, rank: int, it: int):
    """One single-process step of the unwrapped model, augment included, on
    ``rank``'s shard with ``rank``'s draws: (gradients, mixed inputs)."""
    model.zero_grad(set_to_none=True)
    _seed(rank, it)
    data = model.data_preprocessor(_shard(rank, it), training=True)
    loss, _ = model.parse_losses(model(**data, mode='loss'))
    loss.backward()
    return _grads(model), data['inputs'].detach().clone()


def _direct_step(model, mixed: dict, clean: dict, clean_weight: float):
    """Gradients of the training loss written out by hand, with no augment
    and no saliency pass: the head's loss on the recorded mixed batch, plus
    ``clean_weight`` x the cross-entropy of the clean batch."""
    import torch.nn.functional as F
    model.zero_grad(set_to_none=True)
    loss, _ = model.parse_losses(
        model.loss(mixed['inputs'], mixed['data_samples']))
    if clean_weight:
        labels = torch.cat([s.gt_label for s in clean['data_samples']])
        logits = model(clean['inputs'], mode='tensor')
        loss = loss + clean_weight * F.cross_entropy(logits.float(), labels)
    loss.backward()
    return _grads(model)


def _ddp_run(rank: int, world_size: int, augment) -> dict:
    """Train ``ITERS`` iterations of the DDP-wrapped model through
    ``MMDistributedDataParallel.train_step`` (counting the reducer's
    all-reduces and keeping the reduced gradients), then compute the same
    steps' gradients single-process in two ways."""
    import torch.distributed as dist
    from mmengine.model import MMDistributedDataParallel
    from mmengine.optim import OptimWrapper
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import \
        allreduce_hook

    model = _classifier(augment)
    ddp = MMDistributedDataParallel(module=model,
                                    device_ids=None,
                                    broadcast_buffers=False,
                                    bucket_cap_mb=BUCKET_MB)
    reductions = [0]

    def counting_hook(state, bucket):
        reductions[0] += 1
        return allreduce_hook(state, bucket)

    ddp.register_comm_hook(dist.group.WORLD, counting_hook)

    named = list(model.named_parameters())
    seen = []

    class GradProbe(OptimWrapper):
        """Keeps the (reduced) gradients seen by each optimizer step."""

        def step(self, **kwargs):
            seen.append({
                n: p.grad.detach().clone()
                for n, p in named if p.grad is not None
            })
            super().step(**kwargs)

    probe = GradProbe(torch.optim.SGD(model.parameters(), lr=LR))
    mixed = []
    handle = model.data_preprocessor.register_forward_hook(
        lambda mod, args, out: mixed.append(copy.deepcopy(out)))
    counts = []
    for it in range(ITERS):
        before = reductions[0]
        _seed(rank, it)
        ddp.train_step(_shard(rank, it), probe)
        counts.append(reductions[0] - before)
    handle.remove()

    # control: a forward/backward of the wrapper (what a saliency pass
    # through DDP to the parameters would be) is counted
    data = model.data_preprocessor(_shard(rank, ITERS), training=False)
    before = reductions[0]
    ddp(**data, mode='tensor').float().pow(2).mean().backward()
    control = reductions[0] - before
    model.zero_grad(set_to_none=True)
    # every rank's mixed batches (after the counted iterations)
    all_mixed = [None] * world_size
    dist.all_gather_object(all_mixed, mixed)

    # (a) replay: each shard single-process with that rank's draws
    ref = _classifier(augment)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=LR)
    replay, own, replay_mixed = [], [], []
    for it in range(ITERS):
        per_shard = [_replay_step(ref, r, it) for r in range(world_size)]
        replay.append(_mean([g for g, _ in per_shard]))
        own.append(per_shard[rank][0])
        replay_mixed.append(per_shard[rank][1])
        _sgd_step(ref, ref_opt, replay[-1])

    # (b) direct: the loss on the recorded mixed batches, no augment
    direct_model = _classifier(None, soft=augment is not None)
    direct_opt = torch.optim.SGD(direct_model.parameters(), lr=LR)
    weight = (augment or {}).get('clean_loss_weight', 0.0)
    direct = []
    for it in range(ITERS):
        per_shard = []
        for r in range(world_size):
            clean = direct_model.data_preprocessor(_shard(r, it),
                                                   training=False)
            per_shard.append(
                _direct_step(direct_model, all_mixed[r][it], clean, weight))
        direct.append(_mean(per_shard))
        _sgd_step(direct_model, direct_opt, direct[-1])
    return dict(counts=counts,
                control=control,
                ddp_grads=seen,
                replay_grads=replay,
                direct_grads=direct,
                own_grads=own,
                ddp_mixed=[m['inputs'] for m in mixed],
                replay_mixed=replay_mixed,
                clean=[
                    model.data_preprocessor(_shard(rank, it))['inputs']
                    for it in range(ITERS)
                ],
                params=len(named))


def _ddp_worker(rank: int, world_size: int, init_file: str,
                out_dir: str) -> None:
    """Entry point of a spawned process."""
    import torch.distributed as dist
    torch.set_num_threads(1)
    dist.init_process_group('gloo',
                            init_method=f'file://{init_file}',
                            rank=rank,
                            world_size=world_size)
    try:
        import mixplugins  # noqa: F401  (registers MixImageClassifier, RMix)
        results = {
            name: _ddp_run(rank, world_size, aug)
            for name, aug in VARIANTS.items()
        }
        torch.save(results, osp.join(out_dir, f'rank{rank}.pt'))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope='module')
def ddp_results(tmp_path_factory):
    """Run :func:`_ddp_worker` in 2 gloo processes; their results."""
    import torch.multiprocessing as mp
    tmp = tmp_path_factory.mktemp('ddp')
    old = os.environ.get('OMP_NUM_THREADS')
    os.environ['OMP_NUM_THREADS'] = '1'  # inherited by the spawned processes
    try:
        mp.spawn(_ddp_worker,
                 args=(2, str(tmp / 'pg_init'), str(tmp)),
                 nprocs=2,
                 join=True)
    finally:
        if old is None:
            os.environ.pop('OMP_NUM_THREADS')
        else:
            os.environ['OMP_NUM_THREADS'] = old
    return [
        torch.load(str(tmp / f'rank{r}.pt'), weights_only=False)
        for r in (0, 1)
    ]


@pytest.mark.slow
def test_rmix_saliency_pass_adds_no_ddp_reduction(ddp_results):
    for res in ddp_results:
        plain = res['plain']['counts']
        # DDP rebuilds its buckets after the first backward (the first
        # iteration reduces everything in one bucket of 1 MB), then uses
        # BUCKET_MB-sized ones: several all-reduces
        assert len(plain) == ITERS and all(c > 0 for c in plain), plain
        assert plain[-1] > 1, plain
        for name in ('rmix', 'rmix_clean'):
            assert res[name]['counts'] == plain, (name, res[name]['counts'],
                                                  plain)
        # the counter does see a backward through the wrapper
        for name in VARIANTS:
            assert res[name]['control'] == plain[-1]
    assert ddp_results[0]['plain']['counts'] == ddp_results[1]['plain'][
        'counts']


@pytest.mark.slow
@pytest.mark.parametrize('variant', ['plain', 'rmix', 'rmix_clean'])
def test_ddp_gradient_is_the_mean_of_the_shards(ddp_results, variant):
    """DDP's averaged gradient, at every iteration, equals

    * the mean of single-process steps of both shards with the same R-Mix
      draws (replay), and
    * the mean of the gradients of the loss written out by hand on the
      recorded mixed batches (plus the clean cross-entropy where
      ``clean_loss_weight`` asks for it): the saliency pass adds nothing
      else to the parameter gradients.
    """
    for rank, res in enumerate(ddp_results):
        r = res[variant]
        assert len(r['ddp_grads']) == ITERS
        for it in range(ITERS):
            # the replay drew the same mixed batch as the DDP run
            torch.testing.assert_close(r['ddp_mixed'][it],
                                       r['replay_mixed'][it],
                                       rtol=0,
                                       atol=0)
            ddp, own = r['ddp_grads'][it], r['own_grads'][it]
            assert len(ddp) == r['params']
            for key in ('replay_grads', 'direct_grads'):
                ref = r[key][it]
                assert ddp.keys() == ref.keys()
                for n in ddp:
                    torch.testing.assert_close(
                        ddp[n],
                        ref[n],
                        rtol=1e-5,
                        atol=1e-7,
                        msg=lambda m: f'{variant} {key} {n} iter {it}: {m}')
            # each shard alone gives another gradient (the test can fail)
            assert any(not torch.allclose(ddp[n], own[n], atol=1e-6)
                       for n in ddp)
            # R-Mix did mix (the plain model trains on the clean batch)
            assert torch.equal(r['ddp_mixed'][it],
                               r['clean'][it]) == (variant == 'plain')
    # both ranks hold the same averaged gradient
    for it in range(ITERS):
        g0 = ddp_results[0][variant]['ddp_grads'][it]
        g1 = ddp_results[1][variant]['ddp_grads'][it]
        for n in g0:
            torch.testing.assert_close(g0[n], g1[n], rtol=0, atol=0)
