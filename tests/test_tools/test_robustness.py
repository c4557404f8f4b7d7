"""Tests of the robustness evaluation (``mixplugins/classification/
robustness.py``) and of ``tools/analysis/robustness.py``.

Unit tests: FGSM / PGD equal torchattacks' on [0, 1] images, occlusion and
corruptions are deterministic per image (not per batch), ``eps = 0`` is the
identity. End to end (slow) on a digits checkpoint trained with
``tools/train.py``: the tool's clean accuracy equals ``tools/test.py``'s,
severity 5 is below severity 1 on average, ``eps = 0`` attacks give the
clean accuracy and larger budgets never raise it; bad input gets a clear
error.
"""
import json
import os.path as osp
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn

import mixplugins  # noqa: F401
from mixplugins.classification.robustness import (CORRUPTIONS,
                                                  CachedCorruptions,
                                                  PixelClassifier,
                                                  RobustnessPlan,
                                                  corrupt_images,
                                                  evaluate_robustness, fgsm,
                                                  occlude_images,
                                                  occlusion_boxes, pgd)

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOL = osp.join(REPO, 'tools', 'analysis', 'robustness.py')


def _net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(32, 5)).eval()


def _batch(n=6, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), generator=g,
                           dtype=torch.uint8)
    return images, torch.randint(0, 5, (n, ), generator=g)


# ---------------------------------------------------------------- attacks
def test_fgsm_equals_torchattacks():
    torchattacks = pytest.importorskip('torchattacks')
    net = _net()
    images, labels = _batch()
    x01 = images.float() / 255

    def loss255(x, y):
        return nn.functional.cross_entropy(net(x / 255), y)

    for eps in (0.0, 2.0, 8.0):
        ours = fgsm(loss255, images.float(), labels, eps) / 255
        theirs = torchattacks.FGSM(net, eps=eps / 255)(x01, labels)
        assert torch.allclose(ours, theirs, atol=1e-5)
    assert torch.equal(fgsm(loss255, images.float(), labels, 0.0),
                       images.float())


def test_pgd_equals_torchattacks():
    torchattacks = pytest.importorskip('torchattacks')
    net = _net(1)
    images, labels = _batch(seed=1)
    x01 = images.float() / 255

    def loss255(x, y):
        return nn.functional.cross_entropy(net(x / 255), y)

    for eps in (2.0, 8.0):
        ours = pgd(loss255, images.float(), labels, eps, steps=5,
                   random_start=False) / 255
        theirs = torchattacks.PGD(net,
                                  eps=eps / 255,
                                  alpha=eps / 4 / 255,
                                  steps=5,
                                  random_start=False)(x01, labels)
        assert torch.allclose(ours, theirs, atol=1e-5)
        # the random start stays in the eps ball and the valid range
        g = torch.Generator().manual_seed(0)
        adv = pgd(loss255, images.float(), labels, eps, steps=3,
                  generator=g)
        assert (adv - images.float()).abs().max() <= eps + 1e-4
        assert adv.min() >= 0 and adv.max() <= 255
    start = pgd(loss255, images.float(), labels, 0.0, steps=2)
    assert torch.equal(start, images.float())


def test_attacks_refuse_negative_eps():
    images, labels = _batch()
    with pytest.raises(ValueError, match='eps'):
        fgsm(lambda x, y: x.sum(), images.float(), labels, -1.0)
    with pytest.raises(ValueError, match='eps'):
        pgd(lambda x, y: x.sum(), images.float(), labels, -1.0)
    with pytest.raises(ValueError, match='steps'):
        pgd(lambda x, y: x.sum(), images.float(), labels, 1.0, steps=0)


# -------------------------------------------------------------- occlusion
def test_occlusion_boxes_per_image_not_per_batch():
    boxes = occlusion_boxes(32, 24, 8, range(10), seed=3)
    assert boxes.shape == (10, 4) and boxes.dtype == torch.int64
    assert torch.equal(boxes[:, 2] - boxes[:, 0], torch.full((10, ), 8))
    assert torch.equal(boxes[:, 3] - boxes[:, 1], torch.full((10, ), 8))
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 24).all()
    assert (boxes[:, 3] <= 32).all()
    halves = torch.cat([occlusion_boxes(32, 24, 8, range(5), seed=3),
                        occlusion_boxes(32, 24, 8, range(5, 10), seed=3)])
    assert torch.equal(boxes, halves)
    assert not torch.equal(boxes, occlusion_boxes(32, 24, 8, range(10), 4))
    with pytest.raises(ValueError, match='size'):
        occlusion_boxes(32, 24, 25, range(2))


def test_occlude_images_fills_exactly_the_box():
    images = torch.rand(3, 3, 10, 12) * 255
    boxes = torch.tensor([[0, 0, 4, 4], [8, 6, 12, 10], [3, 2, 7, 6]])
    fill = torch.tensor([1.0, 2.0, 3.0])
    out = occlude_images(images, boxes, fill)
    for i, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
        inside = torch.zeros(10, 12, dtype=torch.bool)
        inside[y1:y2, x1:x2] = True
        assert torch.equal(out[i][:, inside],
                           fill[:, None].expand(3, int(inside.sum())))
        assert torch.equal(out[i][:, ~inside], images[i][:, ~inside])


# ------------------------------------------------------------ corruptions
def test_corrupt_images_deterministic_per_image():
    images, _ = _batch(4)
    state = np.random.get_state()
    a = corrupt_images(images, 'gaussian_noise', 3, [0, 1, 2, 3], seed=0)
    assert a.shape == images.shape and a.dtype == torch.uint8
    assert not torch.equal(a, images)
    split = torch.cat([
        corrupt_images(images[:1], 'gaussian_noise', 3, [0]),
        corrupt_images(images[1:], 'gaussian_noise', 3, [1, 2, 3])
    ])
    assert torch.equal(a, split)
    assert not torch.equal(
        a, corrupt_images(images, 'gaussian_noise', 3, [0, 1, 2, 3], 1))
    # NumPy's global generator is left as it was
    assert np.array_equal(np.random.get_state()[1], state[1])
    glass = corrupt_images(images[:2], 'glass_blur', 1, [0, 1])
    assert torch.equal(glass, corrupt_images(images[:2], 'glass_blur', 1,
                                             [0, 1]))
    grey = corrupt_images(images[:2, :1], 'fog', 2, [0, 1])
    assert grey.shape == (2, 1, 32, 32)


def test_every_corruption_runs_and_grows_with_severity():
    images, _ = _batch(2)
    for name in CORRUPTIONS:
        change = [(corrupt_images(images, name, s, [0, 1]).float() -
                   images.float()).abs().mean() for s in (1, 5)]
        assert change[0] > 0, name
        assert change[1] >= change[0] * 0.9, name


def test_corrupt_images_bad_input():
    images, _ = _batch(2)
    with pytest.raises(ValueError, match='corruption'):
        corrupt_images(images, 'rain', 1, [0, 1])
    with pytest.raises(ValueError, match='severity'):
        corrupt_images(images, 'fog', 6, [0, 1])
    with pytest.raises(ValueError, match='32 x 32'):
        corrupt_images(images[..., :16, :16], 'fog', 1, [0, 1])
    with pytest.raises(ValueError, match='uint8'):
        corrupt_images(images.float(), 'fog', 1, [0, 1])
    with pytest.raises(ValueError, match='one entry per image'):
        corrupt_images(images, 'fog', 1, [0])


# ------------------------------------------------------------- evaluation
def _digits_classifier():
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(
            dict(type='ImageClassifier',
                 data_preprocessor=dict(num_classes=5,
                                        mean=[100.0, 110.0, 120.0],
                                        std=[50.0, 60.0, 70.0],
                                        to_rgb=True),
                 backbone=dict(type='DemoCNN', widths=(8, 8)),
                 neck=dict(type='GlobalAveragePooling'),
                 head=dict(type='LinearClsHead', num_classes=5,
                           in_channels=8)))
    return model


def test_pixel_classifier_runs_the_models_preprocessing():
    model = _digits_classifier()
    clf = PixelClassifier(model)
    assert clf.bgr_inputs
    # the fill is the mean in the dataloader's (BGR) order
    assert clf.fill(3).tolist() == [120.0, 110.0, 100.0]
    images, _ = _batch(3)
    expected = model(model.data_preprocessor(
        dict(inputs=list(images)), False)['inputs'], mode='tensor')
    assert torch.allclose(clf.logits(images.float()), expected, atol=1e-5)
    assert torch.allclose(clf.scores(images.float()), expected.softmax(1),
                          atol=1e-5)


def test_evaluate_robustness_properties():
    clf = PixelClassifier(_digits_classifier())
    batches = [_batch(5, seed=s) for s in range(2)]
    plan = RobustnessPlan(corruptions=('contrast', 'gaussian_noise'),
                          severities=(5, 1),
                          occlusion=(32, 4),
                          fgsm=(8, 0, 2),
                          pgd=(0, 4),
                          pgd_steps=2)
    calls = []
    report = evaluate_robustness(clf, batches, plan,
                                 progress=calls.append)
    r = report.results
    assert r['num_images'] == 10
    assert len(calls) == 2 * plan.checked().num_conditions() == 2 * 12
    assert list(r['corruptions']) == ['contrast', 'gaussian_noise']
    assert list(r['corruptions']['contrast']) == ['1', '5']
    clean = r['clean']['accuracy']
    for attack in ('fgsm', 'pgd'):
        assert r[attack]['0'] == clean == r[attack + '_single']['0']
        values = list(r[attack].values())
        assert all(b <= a for a, b in zip(values, values[1:]))
        for eps, acc in r[attack].items():
            assert acc <= r[attack + '_single'][eps]
    assert r['mean_corruption_accuracy'] == pytest.approx(
        np.mean([np.mean(list(v.values()))
                 for v in r['corruptions'].values()]))
    assert 0 <= r['clean']['ece'] <= 100
    assert int(report.bins.count.sum()) == 10
    # the same numbers with a batch size of 2 and a corruption cache
    rebatched = [(torch.cat([b[0] for b in batches])[i:i + 2],
                  torch.cat([b[1] for b in batches])[i:i + 2])
                 for i in range(0, 10, 2)]
    cache = CachedCorruptions()
    again = evaluate_robustness(clf, rebatched, plan._replace(pgd=()),
                                corrupt=cache).results
    assert again['corruptions'] == r['corruptions']
    assert again['occlusion'] == r['occlusion']
    assert again['fgsm'] == r['fgsm']
    assert evaluate_robustness(clf, rebatched, plan._replace(pgd=()),
                               corrupt=cache).results == again


def test_plan_checks():
    with pytest.raises(ValueError, match='corruptions'):
        RobustnessPlan(corruptions=('rain', )).checked()
    with pytest.raises(ValueError, match='severities'):
        RobustnessPlan(severities=(0, )).checked()
    with pytest.raises(ValueError, match='fgsm'):
        RobustnessPlan(fgsm=(-1, )).checked()
    with pytest.raises(ValueError, match='occlusion'):
        RobustnessPlan(occlusion=(0, )).checked()
    plan = RobustnessPlan(corruptions=(), fgsm=(4, 0, 4)).checked()
    assert plan.severities == () and plan.fgsm == (0.0, 4.0)


# ------------------------------------------------------- end to end (slow)
def _run(args, cwd, check=True):
    proc = subprocess.run([sys.executable] + args,
                          cwd=str(cwd),
                          capture_output=True,
                          text=True,
                          timeout=900,
                          env=dict(__import__('os').environ,
                                   OMP_NUM_THREADS='2',
                                   MPLBACKEND='Agg'))
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope='module')
def digits_checkpoint(tmp_path_factory):
    """demo_digits_baseline.py trained 2 epochs by tools/train.py."""
    from mixplugins.datasets import prepare_digits
    ws = tmp_path_factory.mktemp('robustness')
    prepare_digits(ws / 'data' / 'digits')
    config = osp.join(REPO, 'configs', 'classification',
                      'demo_digits_baseline.py')
    _run([
        osp.join(REPO, 'tools', 'train.py'), config, '--work-dir',
        str(ws / 'work'), '--cfg-options', 'train_cfg.max_epochs=2',
        f'train_dataloader.dataset.data_root={ws}/data/digits',
        f'val_dataloader.dataset.data_root={ws}/data/digits',
        f'test_dataloader.dataset.data_root={ws}/data/digits'
    ], ws)
    return ws, config, str(ws / 'work' / 'epoch_2.pth')


def _data_root_options(ws):
    return [
        '--cfg-options',
        f'test_dataloader.dataset.data_root={ws}/data/digits'
    ]


@pytest.mark.slow
def test_tool_on_a_digits_checkpoint(digits_checkpoint):
    ws, config, ckpt = digits_checkpoint
    test = _run([
        osp.join(REPO, 'tools', 'test.py'), config, ckpt, '--work-dir',
        str(ws / 'test'), '--show-dir',
        str(ws / 'test' / 'reliability')
    ] + _data_root_options(ws), ws)
    log = test.stdout + test.stderr
    top1 = float(re.search(r'accuracy/top1: ([0-9.]+)', log).group(1))
    ece = float(re.search(r'calibration/ece: ([0-9.]+)', log).group(1))
    assert (ws / 'test' / 'reliability' / 'reliability.png').is_file()

    out = ws / 'robustness'
    _run([
        TOOL, config, ckpt, '--severities', '1', '5', '--occlusion', '4',
        '16', '--fgsm', '0', '2', '8', '--pgd', '0', '8', '--pgd-steps', '3',
        '--out',
        str(out)
    ] + _data_root_options(ws), ws)
    r = json.loads((out / 'robustness.json').read_text())
    assert r['num_images'] == 300
    assert r['clean']['accuracy'] == pytest.approx(top1, abs=1e-3)
    assert r['clean']['ece'] == pytest.approx(ece, abs=1e-3)
    assert len(r['corruptions']) == 15
    assert r['severity_mean']['5'] < r['severity_mean']['1']
    for attack in ('fgsm', 'pgd'):
        assert r[attack]['0'] == pytest.approx(top1, abs=1e-3)
        values = list(r[attack].values())
        assert all(b <= a for a, b in zip(values, values[1:])), values
    assert r['fgsm']['8'] < top1
    assert r['occlusion']['16'] <= r['occlusion']['4'] + 1
    for name in ('robustness.md', 'robustness.png', 'reliability.png',
                 'reliability.json'):
        assert (out / name).is_file(), name
    assert '| **mean** |' in (out / 'robustness.md').read_text()


def _tool():
    """tools/analysis/robustness.py as a module (in-process calls)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location('robustness_tool', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_tool_bad_input(digits_checkpoint, tmp_path, capsys):
    ws, config, ckpt = digits_checkpoint
    # a checkpoint of another model (a wider DemoCNN): refused up front,
    # exit status 2 and one line naming the problem
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        other = MODELS.build(
            dict(type='ImageClassifier',
                 backbone=dict(type='DemoCNN', widths=(8, 16)),
                 neck=dict(type='GlobalAveragePooling'),
                 head=dict(type='LinearClsHead', num_classes=10,
                           in_channels=16)))
    other_ckpt = str(tmp_path / 'other.pth')
    torch.save(dict(state_dict=other.state_dict()), other_ckpt)
    proc = _run([TOOL, config, other_ckpt, '--corruptions', 'none', '--out',
                 str(tmp_path / 'x')] + _data_root_options(ws),
                ws,
                check=False)
    assert proc.returncode == 2
    assert 'does not fit the model' in proc.stderr
    assert 'shapes differ' in proc.stderr
    assert 'Traceback' not in proc.stderr
    assert not (tmp_path / 'x').exists()

    tool = _tool()
    out = ['--out', str(tmp_path / 'x')]
    for argv, message in (
        (['--corruptions', 'rain'], 'unknown corruption(s) rain'),
        (['--fgsm', '-1'], '--fgsm budgets must be finite and >= 0'),
        (['--pgd', '2', 'inf'], '--pgd budgets must be finite'),
        (['--severities', '6'], '--severities must be in 1..5'),
        (['--occlusion', '0'], '--occlusion sizes must be >= 1'),
    ):
        with pytest.raises(SystemExit) as exc:
            tool.main([config, ckpt] + argv + out)
        assert exc.value.code == 2
        assert message in capsys.readouterr().err, argv
    with pytest.raises(FileNotFoundError, match='no checkpoint file'):
        tool.main([config, str(tmp_path / 'missing.pth')] + out)
