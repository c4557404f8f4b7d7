"""Tests of ``CalibrationError`` and its functions
(``mixplugins/classification/metrics.py``): equal to torchmetrics'
``multiclass_calibration_error`` (same bins; L1 and max norms) on random
and on real predictions, ~0 on a perfectly calibrated synthetic case, and
usable through mmengine's ``Evaluator`` beside ``Accuracy``."""
import json

import numpy as np
import pytest
import torch
from mmengine.evaluator import Evaluator
from mmengine.registry import DefaultScope
from mmpretrain.registry import METRICS
from mmpretrain.structures import DataSample
from torchmetrics.functional.classification import \
    multiclass_calibration_error

import mixplugins  # noqa: F401
from mixplugins.classification.metrics import (CalibrationError,
                                               calibration_bins,
                                               calibration_error,
                                               plot_reliability_diagram,
                                               top1_confidence,
                                               with_reliability_plot)

DEFAULT_ARGS = dict(type='CalibrationError')


def _ours(scores, labels, n_bins=15):
    bins = calibration_bins(*top1_confidence(scores, labels), n_bins)
    return calibration_error(bins, 'l1'), calibration_error(bins, 'max')


def _theirs(scores, labels, n_bins=15):
    k = scores.shape[1]
    return tuple(
        float(
            multiclass_calibration_error(
                scores, labels, num_classes=k, n_bins=n_bins, norm=norm))
        for norm in ('l1', 'max'))


def _real_predictions():
    """Scores of a logistic regression on scikit-learn's digits (real
    predictions: most confidences near 1, some exactly 1 in float32)."""
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    digits = load_digits()
    x, y = digits.data / 16.0, digits.target
    train = np.arange(len(y)) % 5 != 0
    clf = LogisticRegression(max_iter=300).fit(x[train], y[train])
    scores = torch.from_numpy(clf.predict_proba(x[~train])).float()
    return scores, torch.from_numpy(y[~train])


@pytest.mark.parametrize('n_bins', [1, 10, 15, 30])
@pytest.mark.parametrize('seed', [0, 1, 2])
def test_ece_equals_torchmetrics_on_random_predictions(n_bins, seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(500, 7, generator=g) * (1 + seed)
    scores = logits.softmax(1)
    labels = torch.randint(0, 7, (500, ), generator=g)
    ours, theirs = _ours(scores, labels, n_bins), _theirs(
        scores, labels, n_bins)
    assert ours == pytest.approx(theirs, abs=1e-6)
    # logits are softmaxed first, as torchmetrics does
    assert _ours(logits, labels, n_bins) == pytest.approx(theirs, abs=1e-6)


def test_ece_equals_torchmetrics_on_real_predictions():
    scores, labels = _real_predictions()
    conf, _ = top1_confidence(scores, labels)
    assert (conf > 0.9).float().mean() > 0.5  # a confident model
    for n_bins in (10, 15):
        assert _ours(scores, labels, n_bins) == pytest.approx(
            _theirs(scores, labels, n_bins), abs=1e-6)


def test_confidence_one_and_bin_edges_as_torchmetrics():
    # exactly 1 (its own bin in torchmetrics), exactly on inner edges, 0
    k = 4
    conf = torch.tensor([1.0, 1.0, 0.5, 1 / 3, 0.25, 0.25, 0.99, 0.26])
    labels = torch.tensor([0, 1, 0, 0, 1, 0, 0, 0])
    rest = (1 - conf) / (k - 1)
    scores = rest[:, None].repeat(1, k)
    scores[:, 0] = conf
    assert _ours(scores, labels, 4) == pytest.approx(_theirs(
        scores, labels, 4),
                                                     abs=1e-6)
    bins = calibration_bins(*top1_confidence(scores, labels), 4)
    assert bins.count.tolist() == [0, 4, 1, 1, 2]
    assert bins.count.dtype == torch.float64


def test_perfectly_calibrated_case_gives_about_zero():
    g = torch.Generator().manual_seed(0)
    n = 200_000
    conf = 0.1 + 0.9 * torch.rand(n, generator=g)
    correct = torch.rand(n, generator=g) < conf
    ece = calibration_error(calibration_bins(conf, correct, 15))
    assert ece < 0.005
    # the same confidences, always right: ECE = 1 - mean confidence
    always = calibration_error(
        calibration_bins(conf, torch.ones(n, dtype=torch.bool), 15))
    assert always == pytest.approx(1 - float(conf.mean()), abs=1e-6)


def test_calibration_error_hand_example():
    # two bins: [0, .5) holds conf .3 (wrong); [.5, 1) holds .6 (right)
    # and .8 (wrong): gaps |0 - .3| and |.5 - .7| -> ECE (.3 + 2 * .2) / 3
    bins = calibration_bins(torch.tensor([0.3, 0.6, 0.8]),
                            torch.tensor([False, True, False]), 2)
    assert calibration_error(bins, 'l1') == pytest.approx(0.7 / 3)
    assert calibration_error(bins, 'max') == pytest.approx(0.3)
    empty = calibration_bins(torch.zeros(0), torch.zeros(0, dtype=bool))
    assert calibration_error(empty) == 0.0


def test_bad_arguments():
    with pytest.raises(ValueError, match='n_bins'):
        calibration_bins(torch.rand(3), torch.ones(3, dtype=bool), 0)
    with pytest.raises(ValueError, match='same length'):
        calibration_bins(torch.rand(3), torch.ones(2, dtype=bool))
    with pytest.raises(ValueError, match=r'\[0, 1\]'):
        calibration_bins(torch.tensor([1.5]), torch.ones(1, dtype=bool))
    with pytest.raises(ValueError, match='norm'):
        calibration_error(
            calibration_bins(torch.rand(3), torch.ones(3, dtype=bool)), 'l2')
    with pytest.raises(ValueError, match=r'\(N, C\)'):
        top1_confidence(torch.rand(3), torch.zeros(3))
    with pytest.raises(ValueError, match='3 entries'):
        top1_confidence(torch.rand(3, 2), torch.zeros(4))


def _samples(scores, labels):
    return [
        DataSample().set_pred_score(s).set_gt_label(int(y))
        for s, y in zip(scores, labels)
    ]


class TestCalibrationError:

    def test_init(self):
        metric = METRICS.build(DEFAULT_ARGS)
        assert isinstance(metric, CalibrationError)
        assert metric.n_bins == 15 and metric.plot_dir is None
        with pytest.raises(ValueError, match='n_bins'):
            METRICS.build({**DEFAULT_ARGS, 'n_bins': 0})
        with pytest.raises(ValueError, match='n_bins'):
            METRICS.build({**DEFAULT_ARGS, 'n_bins': 2.5})
        with pytest.raises(TypeError, match='plot_dir'):
            METRICS.build({**DEFAULT_ARGS, 'plot_dir': 3})

    def test_evaluator_beside_accuracy(self, tmp_path):
        scores, labels = _real_predictions()
        with DefaultScope.overwrite_default_scope('mmpretrain'):
            evaluator = Evaluator([
                dict(type='Accuracy', topk=(1, )),
                {**DEFAULT_ARGS, 'n_bins': 15, 'plot_dir': str(tmp_path)}
            ])
        samples = _samples(scores, labels)
        for i in range(0, len(samples), 64):  # several batches
            evaluator.process(samples[i:i + 64])
        metrics = evaluator.evaluate(len(samples))
        ece, mce = _theirs(scores, labels)
        assert metrics['calibration/ece'] == pytest.approx(100 * ece,
                                                           abs=1e-4)
        assert metrics['calibration/mce'] == pytest.approx(100 * mce,
                                                           abs=1e-4)
        acc = float((scores.argmax(1) == labels).float().mean()) * 100
        assert metrics['accuracy/top1'] == pytest.approx(acc, abs=1e-4)
        saved = json.loads((tmp_path / 'reliability.json').read_text())
        assert sum(saved['count']) == len(samples)
        assert saved['ece'] == pytest.approx(metrics['calibration/ece'])
        assert (tmp_path / 'reliability.png').stat().st_size > 10_000

    def test_prefix(self):
        metric = METRICS.build({**DEFAULT_ARGS, 'prefix': 'val_cal'})
        metric.process(None, _samples(torch.eye(3), torch.arange(3)))
        assert metric.evaluate(3) == {'val_cal/ece': 0.0, 'val_cal/mce': 0.0}

    def test_needs_scores_and_one_label(self):
        metric = METRICS.build(DEFAULT_ARGS)
        with pytest.raises(ValueError, match='pred_score'):
            metric.process(None, [DataSample().set_pred_label(1)
                                  .set_gt_label(1)])
        with pytest.raises(ValueError, match='single-label'):
            metric.process(None, [
                DataSample().set_pred_score(torch.rand(3)).set_gt_label(
                    [0, 1])
            ])


def test_with_reliability_plot():
    acc = dict(type='Accuracy', topk=(1, ))
    assert with_reliability_plot(acc, 'd') == [
        acc, dict(type='CalibrationError', plot_dir='d')
    ]
    cal = dict(type='CalibrationError', n_bins=10)
    out = with_reliability_plot([acc, cal], 'd')
    assert out == [acc, dict(type='CalibrationError', n_bins=10,
                             plot_dir='d')]
    assert 'plot_dir' not in cal  # a copy


def test_plot_reliability_diagram(tmp_path):
    scores, labels = _real_predictions()
    bins = calibration_bins(*top1_confidence(scores, labels))
    path = plot_reliability_diagram(bins, str(tmp_path / 'a' / 'r.png'),
                                    'title')
    from PIL import Image
    with Image.open(path) as img:
        assert img.width > 400 and img.height > 400
