"""Bad and unusual input for every method (the table in
``docs/bad_input.md``): each case gets a clear error naming the argument,
raised before any state changes, or a documented correct behaviour.

Cases already covered elsewhere are referenced in the table, not repeated.
"""
import copy
import importlib.util
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmdet.registry import MODELS as DET_MODELS
from mmdet.structures import DetDataSample
from mmdet.structures.mask import PolygonMasks
from mmengine.optim import OptimWrapper
from mmengine.structures import InstanceData, PixelData
from mmpretrain.registry import BATCH_AUGMENTS
from mmpretrain.structures import DataSample
from mmseg.registry import MODELS as SEG_MODELS
from mmseg.structures import SegDataSample

import mixplugins  # noqa: F401

from tests._helpers import (NUM_CLASSES, REPO, RM_DET, RM_SEG, cls_batch,
                            cls_model, det_batch, det_model, history_of,
                            run_for_result, same_history, scope, seg_batch,
                            seg_model, tool_env)

HAS_SB3 = importlib.util.find_spec('stable_baselines3') is not None
needs_sb3 = pytest.mark.skipif(
    not HAS_SB3, reason='RLMix needs the optional stable-baselines3')

RMIX = dict(type='RMix')
RLMIX = dict(type='RLMix',
             n_steps=2,
             batch_size=2,
             n_epochs=1,
             total_timesteps=10)
RM = dict(type='RecursiveMix', alpha=1.0, omega=0.5)
CLS_AUGMENTS = [
    pytest.param(RMIX, id='RMix'),
    pytest.param(RLMIX, id='RLMix', marks=needs_sb3),
    pytest.param(RM, id='RecursiveMix'),
]


pytestmark = pytest.mark.usefixtures('epoch0')


def sgd(model):
    return OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01))


def train(model, batches, scope_name='mmpretrain'):
    """``train_step`` on each batch; the losses of every step as floats."""
    optim = sgd(model)
    out = []
    with scope(scope_name):
        for seed, data in enumerate(batches):
            torch.manual_seed(seed)
            losses = model.train_step(data, optim)
            out.append({k: float(v.detach()) for k, v in losses.items()})
    return out


def all_finite(steps):
    return all(np.isfinite(v) for s in steps for v in s.values())


def one_hot(samples):
    return torch.stack([s.gt_score for s in samples])


# ------------------------------------------------------------ batch size 1
@pytest.mark.parametrize('augment', CLS_AUGMENTS)
def test_cls_batch_size_one_trains(augment):
    # 64 px: the ResNet's last map is 2x2, so train-mode BN has 4 values
    model = cls_model(augment)
    steps = train(model,
                  [cls_batch(n=1, h=64, w=64, seed=s) for s in range(3)])
    assert all_finite(steps)


@pytest.mark.parametrize('augment', [
    pytest.param(RMIX, id='RMix'),
    pytest.param(RLMIX, id='RLMix', marks=needs_sb3),
])
def test_cls_batch_size_one_rmix_pairs_the_image_with_itself(augment):
    model = cls_model(augment)
    data = cls_batch(n=1, h=64, w=64)
    x = data['inputs'][0].float()[None]
    out = model.data_preprocessor(copy.deepcopy(data), True)
    # randperm(1) / flip of one image: the partner is the image itself,
    # so the blend and the area-mixed label are the identity
    torch.testing.assert_close(out['inputs'].detach(), x)
    label = data['data_samples'][0].gt_label
    torch.testing.assert_close(one_hot(out['data_samples']),
                               F.one_hot(label, NUM_CLASSES).float())


def test_cls_batch_size_one_with_a_1x1_last_map_is_the_hosts_bn_error():
    """32 px images give ResNet a 1x1 last map: train-mode BN refuses a
    batch of one there, with or without mixplugins (same torch error)."""
    plain = cls_model(dict(type='CutMix', alpha=1.0), type='ImageClassifier')
    for model in (plain, cls_model(RMIX), cls_model(RM)):
        with pytest.raises(ValueError, match='more than 1 value per channel'):
            train(model, [cls_batch(n=1)])


def test_det_and_seg_batch_size_one_train():
    det = det_model()
    steps = train(det, [det_batch([(48, 64)], seed=s) for s in range(3)],
                  'mmdet')
    assert all_finite(steps)
    aug = det.data_preprocessor.batch_augments[0]
    assert aug.history.inputs.shape[0] == 1
    # 64 px: train-mode BN needs more than the 1x1 last map of 32 px; and
    # UPerNet's pool scale 1 (a 1x1 map under BN) fails at B=1 in mmseg
    # itself, so the PPM pools to 2x2 here
    seg = seg_model(size=(64, 64), pool_scales=(2, ))
    steps = train(seg, [seg_batch([(64, 64)], seed=s) for s in range(3)],
                  'mmseg')
    assert all_finite(steps)
    assert seg.data_preprocessor.batch_augments[0].history.inputs.shape[0] == 1


# --------------------------------------------------- odd, non-square sizes
@pytest.mark.parametrize('augment', CLS_AUGMENTS)
def test_cls_odd_non_square_images(augment):
    model = cls_model(augment)
    batches = [cls_batch(h=31, w=45, seed=s) for s in range(3)]
    assert all_finite(train(model, batches))
    if augment is RM:
        out = model.data_preprocessor(cls_batch(h=31, w=45, seed=9), True)
        x1, y1, x2, y2 = model._recursive_step.box
        assert 0 <= x1 <= x2 <= 45 and 0 <= y1 <= y2 <= 31
        assert out['inputs'].shape == (4, 3, 31, 45)


def test_det_odd_non_square_images():
    model = det_model()
    sizes = [(31, 45), (45, 31)]
    assert all_finite(
        train(model, [det_batch(sizes, seed=s) for s in range(3)], 'mmdet'))
    with scope('mmdet'):
        out = model.data_preprocessor(det_batch(sizes, seed=5), True)
    assert out['inputs'].shape == (2, 3, 64, 64)  # padded to 32
    for s in out['data_samples']:
        h, w = s.metainfo['img_shape']
        b = s.gt_instances.bboxes
        assert len(b) and (b >= 0).all() and (b[:, 2]
                                              <= w).all() and (b[:, 3]
                                                               <= h).all()


def test_seg_odd_non_square_images():
    model = seg_model(size=(48, 48))
    sizes = [(31, 45), (45, 31)]
    assert all_finite(
        train(model, [seg_batch(sizes, seed=s) for s in range(3)], 'mmseg'))
    with scope('mmseg'):
        out = model.data_preprocessor(seg_batch(sizes, seed=5), True)
    for s, x in zip(out['data_samples'], out['inputs']):
        h, w = s.metainfo['img_shape']
        seg = s.gt_sem_seg.data[0]
        # nothing is pasted into the padding: labels 255, pixels 0
        assert bool((seg[h:] == 255).all()) and bool((seg[:, w:] == 255).all())
        assert not x[:, h:].any() and not x[:, :, w:].any()
        assert bool((seg[:h, :w] < 4).all())


# ------------------------------------------- images smaller than the grid
@pytest.mark.parametrize('augment, name', [
    (dict(type='RMix', grids=(2, 8), clean_loss_weight=1.0), 'grids'),
    pytest.param(dict(RLMIX, mix_grids=(2, 8), clean_loss_weight=1.0),
                 'mix_grids',
                 marks=needs_sb3),
])
def test_grid_larger_than_the_image_is_refused_before_the_clean_pass(
        augment, name):
    model = cls_model(augment)
    bn = {
        k: v.clone()
        for k, v in model.state_dict().items() if 'running' in k
    }
    data = cls_batch(h=6, w=45)
    # every time, not only when the grid of 8 is drawn
    for _ in range(3):
        with pytest.raises(ValueError, match=f'`{name}`.*min\\(H, W\\) = 6'):
            model.data_preprocessor(copy.deepcopy(data), True)
    # no trace: no BN statistics updated, no clean loss pending, no agent
    after = model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in bn.items())
    assert model._step_losses == {}
    if model.rl_agent is not None:
        assert not model.rl_agent.built
    # a batch that is large enough goes through
    model.data_preprocessor(cls_batch(h=8, w=45), True)


# ------------------------------------------------- smaller last batch
@needs_sb3
def test_rlmix_smaller_last_batch_is_refused_and_the_agent_is_unchanged():
    model = cls_model(RLMIX)
    train(model, [cls_batch(seed=0)])
    agent = model.rl_agent
    before = history_of(agent)
    with pytest.raises(ValueError, match='drop_last'):
        model.data_preprocessor(cls_batch(n=3), True)
    assert same_history(history_of(agent), before)


# --------------------------------------------------------- num_classes
@pytest.mark.parametrize('augment', CLS_AUGMENTS)
def test_missing_num_classes_defaults_to_the_head(augment):
    model = cls_model(augment, data_preprocessor=dict())
    assert model.data_preprocessor.num_classes == NUM_CLASSES
    # and it trains (mmpretrain alone would assert at the first step)
    assert all_finite(train(model, [cls_batch(seed=s) for s in range(2)]))


@pytest.mark.parametrize('augment', CLS_AUGMENTS)
def test_other_num_classes_than_the_head_is_a_build_error(augment):
    with pytest.raises(ValueError,
                       match=r'`data_preprocessor.num_classes` \(7\) must '
                       r'equal `head.num_classes` \(5\)'):
        cls_model(augment, data_preprocessor=dict(num_classes=7))


def test_num_classes_is_left_alone_without_a_mixplugins_augment():
    # then MixImageClassifier is ImageClassifier: mmpretrain's own assert
    model = cls_model(dict(type='CutMix', alpha=1.0), data_preprocessor=dict())
    assert model.data_preprocessor.num_classes is None
    with pytest.raises(AssertionError, match='num_classes'):
        train(model, [cls_batch()])


# --------------------------------------------------------- target formats
@pytest.mark.parametrize('augment', [RMIX, RM], ids=['RMix', 'RecursiveMix'])
def test_integer_labels_and_one_hot_scores_give_the_same_mix(augment):
    """``gt_label`` (one-hot made by the preprocessor) and a one-hot
    ``gt_score`` given by the dataset are the same input."""
    outs = []
    for as_score in (False, True):
        torch.manual_seed(0)
        model = cls_model(augment)  # the same weights both times
        for seed in range(2):  # RecursiveMix mixes from the second step
            data = cls_batch(seed=seed)
            if as_score:
                for s in data['data_samples']:
                    s.set_gt_score(
                        F.one_hot(s.gt_label[0], NUM_CLASSES).float())
                    del s.gt_label
            torch.manual_seed(10 + seed)
            out = model.data_preprocessor(data, True)
            if augment is RM:
                model(**out, mode='loss')  # stores the history
        outs.append((out['inputs'].detach(), one_hot(out['data_samples'])))
    torch.testing.assert_close(outs[0][0], outs[1][0])
    torch.testing.assert_close(outs[0][1], outs[1][1])


def test_soft_and_multi_hot_scores_with_rmix():
    """RMix's clean pass uses the argmax of the scores (for multi-hot rows
    the lowest positive class); the mix is by area, so row sums are kept."""
    model = cls_model(RMIX)
    aug = model.data_preprocessor.batch_augments.augments[0]
    seen = []
    real = aug.clean_pass
    aug.clean_pass = lambda x, labels: seen.append(labels) or real(x, labels)
    x = torch.rand(4, 3, 32, 32)
    multi = torch.tensor([[0, 1, 0, 1, 0], [1, 0, 0, 0, 1], [0, 0, 1, 1, 0],
                          [0, 1, 1, 0, 0]]).float()  # two labels each
    soft = F.one_hot(torch.tensor([3, 0, 2, 4]), 5).float() * 0.9 + 0.02
    for scores, labels, total in ((multi, [1, 0, 2, 1], 2 * torch.ones(4)),
                                  (soft, [3, 0, 2, 4], torch.ones(4))):
        _, mixed = aug(x, scores)
        assert seen[-1].tolist() == labels
        torch.testing.assert_close(mixed.sum(1), total)
    # integer-typed one-hot scores are cast to float, as the host does
    torch.manual_seed(1)
    a = aug(x, multi.long())
    torch.manual_seed(1)
    b = aug(x, multi)
    torch.testing.assert_close(a[0], b[0])
    torch.testing.assert_close(a[1], b[1])


@pytest.mark.parametrize('augment', CLS_AUGMENTS)
def test_integer_label_vectors_are_refused_by_the_augment(augment):
    model = cls_model(augment)
    aug = model.data_preprocessor.batch_augments.augments[0]
    with pytest.raises(ValueError, match=r'shape \(B, K\)'):
        aug(torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match=r'shape \(B, K\)'):
        aug(torch.rand(4, 3, 32, 32), torch.eye(5)[:3])


# ------------------------------------------------------- no gt boxes (det)
def test_det_batches_without_gt_boxes_train():
    model = det_model()
    aug = model.data_preprocessor.batch_augments[0]
    sizes = [(48, 64), (40, 40)]
    batches = [
        det_batch(sizes, seed=0, empty=(0, 1)),  # nothing anywhere
        det_batch(sizes, seed=1),  # boxes, pasted history has none
        det_batch(sizes, seed=2, empty=(0, 1)),  # none, history has boxes
    ]
    counts = []
    optim = sgd(model)
    with scope('mmdet'):
        for seed, data in enumerate(batches):
            torch.manual_seed(seed)
            out = model.data_preprocessor(data, True)
            counts.append([len(s.gt_instances) for s in out['data_samples']])
            for s in out['data_samples']:
                assert s.gt_instances.bboxes.shape[1:] == (4, )
            losses = model.loss(out['inputs'], out['data_samples'])
            loss, _ = model.parse_losses(losses)
            assert torch.isfinite(loss)
            optim.update_params(loss)
    assert counts[0] == [0, 0]
    assert sum(counts[1]) > 0  # current boxes kept (some may be hidden)
    assert sum(counts[2]) > 0  # only pasted boxes
    assert aug.history['samples'][0]['gt_instances']['bboxes'].shape[1] == 4


# ----------------------------------------------- seg maps full of ignore
def test_seg_all_ignore_batches_train():
    model = seg_model()
    batches = [
        seg_batch([(32, 32), (24, 30)], seed=s, seg_value=255)
        for s in range(3)
    ]
    steps = train(model, batches, 'mmseg')
    assert all_finite(steps)
    # mmseg averages the CE over all pixels (avg_non_ignore=False): an
    # all-ignore batch has loss 0 and teaches nothing; no NaN
    assert all(s['decode.loss_ce'] == 0 for s in steps)
    hist = model.data_preprocessor.batch_augments[0].history['maps']['gt_sem_seg']
    assert bool((hist == 255).all())


# -------------------------------- parameters out of range (non-finite)
@pytest.mark.parametrize('registry, cfg, name', [
    ('cls', dict(type='RMix', alpha=float('inf')), 'alpha'),
    ('cls', dict(type='RMix', alpha=float('nan')), 'alpha'),
    ('cls', dict(type='RMix',
                 clean_loss_weight=float('nan')), 'clean_loss_weight'),
    ('cls', dict(type='RMix',
                 clean_loss_weight=float('inf')), 'clean_loss_weight'),
    ('cls', dict(type='RMix', quantile_levels=0.5), 'quantile_levels'),
    ('cls', dict(type='RMix', quantile_levels='0.5'), 'quantile_levels'),
    ('cls', dict(type='RMix', quantile_levels=[float('nan')
                                               ]), 'quantile_levels'),
    ('cls', dict(type='RMix', grids=(2.5, )), 'grids'),
    ('cls', dict(type='RecursiveMix', omega=float('nan')), 'omega'),
    ('cls', dict(type='RecursiveMix', omega=float('inf')), 'omega'),
    ('cls', dict(type='RecursiveMix', alpha=float('inf')), 'alpha'),
    ('cls', dict(type='RecursiveMix', alpha=float('nan')), 'alpha'),
    pytest.param('cls',
                 dict(type='RLMix', agent_lr=float('inf')),
                 'agent_lr',
                 marks=needs_sb3),
    pytest.param('cls',
                 dict(type='RLMix', clip_range=float('inf')),
                 'clip_range',
                 marks=needs_sb3),
    pytest.param('cls',
                 dict(type='RLMix', ent_coef=float('nan')),
                 'ent_coef',
                 marks=needs_sb3),
    ('det', dict(RM_DET, alpha=float('nan')), 'alpha'),
    ('det', dict(RM_DET, alpha=float('inf')), 'alpha'),
    ('det', dict(RM_DET, min_visible=float('nan')), 'min_visible'),
    ('seg', dict(RM_SEG, alpha=float('nan')), 'alpha'),
    ('seg', dict(type='CutMix', alpha=float('inf')), 'alpha'),
])
def test_non_finite_parameters_are_build_errors(registry, cfg, name):
    build = dict(cls=BATCH_AUGMENTS.build,
                 det=DET_MODELS.build,
                 seg=SEG_MODELS.build)[registry]
    scope_name = dict(cls='mmpretrain', det='mmdet', seg='mmseg')[registry]
    with scope(scope_name), pytest.raises((ValueError, TypeError),
                                          match=f'`{name}`'):
        build(cfg)


def test_a_single_grid_may_be_given_as_an_int():
    assert BATCH_AUGMENTS.build(dict(type='RMix', grids=4)).grids == (4, )


# ------------------------------------- refused calls keep the history
def test_cls_recursivemix_refused_call_keeps_the_history():
    model = cls_model(RM)
    train(model, [cls_batch(seed=0)])
    history = model.rm_history
    before = [
        t.clone()
        for t in (history.inputs, history['targets'], history['logits'])
    ]
    aug = model.data_preprocessor.batch_augments.augments[0]
    with pytest.raises(ValueError, match='scores'):
        aug(torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]))
    after = (history.inputs, history['targets'], history['logits'])
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    assert model._recursive_step is None


def _det_samples(n, size, field=None):
    samples = []
    for i in range(n):
        s = DetDataSample(metainfo=dict(img_shape=size))
        s.gt_instances = InstanceData(bboxes=torch.tensor([[1., 1., 9., 9.]]),
                                      labels=torch.tensor([i]))
        samples.append(s)
    if field == 'scores':
        samples[0].gt_instances.scores = torch.ones(1)
    elif field == 'polygons':
        samples[0].gt_instances.masks = PolygonMasks(
            [[np.array([1., 1., 9., 1., 9., 9.])]], *size)
    return samples


@pytest.mark.parametrize('bad, error, match', [
    (dict(field='scores'), ValueError, 'scores'),
    (dict(field='polygons'), ValueError, 'PolygonMasks'),
    (dict(channels=1), ValueError, 'channels'),
    (dict(n_samples=1), ValueError, 'data samples'),
    (dict(ndim=3), ValueError, 'inputs'),
])
def test_det_refused_call_keeps_the_history(bad, error, match):
    with scope('mmdet'):
        aug = DET_MODELS.build(RM_DET)
    aug(torch.rand(2, 3, 16, 16), _det_samples(2, (16, 16)))
    before = history_of(aug)
    x = torch.rand(2, bad.get('channels', 3), 16, 16)
    if bad.get('ndim') == 3:
        x = x[0]
    samples = _det_samples(bad.get('n_samples', 2), (16, 16), bad.get('field'))
    with pytest.raises(error, match=match):
        aug(x, samples)
    assert same_history(history_of(aug), before)


def _seg_samples(n, size, edge=False, missing=False, map_size=None):
    samples = []
    for i in range(n):
        s = SegDataSample(metainfo=dict(img_shape=size))
        if not (missing and i == 0):
            s.gt_sem_seg = PixelData(data=torch.full((1, ) +
                                                     (map_size or size), i))
        if edge:
            s.gt_edge_map = PixelData(data=torch.zeros((1, ) + size).long())
        samples.append(s)
    return samples


@pytest.mark.parametrize('bad, match', [
    (dict(edge=True), 'history'),
    (dict(missing=True), 'some data samples'),
    (dict(map_size=(8, 16)), 'gt_sem_seg'),
    (dict(channels=1), 'channels'),
])
def test_seg_refused_call_keeps_the_history(bad, match):
    with scope('mmseg'):
        aug = SEG_MODELS.build(RM_SEG)
    aug(torch.rand(2, 3, 16, 16), _seg_samples(2, (16, 16)))
    before = history_of(aug)
    x = torch.rand(2, bad.pop('channels', 3), 16, 16)
    with pytest.raises(ValueError, match=match):
        aug(x, _seg_samples(2, (16, 16), **bad))
    assert same_history(history_of(aug), before)


# --------------------------------------- framework not installed (mmdet)
SCRIPT = r'''
import json, sys


class BlockMmdet:
    """Make `import mmdet` fail as if it were not installed."""

    def find_spec(self, name, path=None, target=None):
        if name == 'mmdet' or name.startswith('mmdet.'):
            raise ModuleNotFoundError(f'No module named {name!r}', name=name)
        return None


sys.meta_path.insert(0, BlockMmdet())
from mmengine.config import Config

res = {}
cfg = Config.fromfile(sys.argv[1])  # custom_imports imports mixplugins
import mixplugins

res['imported'] = 'mixplugins.classification' in sys.modules
res['missing'] = mixplugins.missing()
try:
    mixplugins.require('detection')
except ImportError as e:
    res['require'] = str(e)
mixplugins.require('classification')
mixplugins.require('segmentation')
from mmseg.registry import MODELS
res['seg_registered'] = MODELS.get('RecursiveMix') is not None
from mixplugins.utils.launcher import init_framework_scope
try:
    init_framework_scope(cfg)  # what tools/train.py does first
except ImportError as e:
    res['train_tool'] = str(e)
from mmengine.runner import Runner
try:  # a bare mmengine Runner, as `mim train` would build it
    Runner(model=cfg.model, work_dir=sys.argv[2], default_scope='mmdet')
except Exception as e:
    res['runner'] = f'{type(e).__name__}: {e}'
print('RESULT ' + json.dumps(res))
'''

CONFIG = '''
default_scope = 'mmdet'
custom_imports = dict(imports=['mixplugins'], allow_failed_imports=False)
model = dict(
    type='ATSS',
    data_preprocessor=dict(type='DetDataPreprocessor',
                           batch_augments=[dict(type='RecursiveMix')]))
'''


def test_missing_framework_is_reported_clearly(tmp_path):
    config = tmp_path / 'det_config.py'
    config.write_text(textwrap.dedent(CONFIG))
    res = run_for_result(SCRIPT,
                         config,
                         tmp_path / 'work',
                         cwd=tmp_path,
                         env=tool_env(REPO, threads=1),
                         timeout=300)
    assert res['imported'] and res['seg_registered']
    assert list(res['missing']) == ['detection']
    assert 'mmdet is not importable' in res['missing']['detection']
    assert res['require'].startswith('mixplugins.detection is unavailable')
    assert "No module named 'mmdet'" in res['require']
    assert 'install' in res['require']
    assert "default_scope='mmdet'" in res['train_tool']
    assert "'mmdet' cannot be imported" in res['train_tool']
    # mmengine's own path fails on the first mmdet type, not on mixplugins
    assert res['runner'].startswith('KeyError')
    assert 'ATSS is not in the mmengine::model registry' in res['runner']


# ----------------------------------------------- second round (issue 14)
@pytest.mark.parametrize('augment', [RMIX, RM], ids=['RMix', 'RecursiveMix'])
def test_mixplugins_augment_in_a_plain_image_classifier_names_the_model(
        augment):
    """``train_cfg.augments`` mixing mmpretrain's Mixup with a mixplugins
    augment in a plain ``ImageClassifier``: the first batch the mixplugins
    augment is drawn for stops with ``MixImageClassifier`` named."""
    model = cls_model([dict(type='Mixup', alpha=1.0), augment],
                      probs=[0.5, 0.5], type='ImageClassifier')
    np.random.seed(0)  # RandomBatchAugment draws with numpy
    with pytest.raises(RuntimeError,
                       match="model.type='MixImageClassifier'"):
        train(model, [cls_batch(seed=i) for i in range(20)])


def _nan_cls_batch():
    data = cls_batch()
    data['inputs'] = [x.float() for x in data['inputs']]
    data['inputs'][1][0, 3, 5] = float('nan')
    return data


@pytest.mark.parametrize('augment', CLS_AUGMENTS)
def test_nan_in_the_cls_batch_stops_naming_the_augment(augment):
    model = cls_model(augment)
    train(model, [cls_batch(seed=1)])
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError,
                       match=rf"{augment['type']}: the input batch has 1 "
                       r'non-finite value\(s\)'):
        train(model, [_nan_cls_batch()])
    after = model.state_dict()  # history, agent, BN statistics unchanged
    assert before.keys() == after.keys()
    for k in before:
        if isinstance(before[k], torch.Tensor):
            assert torch.equal(before[k], after[k]), k
        else:
            assert same_history(before[k], after[k]), k


def test_nan_in_the_det_and_seg_batch_stops_naming_the_augment():
    det = det_model()
    data = det_batch([(32, 48), (32, 48)])
    data['inputs'] = [x.float() for x in data['inputs']]
    data['inputs'][0][1, 2, 2] = float('inf')
    with scope('mmdet'), pytest.raises(
            ValueError, match='RecursiveMix: the input batch has 1 '):
        det.data_preprocessor(data, training=True)
    seg = seg_model()
    data = seg_batch([(32, 32), (32, 32)])
    data['inputs'] = [x.float() for x in data['inputs']]
    data['inputs'][1][0, 0, 0] = float('nan')
    with scope('mmseg'), pytest.raises(
            ValueError, match='RecursiveMix: the input batch has 1 '):
        seg.data_preprocessor(data, training=True)


def test_nan_error_names_the_iteration():
    from mmengine.logging import MessageHub

    from mixplugins.engine.finite import check_finite_batch
    hub = MessageHub.get_current_instance()
    hub.update_info('iter', 41)
    x = torch.zeros(2, 3, 4, 4)
    check_finite_batch('RMix', x)  # finite: nothing
    x[0, 0, 0, 0] = float('nan')
    with pytest.raises(ValueError, match='RMix: the input batch at '
                       'iteration 42 has 1 non-finite'):
        check_finite_batch('RMix', x)


def test_truncated_or_corrupted_resume_checkpoint_names_the_previous(
        tmp_path):
    from mixplugins.utils.launcher import check_resume_checkpoint
    good = tmp_path / 'iter_1.pth'
    torch.save(dict(state_dict=dict(w=torch.ones(1000))), str(good))
    blob = good.read_bytes()
    truncated = tmp_path / 'iter_2.pth'
    truncated.write_bytes(blob[:len(blob) // 2])
    check_resume_checkpoint(str(good))  # complete: nothing
    with pytest.raises(ValueError) as err:
        check_resume_checkpoint(str(truncated))
    msg = str(err.value)
    assert 'iter_2.pth' in msg and 'truncated' in msg
    assert f'--resume {good}' in msg
    # a flipped byte inside the data: CRC mismatch
    corrupted = tmp_path / 'iter_3.pth'
    data = bytearray(blob)
    i = data.index(b'\x00\x00\x80\x3f')  # the first 1.0 of the tensor
    data[i + 3] ^= 0xFF
    corrupted.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r'corrupted.*--resume .*iter_1'):
        check_resume_checkpoint(str(corrupted))
    # nothing complete next to it
    good.unlink()
    with pytest.raises(ValueError, match='there is no complete'):
        check_resume_checkpoint(str(truncated))


def test_train_tool_refuses_a_truncated_resume_checkpoint(tmp_path):
    """``tools/train.py --resume PATH`` stops before building the runner."""
    (tmp_path / 'iter_1.pth').write_bytes(b'PK\x03\x04 truncated')
    tiny_cfg = REPO + '/tests/test_tools/configs/tiny_resnet_custom.py'
    code = textwrap.dedent(f'''
        import sys
        sys.path.insert(0, {REPO + '/tools'!r})
        import train
        train.main([{tiny_cfg!r}, '--work-dir', {str(tmp_path)!r},
                    '--resume', {str(tmp_path / 'iter_1.pth')!r}])
        ''')
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, '-c', code], cwd=REPO,
                          capture_output=True, text=True, timeout=300,
                          env=tool_env())
    assert proc.returncode != 0
    assert 'ValueError: --resume ' in proc.stderr
    assert 'iter_1.pth: not a complete torch checkpoint' in proc.stderr
    assert 'there is no complete' in proc.stderr


def _run_log(work_dir) -> str:
    import glob
    return ''.join(
        open(p).read()
        for p in glob.glob(f'{work_dir}/**/*.log', recursive=True))


def test_resume_with_another_batch_or_world_size_is_logged(tmp_path):
    """Another batch size or number of processes than the checkpoint's: the
    resume is not exact and ``ExactResumeHook`` says so, naming what happens
    to the RecursiveMix history (never a silent mismatch)."""
    from tests.test_utils.test_exact_resume import (_train, _write_pngs,
                                                    cls_config)
    root = str(tmp_path / 'data')
    _write_pngs(root)
    cfg = cls_config(root, 'RecursiveMix')
    cfg.train_cfg.max_epochs = 1
    _train(cfg, tmp_path / 'full', 'full')
    ckpt = tmp_path / 'full' / 'iter_2.pth'
    assert torch.load(str(ckpt), weights_only=False)['exact_resume'][
        'batch_size'] == 2
    bs3 = copy.deepcopy(cfg)
    bs3.train_dataloader.batch_size = 3
    _train(bs3, tmp_path / 'bs3', 'bs3', resume_from=ckpt)
    log = _run_log(tmp_path / 'bs3')
    assert ('written with 2 images per batch and process, this run has 3'
            in log)
    assert 'history of 2 images' in log
    # a checkpoint of a 2-process run resumed by one process
    c = torch.load(str(ckpt), weights_only=False)
    c['exact_resume']['world_size'] = 2
    c['exact_resume']['ranks'] = c['exact_resume']['ranks'] * 2
    torch.save(c, str(tmp_path / 'ws2.pth'))
    _train(cfg, tmp_path / 'ws', 'ws', resume_from=tmp_path / 'ws2.pth')
    log = _run_log(tmp_path / 'ws')
    assert 'written by 2 process(es), this run has 1' in log
    assert "rank 0's RecursiveMix history" in log
