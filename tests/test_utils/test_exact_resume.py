"""``ExactResumeHook``: stop at a checkpoint, resume, continue == never stop.

For every stateful method (R-Mix, RL-Mix and RecursiveMix in mmpretrain,
RecursiveMix in mmdet and in mmseg, CutMix in mmseg) a real mmengine runner
trains a tiny model with a checkpoint after every iteration and records, per
iteration, the loss and a hash of every tensor that entered the backbone
(the mixed batch; R-Mix also feeds its saliency pass). Then runs resume
from checkpoints taken mid-epoch, at the end of an epoch and after a
validation, and must record exactly (bitwise, CPU) what the uninterrupted
run recorded after that point, and end with the same weights.

Control: without the hook (mmengine alone) the same resume differs, so the
comparison can fail.
"""
import copy
import hashlib
import os.path as osp
import shutil

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from PIL import Image

from mixplugins.engine.exact_resume import (ExactResumeHook, get_rng_state,
                                     set_rng_state)
from mixplugins.utils.launcher import build_runner, init_framework_scope

from tests._helpers import det_config, no_val, seg_config

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TINY_CLS = osp.join(REPO, 'tests', 'test_tools', 'configs',
                    'tiny_resnet_custom.py')


class Recorder(Hook):
    """Per iteration: the loss and the hashes of the backbone's inputs."""

    priority = 'LOWEST'

    def __init__(self, out: list):
        self.out = out
        self._inputs = []

    def before_train(self, runner):
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        model.backbone.register_forward_pre_hook(self._record)

    def _record(self, module, args):
        if not module.training:  # validation
            return
        x = args[0].detach().contiguous().cpu()
        self._inputs.append(hashlib.sha1(x.numpy().tobytes()).hexdigest())

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        loss = float(sum(v for k, v in outputs.items() if 'loss' in k))
        self.out.append((runner.iter, loss, tuple(self._inputs)))
        self._inputs = []


# ---------------------------------------------------------------- configs
def _write_pngs(root, n_per_class=3):
    rng = np.random.default_rng(0)
    for split, n in (('train', n_per_class), ('val', 1)):
        for cls in ('cat', 'dog'):
            d = osp.join(root, split, cls)
            import os
            os.makedirs(d)
            for i in range(n):
                img = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
                Image.fromarray(img).save(osp.join(d, f'{i}.png'))


CLS_AUGMENTS = dict(
    RMix=dict(type='RMix', grids=(2, 4)),
    RecursiveMix=dict(type='RecursiveMix'),
    RLMix=dict(type='RLMix', agent_grid=4, n_steps=2, batch_size=2,
               n_epochs=1),
)


def cls_config(root, augment):
    cfg = Config.fromfile(TINY_CLS)
    cfg.randomness = dict(seed=0)
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = root
    cfg.model.type = 'MixImageClassifier'
    cfg.model.head.loss = dict(type='CrossEntropyLoss', use_soft=True)
    cfg.model.train_cfg = dict(augments=[copy.deepcopy(CLS_AUGMENTS[augment])])
    # pipeline randomness in the main process, so it is restored too
    cfg.train_dataloader.dataset.pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='RandomFlip', prob=0.5),
        dict(type='PackInputs')
    ]
    # 6 images, batch 2: 3 iterations per epoch; validation after each
    cfg.train_cfg = dict(by_epoch=True, max_epochs=2, val_interval=1)
    cfg.param_scheduler = dict(
        type='MultiStepLR', by_epoch=False, milestones=[2], gamma=0.5)
    cfg.default_hooks.checkpoint = dict(
        type='CheckpointHook', interval=1, by_epoch=False)
    return cfg


# ---------------------------------------------------------------- running
def _train(cfg, work_dir, name, resume_from=None, hook=True, hook_cfg=None):
    cfg = copy.deepcopy(cfg)
    cfg.setdefault('randomness', dict(seed=0))
    cfg.work_dir = str(work_dir)
    cfg.experiment_name = name  # a fresh logger and message hub per run
    cfg.launcher = 'none'
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    cfg.custom_imports = dict(imports=['mixplugins'])
    records = []
    cfg.custom_hooks = [h for h in cfg.get('custom_hooks', [])
                        if h['type'] != 'ExactResumeHook']
    if hook:
        cfg.custom_hooks.append(
            dict(type='ExactResumeHook', **(hook_cfg or {})))
    if resume_from is not None:
        cfg.resume = True
        cfg.load_from = str(resume_from)
    init_framework_scope(cfg)
    runner = build_runner(cfg)
    runner.register_hook(Recorder(records))
    runner.train()
    model = runner.model.module if is_model_wrapper(
        runner.model) else runner.model
    state = {k: v.detach().clone() for k, v in model.state_dict().items()
             if isinstance(v, torch.Tensor)}
    return records, state


def _assert_same_tail(full, resumed, start):
    expected = [r for r in full[0] if r[0] >= start]
    assert [r[0] for r in resumed[0]] == [r[0] for r in expected]
    for got, want in zip(resumed[0], expected):
        assert got == want, f'iteration {want[0]} differs'
    assert resumed[1].keys() == full[1].keys()
    for k in full[1]:
        assert torch.equal(resumed[1][k], full[1][k]), k


def _check_resumes(tmp_path, cfg, points, hook=True, name='iter_{}.pth',
                   per_epoch=1):
    full = _train(cfg, tmp_path / 'full', 'full', hook=hook)
    assert len({r[0] for r in full[0]}) == len(full[0]) > max(points)
    for p in points:
        ckpt = tmp_path / 'full' / name.format(p // per_epoch)
        resumed = _train(cfg, tmp_path / f'resume{p}', f'resume{p}',
                         resume_from=ckpt, hook=hook)
        _assert_same_tail(full, resumed, start=p)
    return full


@pytest.fixture
def png_root(tmp_path):
    root = str(tmp_path / 'data')
    _write_pngs(root)
    return root


@pytest.mark.slow
@pytest.mark.parametrize('augment', ['RMix', 'RecursiveMix', 'RLMix'])
def test_classification_resume_is_exact(tmp_path, png_root, augment):
    # 3 iterations per epoch: 2 = mid-epoch 1; 3 = end of epoch 1, before
    # its validation; 4 = mid-epoch 2, after a validation
    full = _check_resumes(tmp_path, cls_config(png_root, augment), (2, 3, 4))
    # the recorded backbone inputs really are mixed batches that change
    assert len({r[2] for r in full[0]}) == len(full[0])
    if augment != 'RecursiveMix':  # R-Mix: saliency pass + training pass
        assert [len(r[2]) for r in full[0]] == [2] * len(full[0])


@pytest.mark.slow
def test_resume_from_an_epoch_checkpoint_is_exact(tmp_path, png_root):
    """By-epoch checkpoints are written before the epoch's validation:
    the validation must not consume the training RNG stream."""
    cfg = cls_config(png_root, 'RMix')
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=1)
    _check_resumes(tmp_path, cfg, (3, ), name='epoch_{}.pth', per_epoch=3)


def test_resume_without_a_configured_seed_is_exact(tmp_path, png_root):
    """``randomness.seed=None``: the resumed runner draws another seed;
    the hook gives the sampler the checkpoint's so the data order goes on."""
    cfg = cls_config(png_root, 'RMix')
    cfg.randomness = dict(seed=None)
    _check_resumes(tmp_path, cfg, (2, ))


def test_without_the_hook_the_resume_differs(tmp_path, png_root):
    """mmengine alone replays the partial epoch from batch 0 and draws other
    mixing parameters: the test above can fail."""
    cfg = cls_config(png_root, 'RMix')
    full = _train(cfg, tmp_path / 'full', 'full', hook=False)
    resumed = _train(cfg, tmp_path / 'r', 'r', hook=False,
                     resume_from=tmp_path / 'full' / 'iter_2.pth')
    tail = [r for r in full[0] if r[0] >= 2]
    assert [r[2] for r in resumed[0][:len(tail)]] != [r[2] for r in tail]
    # 2 trained batches of epoch 1 are trained again: 6 - 2 + 2 iterations
    assert len(resumed[0]) == len(tail) + 2


@pytest.mark.slow
def test_detection_recursivemix_resume_is_exact(tmp_path):
    # 6 images, batch 2 (aspect-ratio groups): 3 iterations per epoch
    _check_resumes(tmp_path, det_config(tmp_path), (2, 4))


@pytest.mark.slow
@pytest.mark.parametrize('augment', ['RecursiveMix', 'CutMix'])
def test_segmentation_resume_is_exact(tmp_path, augment):
    # IterBasedTrainLoop: mmengine's catch-up, then the RNG is restored
    _check_resumes(tmp_path, seg_config(tmp_path, augment), (3, ))


def test_checkpoint_entry_and_load_from_is_not_a_resume(tmp_path, png_root):
    cfg = cls_config(png_root, 'RecursiveMix')
    cfg.train_cfg.max_epochs = 1
    _train(cfg, tmp_path / 'a', 'a')
    from mixplugins.engine.patches import install_patches
    install_patches()
    ckpt = torch.load(str(tmp_path / 'a' / 'iter_2.pth'), map_location='cpu')
    entry = ckpt['exact_resume']
    assert entry['world_size'] == 1 and entry['batch_in_epoch'] == 2
    (rank0, ) = entry['ranks']
    assert set(rank0['rng']) >= {'random', 'numpy', 'torch'}
    # the RecursiveMix history is a per-rank module state
    (name, hist), = rank0['modules'].items()
    assert 'history' in name.lower() or 'augment' in name.lower(), name
    # load_from without resume (fine-tuning) starts from iteration 0 and
    # batch 0 and does not restore the RNG
    cfg.train_cfg.max_epochs = 1
    rec = []
    c = copy.deepcopy(cfg)
    c.load_from = str(tmp_path / 'a' / 'iter_2.pth')
    records, _ = _train(c, tmp_path / 'b', 'b')
    rec.extend(records)
    assert [r[0] for r in rec] == [0, 1, 2]


def test_rng_state_round_trip():
    state = get_rng_state()
    a = (np.random.rand(), torch.rand(3), __import__('random').random())
    set_rng_state(state)
    b = (np.random.rand(), torch.rand(3), __import__('random').random())
    assert a[0] == b[0] and torch.equal(a[1], b[1]) and a[2] == b[2]


@pytest.mark.parametrize('kwargs', [dict(per_rank_modules=1),
                                    dict(isolate_val='yes'),
                                    dict(seed_per_sample=None)])
def test_hook_rejects_bad_arguments(kwargs):
    with pytest.raises(TypeError, match=next(iter(kwargs))):
        ExactResumeHook(**kwargs)


def test_copying_a_checkpoint_keeps_it(tmp_path, png_root):
    """The state lives in the checkpoint file itself (no side files)."""
    cfg = cls_config(png_root, 'RMix')
    cfg.train_cfg.max_epochs = 1
    full = _train(cfg, tmp_path / 'a', 'a')
    shutil.copy(tmp_path / 'a' / 'iter_1.pth', tmp_path / 'copy.pth')
    shutil.rmtree(tmp_path / 'a')
    resumed = _train(cfg, tmp_path / 'b', 'b',
                     resume_from=tmp_path / 'copy.pth')
    _assert_same_tail(full, resumed, start=1)


# ------------------------------------------- data-loader workers (issue 14)
@pytest.mark.slow
@pytest.mark.parametrize('persistent', [False, True])
@pytest.mark.parametrize('augment', ['RMix', 'RecursiveMix'])
def test_classification_resume_with_workers_is_exact(tmp_path, png_root,
                                                     augment, persistent):
    """``num_workers=2``: the random flips run in the workers, seeded per
    sample; mid-epoch 1 and mid-epoch 2 (after a validation)."""
    cfg = cls_config(png_root, augment)
    cfg.train_dataloader.update(num_workers=2, persistent_workers=persistent)
    _check_resumes(tmp_path, cfg, (2, 4))


@pytest.mark.slow
@pytest.mark.parametrize('persistent', [False, True])
def test_segmentation_resume_with_workers_is_exact(tmp_path, persistent):
    """Random resize, crop and flip in 2 workers; IterBasedTrainLoop.

    Also the case where mmengine's InfiniteSampler shares one index
    generator between iterators: the loop's first iterator prefetched from
    it and closed it when collected (every later iterator stopped at
    once)."""
    cfg = seg_config(tmp_path, 'RecursiveMix')
    cfg.train_dataloader.update(num_workers=2, persistent_workers=persistent)
    _check_resumes(tmp_path, cfg, (3, ))


def test_transforms_do_not_depend_on_the_workers(tmp_path, png_root):
    """Per-sample seeds: 0 or 2 workers give the same batches, bitwise."""
    cfg = cls_config(png_root, 'RecursiveMix')
    cfg.train_cfg.max_epochs = 1
    main = _train(cfg, tmp_path / 'w0', 'w0')
    cfg.train_dataloader.update(num_workers=2, persistent_workers=False)
    workers = _train(cfg, tmp_path / 'w2', 'w2')
    assert main[0] == workers[0]
    for k in main[1]:
        assert torch.equal(main[1][k], workers[1][k]), k


def test_iteration_loop_resume_loads_no_trained_batch(tmp_path, monkeypatch):
    """mmengine 0.10.7's IterBasedTrainLoop loads every trained batch once
    to catch up; under the hook the resumed run loads only the batches it
    trains (5 iterations, resumed after 3: 2 batches of 2)."""
    from mmengine.dataset import BaseDataset
    cfg = seg_config(tmp_path, 'RecursiveMix')
    loads = []
    real = BaseDataset.prepare_data

    def counting(self, idx):
        loads.append(idx)
        return real(self, idx)

    monkeypatch.setattr(BaseDataset, 'prepare_data', counting)
    full = _train(cfg, tmp_path / 'full', 'full')
    assert len(loads) == 5 * 2
    loads.clear()
    resumed = _train(cfg, tmp_path / 'r', 'r',
                     resume_from=tmp_path / 'full' / 'iter_3.pth')
    assert len(loads) == 2 * 2
    _assert_same_tail(full, resumed, start=3)


def test_per_sample_seeds_depend_only_on_the_sample():
    """The wrappers alone: a sample's seed is a function of (seed, epoch,
    index, rank), whatever batch it is in or how many batches are skipped;
    the dataset seeds the RNGs with it and, in the main process, puts their
    states back."""
    import random

    from torch.utils.data import BatchSampler

    from mixplugins.engine.exact_resume import (PerSampleSeeds,
                                                SeededDataset, sample_seed)

    class Draw(torch.utils.data.Dataset):
        metainfo = dict(classes=('a', ))

        def __len__(self):
            return 6

        def __getitem__(self, i):
            return (i, random.random(), float(np.random.rand()),
                    float(torch.rand(())))

    class EpochSampler(torch.utils.data.Sampler):
        epoch = 0

        def __iter__(self):
            return iter([3, 1, 5, 0, 2, 4])

        def __len__(self):
            return 6

    sampler = EpochSampler()
    batches = PerSampleSeeds(BatchSampler(sampler, 2, False), 7, rank=1)
    assert batches.sampler is sampler and len(batches) == 3
    first = list(batches)
    assert first[0] == [(3, sample_seed(7, 0, 0, 3, 1)),
                        (1, sample_seed(7, 0, 0, 1, 1))]
    sampler.epoch = 1
    assert list(batches)[0][0] == (3, sample_seed(7, 1, 0, 3, 1))
    data = SeededDataset(Draw())
    assert data.metainfo == dict(classes=('a', )) and len(data) == 6
    torch.manual_seed(0)
    before = torch.get_rng_state()
    a = data[first[1][0]]
    assert torch.equal(torch.get_rng_state(), before)  # put back
    assert a == data[first[1][0]] and a != data[first[1][1]]
    assert data[2][0] == 2  # a plain index passes through, unseeded
