"""The recorder of ``mixplugins.engine.visualization`` reads records and
patches nothing.

For every method and task (cls R-Mix, RL-Mix, RecursiveMix, mmpretrain's
Mixup/CutMix alone and under ``RandomBatchAugment``; det RecursiveMix; seg
RecursiveMix and CutMix) one recorded step is checked:

* nothing is replaced: the ``vars()`` of every imported ``mixplugins``
  module and of its classes, of the data preprocessor, of the augments (and
  of their containers) and of their classes hold the same objects inside
  the recording -- from the preprocessor's hooks, from
  inside the augment, from hooks on it -- and after it, apart from what an
  unrecorded step changes itself (``last_params``, the history);
* the recorded params are the augment's ``last_params`` of that step, the
  batch before is what the preprocessor gives without augments and the
  batch after is its output;
* the recording draws.

``test_checker_catches_a_patching_recorder`` shows that the check fails for
a recorder that does patch (a module name, an augment attribute, an entry
of ``RandomBatchAugment.augments``, a method of a class of the package).
"""
import sys
from typing import Any, Callable, Dict, List, NamedTuple, Optional

import numpy as np
import pytest
import torch
from mmengine.registry import DefaultScope
from mmengine.structures import InstanceData, PixelData
from torch import nn

import mixplugins.engine.visualization.record as record_module
from mixplugins.engine.visualization import (MixRecorder, MixRenderer,
                                             iter_batch_augments, keeps_record,
                                             record_mix)

pytest.importorskip('mmpretrain')

MEAN, STD = (10.0, 20.0, 30.0), (50.0, 60.0, 70.0)
NUM_CLASSES = 5


class Case(NamedTuple):
    """One configuration: its preprocessor, a twin without batch augments,
    the batch of a seed, one training step on it, the names its grids may
    have, and modules to check from inside the augments."""
    pre: nn.Module
    plain: nn.Module
    batch: Callable[[int], dict]
    step: Callable[[int], dict]
    names: tuple
    inner: List[nn.Module]


# ------------------------------------------------------------------ cases
def _cls_case(augments, names, probs=None) -> Case:
    from mmpretrain.registry import MODELS
    from mmpretrain.structures import DataSample
    train_cfg = dict(augments=augments)
    if probs is not None:
        train_cfg['probs'] = probs
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(
            dict(type='MixImageClassifier',
                 backbone=dict(type='DemoCNN', widths=(4, 8, 8)),
                 neck=dict(type='GlobalAveragePooling'),
                 head=dict(type='LinearClsHead',
                           num_classes=NUM_CLASSES,
                           in_channels=8,
                           loss=dict(type='CrossEntropyLoss', use_soft=True),
                           cal_acc=False),
                 data_preprocessor=dict(num_classes=NUM_CLASSES,
                                        mean=MEAN,
                                        std=STD,
                                        to_rgb=True),
                 train_cfg=train_cfg)).train()
        plain = MODELS.build(
            dict(type='ClsDataPreprocessor',
                 num_classes=NUM_CLASSES,
                 mean=MEAN,
                 std=STD,
                 to_rgb=True))
    pre = model.data_preprocessor

    def batch(seed: int) -> dict:
        g = torch.Generator().manual_seed(seed)
        images = torch.randint(0,
                               256, (4, 3, 16, 16),
                               generator=g,
                               dtype=torch.uint8)
        labels = torch.randint(0, NUM_CLASSES, (4, ), generator=g)
        return dict(
            inputs=images,
            data_samples=[DataSample().set_gt_label(int(y)) for y in labels])

    def step(seed: int) -> dict:
        out = pre(batch(seed), True)
        if model.rm_history is not None:  # RecursiveMix stores its history
            with torch.no_grad():
                model.loss(out['inputs'].detach(), out['data_samples'])
        return out

    return Case(pre, plain, batch, step, names, [model.backbone])


def _det_case() -> Case:
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample
    cfg = dict(type='DetDataPreprocessor',
               mean=MEAN,
               std=STD,
               bgr_to_rgb=True,
               pad_size_divisor=8)
    with DefaultScope.overwrite_default_scope('mmdet'):
        pre = MODELS.build(
            dict(cfg, batch_augments=[dict(type='RecursiveMix', alpha=1.0)]))
        plain = MODELS.build(cfg)
    pre.train()

    def batch(seed: int) -> dict:
        g = torch.Generator().manual_seed(seed)
        inputs, samples = [], []
        for h, w in [(24, 32), (16, 24), (24, 24)]:
            inputs.append(
                torch.randint(0,
                              256, (3, h, w),
                              generator=g,
                              dtype=torch.uint8))
            sample = DetDataSample(metainfo=dict(img_shape=(h, w)))
            sample.gt_instances = InstanceData(bboxes=torch.tensor(
                [[1., 2., w / 2, h / 2], [w / 3, h / 3, w - 1., h - 2.]]),
                                               labels=torch.tensor([0, 2]))
            samples.append(sample)
        return dict(inputs=inputs, data_samples=samples)

    return Case(pre, plain, batch, lambda seed: pre(batch(seed), True),
                ('mix_RecursiveMix', ), [])


def _seg_case(augment: str, name: str, sizes) -> Case:
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample

    import mixplugins.segmentation  # noqa: F401
    cfg = dict(type='MixSegDataPreProcessor',
               mean=MEAN,
               std=STD,
               bgr_to_rgb=True,
               size=(24, 24))
    with DefaultScope.overwrite_default_scope('mmseg'):
        pre = MODELS.build(
            dict(cfg, batch_augments=[dict(type=augment, alpha=1.0)]))
        plain = MODELS.build(cfg)
    pre.train()

    def batch(seed: int) -> dict:
        g = torch.Generator().manual_seed(seed)
        inputs, samples = [], []
        for h, w in sizes:
            inputs.append(
                torch.randint(0,
                              256, (3, h, w),
                              generator=g,
                              dtype=torch.uint8))
            s = SegDataSample(metainfo=dict(img_shape=(h, w)))
            s.gt_sem_seg = PixelData(
                data=torch.randint(0, 6, (1, h, w), generator=g))
            samples.append(s)
        return dict(inputs=inputs, data_samples=samples)

    return Case(pre, plain, batch, lambda seed: pre(batch(seed), True),
                (f'mix_{name}', ), [])


def _rlmix() -> dict:
    pytest.importorskip('stable_baselines3')
    return dict(type='RLMix',
                n_steps=4,
                batch_size=2,
                n_epochs=2,
                total_timesteps=40,
                mix_grids=(2, 4),
                agent_grid=4)


CASES: Dict[str, Callable[[], Case]] = {
    'cls_rmix':
    lambda: _cls_case([dict(type='RMix', grids=(2, 4))], ('mix_RMix', )),
    'cls_rlmix':
    lambda: _cls_case([_rlmix()], ('mix_RLMix', )),
    'cls_recursivemix':
    lambda: _cls_case([dict(type='RecursiveMix', alpha=1.0)],
                      ('mix_RecursiveMix', )),
    'cls_mmpretrain_cutmix':
    lambda: _cls_case([dict(type='CutMix', alpha=1.0)], ('mix_CutMix', )),
    'cls_random_mixup_cutmix_rmix':
    lambda: _cls_case([
        dict(type='Mixup', alpha=1.0),
        dict(type='CutMix', alpha=1.0),
        dict(type='RMix')
    ], ('mix_Mixup_or_CutMix', 'mix_RMix', 'mix_batch'),
                      probs=[0.3, 0.3, 0.3]),
    'det_recursivemix':
    _det_case,
    'seg_recursivemix':
    lambda: _seg_case('RecursiveMix', 'RecursiveMix', [(24, 24), (20, 24),
                                                       (24, 16)]),
    'seg_cutmix':
    lambda: _seg_case('CutMix', 'SegCutMix', [(24, 24), (24, 20), (16, 24),
                                              (24, 24)]),
}


# ------------------------------------------------------ the patch checker
def _containers(pre: nn.Module) -> List[Any]:
    """The objects to check besides the modules: the preprocessor, its
    augment container and the augments."""
    out = [pre]
    augs = getattr(pre, 'batch_augments', None)
    if augs is not None:
        out.append(augs)
    return out + [a for a in iter_batch_augments(pre) if a is not augs]


def _is_hook_registry(name: str) -> bool:
    # what torch's own hook API fills (register_forward_*_hook)
    return name.startswith(('_forward', '_backward')) and 'hook' in name


def _state(obj_vars: dict) -> Dict[str, Any]:
    """Identity of each value; for lists and dicts also of their items."""
    out = {}
    for k, v in obj_vars.items():
        out[k] = v
        if isinstance(v, (list, dict)) and not _is_hook_registry(k):
            items = v.items() if isinstance(v, dict) else enumerate(v)
            for key, item in items:
                out[f'{k}[{key!r}]'] = item
    return out


def snapshot(objects: List[Any]) -> Dict[str, Dict[str, Any]]:
    """``vars()`` of every imported ``mixplugins`` module and of the
    classes defined there, of ``objects`` and of their classes (whole
    MRO)."""
    snap, classes = {}, set()
    for name, mod in list(sys.modules.items()):
        if mod is None or not (name == 'mixplugins'
                               or name.startswith('mixplugins.')):
            continue
        snap[f'module {name}'] = dict(vars(mod))
        classes.update(v for v in vars(mod).values()
                       if isinstance(v, type) and v.__module__ == name)
    for i, obj in enumerate(objects):
        snap[f'object {i} ({type(obj).__name__})'] = _state(vars(obj))
        classes.update(type(obj).__mro__[:-1])
    for cls in classes:
        snap[f'class {cls.__module__}.{cls.__qualname__}'] = dict(vars(cls))
    return snap


def changes(before: dict, after: dict) -> Dict[str, set]:
    """Per snapshot entry, the names whose value is not the same object."""
    out = {}
    for key in before.keys() | after.keys():
        a, b = before.get(key, {}), after.get(key, {})
        diff = {
            k
            for k in a.keys() | b.keys()
            if a.get(k, KeyError) is not b.get(k, KeyError)
        }
        if diff:
            out[key] = diff
    return out


def _unexpected(found: Dict[str, set], allowed: Dict[str, set]) -> dict:
    return {
        k: v - allowed.get(k, set())
        for k, v in found.items() if v - allowed.get(k, set())
    }


def run_checked(case: Case, seed: int) -> tuple:
    """One unrecorded step (what the step changes itself), then one
    recorded step checked from every point; returns ``(recording, output,
    problems)``."""
    objects = _containers(case.pre)
    torch.manual_seed(seed)
    np.random.seed(seed)
    before = snapshot(objects)
    case.step(seed)
    allowed = changes(before, snapshot(objects))

    problems: List[tuple] = []

    def check(where: str) -> None:
        bad = _unexpected(changes(base, snapshot(objects)), allowed)
        if bad:
            problems.append((where, bad))

    base = snapshot(objects)
    handles = []
    torch.manual_seed(seed)
    np.random.seed(seed)
    with record_mix(case.pre) as rec:
        check('inside the context')
        # registered after the recorder's hooks: the pre-hooks run after
        # the recorder's, the prepended forward hooks before
        handles.append(
            case.pre.register_forward_pre_hook(
                lambda *a: check('preprocessor pre-hook')))
        handles.append(
            case.pre.register_forward_hook(
                lambda *a: check('preprocessor forward hook'), prepend=True))
        for aug in iter_batch_augments(case.pre):
            if isinstance(aug, nn.Module):
                handles.append(
                    aug.register_forward_pre_hook(
                        lambda *a: check('augment pre-hook')))
                handles.append(
                    aug.register_forward_hook(
                        lambda *a: check('augment forward hook'),
                        prepend=True))
        for module in case.inner:  # called inside the augment
            handles.append(
                module.register_forward_pre_hook(
                    lambda *a: check('inside the augment')))
        out = case.step(seed)
        check('after the step')
    for h in handles:
        h.remove()
    check('after the context')
    return rec, out, problems


# ------------------------------------------------------------------ tests
@pytest.mark.parametrize('name', list(CASES))
def test_recording_patches_nothing_and_reads_the_records(name):
    case = CASES[name]()
    augments = list(iter_batch_augments(case.pre))
    case.step(0)  # fills RecursiveMix's history
    last = [getattr(a, 'last_params', None) for a in augments]
    rec, out, problems = run_checked(case, 1)
    assert not problems, problems
    # the hooks are gone
    for module in [case.pre
                   ] + [a for a in augments if isinstance(a, nn.Module)]:
        assert not module._forward_hooks and not module._forward_pre_hooks

    # the records: a recorded call holds its augment's last_params
    ran = [
        a for a, old in zip(augments, last)
        if getattr(a, 'last_params', None) is not old
    ]
    recorded = [c.params for c in rec.calls if c.params is not None]
    assert len(recorded) == len(ran)
    for params, aug in zip(recorded, ran):
        assert params is aug.last_params
    no_record = {type(a).__name__ for a in augments if not keeps_record(a)}
    for call in rec.calls:
        if call.params is None:  # an augment without a record
            assert set(call.name.split('_or_')) <= no_record, call.name
    # before: the preprocessor without augments; after: its output
    plain = case.plain(case.batch(1), True)['inputs']
    torch.testing.assert_close(rec.inputs, out['inputs'].detach())
    for call in rec.calls:
        torch.testing.assert_close(call.inputs, plain)
        torch.testing.assert_close(call.mixed, out['inputs'].detach())
        if call.params is not None and hasattr(call.params, 'src_boxes'):
            assert call.sources is not None  # the history being pasted

    # and it draws
    grids = MixRenderer.from_preprocessor(case.pre, None, 'bgr',
                                          max_images=3).render(rec)
    assert grids and all(n in case.names for n, _ in grids), grids
    for _, image in grids:
        assert image.dtype == np.uint8 and image.ndim == 3
        assert image.shape[2] == 3 and image.std() > 10


# -------------------------------------------- the checker catches patches
class _Wrapped:

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)


def _patch_module(recorder: MixRecorder) -> Callable[[], None]:
    module = sys.modules['mixplugins.core.rmix']
    original = module.upsample_masks
    setattr(module, 'upsample_masks', _Wrapped(original))
    return lambda: setattr(module, 'upsample_masks', original)


def _patch_augment(recorder: MixRecorder) -> Callable[[], None]:
    aug = recorder.augments[0]
    object.__setattr__(aug, '__call__', _Wrapped(aug.__call__))
    return lambda: object.__delattr__(aug, '__call__')


def _patch_slot(recorder: MixRecorder) -> Callable[[], None]:
    slots = recorder.pre.batch_augments.augments
    original = slots[0]
    slots[0] = _Wrapped(original)
    return lambda: slots.__setitem__(0, original)


def _patch_class(recorder: MixRecorder) -> Callable[[], None]:
    from mixplugins.engine.history import RecursiveMixHistory
    original = RecursiveMixHistory.take
    RecursiveMixHistory.take = _Wrapped(original)
    return lambda: setattr(RecursiveMixHistory, 'take', original)


@pytest.mark.parametrize(
    'patch', [_patch_module, _patch_augment, _patch_slot, _patch_class])
def test_checker_catches_a_patching_recorder(monkeypatch, patch):
    case = CASES['cls_rmix']()
    start, stop = MixRecorder.start, MixRecorder.stop
    undo: List[Optional[Callable]] = []

    def patched_start(self):
        undo.append(patch(self))  # what a patching recorder would do
        return start(self)

    def patched_stop(self):
        while undo:
            undo.pop()()
        stop(self)

    case.step(0)
    monkeypatch.setattr(MixRecorder, 'start', patched_start)
    monkeypatch.setattr(MixRecorder, 'stop', patched_stop)
    _, _, problems = run_checked(case, 1)
    assert problems, 'the patch went unnoticed'
    assert record_module.MixRecorder.start is patched_start
