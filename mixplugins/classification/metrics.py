r"""Calibration of a classifier's scores: ECE, MCE and the reliability diagram.

The expected calibration error (Naeini et al., AAAI 2015) is the measure of
`On Calibration of Modern Neural Networks <https://arxiv.org/abs/1706.04599>`_
(Guo et al., ICML 2017): the top-1 confidences are sorted into ``n_bins``
equal-width bins over [0, 1], and

.. math::

    \mathrm{ECE} = \sum_b \frac{n_b}{N} \, |\mathrm{acc}_b - \mathrm{conf}_b|,
    \qquad
    \mathrm{MCE} = \max_b |\mathrm{acc}_b - \mathrm{conf}_b|,

with :math:`\mathrm{acc}_b` the accuracy and :math:`\mathrm{conf}_b` the mean
confidence of the :math:`n_b` predictions of bin :math:`b`. The R-Mix paper
reports it beside accuracy; OpenMixup ships it for OpenMMLab 1.x.

The bins are those of torchmetrics' ``multiclass_calibration_error``
(``torch.bucketize(conf, linspace(0, 1, n_bins + 1), right=True) - 1`` in
float32), so the numbers equal torchmetrics' on the same scores (checked in
``tests/test_classification/test_metrics.py``). That rule puts a confidence
of exactly 1 -- common in float32 for a confident network -- into an extra
bin of its own after the ``n_bins`` equal-width ones; the reliability diagram
draws it inside the last bar. Sums are accumulated in float64.

:class:`CalibrationError` is the mmengine metric (registered in mmpretrain's
``METRICS``) that a ``val_evaluator`` / ``test_evaluator`` lists beside
``Accuracy``; :func:`calibration_bins`, :func:`calibration_error` and
:func:`plot_reliability_diagram` are the plain functions it uses, which the
robustness tool and the benchmarks reuse.
"""
import os
import os.path as osp
from typing import Any, Dict, List, NamedTuple, Optional, Sequence

import torch
from mmengine.evaluator import BaseMetric
from mmpretrain.registry import METRICS
from torch import Tensor

from ..core.checks import check_choice, check_int

__all__ = [
    'CalibrationBins', 'top1_confidence', 'calibration_bins',
    'calibration_error', 'plot_reliability_diagram', 'write_reliability',
    'CalibrationError', 'with_reliability_plot'
]

#: Norms of :func:`calibration_error`: ``'l1'`` is the ECE, ``'max'`` the MCE.
NORMS = ('l1', 'max')


class CalibrationBins(NamedTuple):
    """Per-bin statistics of top-1 predictions (all float64, ``n_bins + 1``
    entries: the last one holds the confidences equal to 1).

    Attributes:
        edges (Tensor): Bin edges (n_bins + 1,), ``linspace(0, 1)``.
        count (Tensor): Predictions per bin.
        confidence (Tensor): Mean confidence per bin (0 where empty).
        accuracy (Tensor): Fraction correct per bin (0 where empty).
    """
    edges: Tensor
    count: Tensor
    confidence: Tensor
    accuracy: Tensor


def top1_confidence(scores: Tensor, labels: Tensor) -> Tensor:
    """Top-1 confidence and correctness of class scores.

    Args:
        scores (Tensor): (N, C) class probabilities. Rows that are not all
            in [0, 1] make the whole tensor count as logits, which are
            softmaxed first (torchmetrics' rule).
        labels (Tensor): (N,) integer ground-truth classes.

    Returns:
        tuple[Tensor, Tensor]: ``confidence`` (N,) float32 and ``correct``
        (N,) bool.
    """
    if not isinstance(scores, Tensor) or scores.dim() != 2:
        shape = (tuple(scores.shape)
                 if isinstance(scores, Tensor) else type(scores).__name__)
        raise ValueError(f'`scores` must be an (N, C) tensor, got {shape}')
    labels = torch.as_tensor(labels, device=scores.device).reshape(-1)
    if labels.numel() != scores.shape[0]:
        raise ValueError(f'`labels` must have {scores.shape[0]} entries (one '
                         f'per row of `scores`), got {labels.numel()}')
    scores = scores.detach().float()
    if not bool(((scores >= 0) & (scores <= 1)).all()):
        scores = scores.softmax(dim=1)
    confidence, prediction = scores.max(dim=1)
    return confidence, prediction == labels.long()


def calibration_bins(confidence: Tensor,
                     correct: Tensor,
                     n_bins: int = 15) -> CalibrationBins:
    """Sort top-1 predictions into equal-width confidence bins.

    Args:
        confidence (Tensor): (N,) top-1 confidences in [0, 1].
        correct (Tensor): (N,) whether each top-1 prediction is right.
        n_bins (int): Equal-width bins over [0, 1], >= 1. Defaults to 15.

    Returns:
        CalibrationBins: Edges and per-bin count / mean confidence /
        accuracy, with ``n_bins + 1`` entries (see the module docstring).
    """
    n_bins = check_int('n_bins', n_bins, 1)
    confidence = confidence.detach().float().reshape(-1)
    correct = correct.detach().reshape(-1)
    if confidence.numel() != correct.numel():
        raise ValueError(f'`confidence` and `correct` must have the same '
                         f'length, got {confidence.numel()} and '
                         f'{correct.numel()}')
    if confidence.numel() and not bool(((confidence >= 0) &
                                        (confidence <= 1)).all()):
        raise ValueError('`confidence` must lie in [0, 1]')
    edges = torch.linspace(0, 1, n_bins + 1, device=confidence.device)
    index = torch.bucketize(confidence, edges, right=True) - 1
    size = n_bins + 1
    count = torch.zeros(size, dtype=torch.float64, device=confidence.device)
    conf_sum = torch.zeros_like(count)
    acc_sum = torch.zeros_like(count)
    count.index_add_(0, index, torch.ones_like(confidence, dtype=count.dtype))
    conf_sum.index_add_(0, index, confidence.to(count.dtype))
    acc_sum.index_add_(0, index, correct.to(count.dtype))
    denom = count.clamp(min=1)
    return CalibrationBins(edges.double(), count, conf_sum / denom,
                           acc_sum / denom)


def calibration_error(bins: CalibrationBins, norm: str = 'l1') -> float:
    """The calibration error of binned predictions, as a fraction.

    Args:
        bins (CalibrationBins): From :func:`calibration_bins`.
        norm (str): ``'l1'``: expected calibration error (gaps weighted by
            the bins' share of predictions); ``'max'``: maximum calibration
            error (largest gap of a non-empty bin). Defaults to ``'l1'``.

    Returns:
        float: In [0, 1]; 0 when there are no predictions.
    """
    check_choice('norm', norm, NORMS)
    total = float(bins.count.sum())
    if total == 0:
        return 0.0
    gap = (bins.accuracy - bins.confidence).abs()
    if norm == 'l1':
        return float((gap * bins.count).sum() / total)
    return float(gap[bins.count > 0].max())


def plot_reliability_diagram(bins: CalibrationBins,
                             path: str,
                             title: Optional[str] = None) -> str:
    """Draw the reliability diagram of ``bins`` to a PNG file.

    Top: the accuracy of each confidence bin (bars) against the diagonal of
    perfect calibration, the gap to the bin's mean confidence shaded, ECE
    and MCE in the legend. Bottom: the share of predictions per bin.

    Args:
        bins (CalibrationBins): From :func:`calibration_bins`.
        path (str): PNG file to write; its folder is created.
        title (str, optional): Figure title. Defaults to None.

    Returns:
        str: ``path``.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    # the bin of confidence == 1 is drawn inside the last equal-width bar
    count = bins.count[:-1].clone()
    conf_sum = (bins.confidence * bins.count)[:-1].clone()
    acc_sum = (bins.accuracy * bins.count)[:-1].clone()
    count[-1] += bins.count[-1]
    conf_sum[-1] += bins.confidence[-1] * bins.count[-1]
    acc_sum[-1] += bins.accuracy[-1] * bins.count[-1]
    denom = count.clamp(min=1)
    acc, conf = (acc_sum / denom).numpy(), (conf_sum / denom).numpy()
    edges = bins.edges.numpy()
    left, width = edges[:-1], edges[1:] - edges[:-1]
    share = (count / max(float(count.sum()), 1.0)).numpy()
    filled = count.numpy() > 0
    ece = calibration_error(bins, 'l1') * 100
    mce = calibration_error(bins, 'max') * 100

    fig, (top, bottom) = plt.subplots(2,
                                      1,
                                      figsize=(4.8, 5.6),
                                      sharex=True,
                                      gridspec_kw=dict(height_ratios=(3,
                                                                      1)))
    top.bar(left[filled],
            acc[filled],
            width=width[filled],
            align='edge',
            color='#4c72b0',
            edgecolor='black',
            lw=0.5,
            label=f'accuracy (ECE {ece:.2f}%, MCE {mce:.2f}%)')
    top.bar(left[filled],
            conf[filled] - acc[filled],
            bottom=acc[filled],
            width=width[filled],
            align='edge',
            color='#dd8452',
            alpha=0.45,
            edgecolor='#c44e52',
            hatch='//',
            lw=0.5,
            label='gap to mean confidence')
    top.plot([0, 1], [0, 1], ls='--', color='grey', lw=1,
             label='perfect calibration')
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel('accuracy')
    top.legend(loc='upper left', fontsize=8)
    if title:
        top.set_title(title, fontsize=10)
    bottom.bar(left,
               share,
               width=width,
               align='edge',
               color='#55a868',
               edgecolor='black',
               lw=0.5)
    bottom.set_xlabel('top-1 confidence')
    bottom.set_ylabel('share')
    fig.tight_layout()
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


@METRICS.register_module()
class CalibrationError(BaseMetric):
    """Expected and maximum calibration error of the predicted scores.

    Reads ``pred_score`` and ``gt_label`` of each data sample (as
    ``Accuracy`` does) and reports, in percent like ``Accuracy``:

    - ``calibration/ece``: expected calibration error (L1 norm);
    - ``calibration/mce``: maximum calibration error (max norm).

    The bins and the numbers are those of torchmetrics'
    ``multiclass_calibration_error`` (see the module docstring). Use it in
    any evaluator beside ``Accuracy``::

        val_evaluator = [
            dict(type='Accuracy', topk=(1, )),
            dict(type='CalibrationError', n_bins=15),
        ]

    Args:
        n_bins (int): Equal-width confidence bins over [0, 1], >= 1.
            Defaults to 15 (Guo et al.'s and torchmetrics' default).
        plot_dir (str, optional): When set, every evaluation also writes
            the reliability diagram to ``plot_dir/reliability.png``
            (overwritten) and the bins to ``plot_dir/reliability.json``.
            ``tools/test.py --show-dir DIR`` sets it. Defaults to None.
        collect_device (str): Device for collecting results across ranks,
            ``'cpu'`` or ``'gpu'``. Defaults to ``'cpu'``.
        prefix (str, optional): Prefix of the metric names. Defaults to
            None (``'calibration'``).
    """
    default_prefix: Optional[str] = 'calibration'

    def __init__(self,
                 n_bins: int = 15,
                 plot_dir: Optional[str] = None,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.n_bins = check_int('n_bins', n_bins, 1)
        if plot_dir is not None and not isinstance(plot_dir,
                                                   (str, os.PathLike)):
            raise TypeError(f'`plot_dir` must be None or a path, got '
                            f'{plot_dir!r}')
        self.plot_dir = None if plot_dir is None else os.fspath(plot_dir)

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        """Keep the score and the label of each sample."""
        for sample in data_samples:
            score = sample.get('pred_score')
            if score is None:
                raise ValueError(
                    'CalibrationError needs `pred_score` in the predictions '
                    '(the scores of every class); this model only gives '
                    '`pred_label`')
            label = sample.get('gt_label').reshape(-1)
            if label.numel() != 1:
                raise ValueError(
                    'CalibrationError measures single-label predictions; a '
                    f'sample has {label.numel()} ground-truth labels')
            self.results.append(
                dict(pred_score=score.detach().float().cpu(),
                     gt_label=label.cpu()))

    def compute_metrics(self, results: List[dict]) -> Dict[str, float]:
        """ECE and MCE (percent) of all the kept predictions."""
        scores = torch.stack([r['pred_score'] for r in results])
        labels = torch.cat([r['gt_label'] for r in results])
        bins = calibration_bins(*top1_confidence(scores, labels),
                                self.n_bins)
        metrics = dict(ece=calibration_error(bins, 'l1') * 100,
                       mce=calibration_error(bins, 'max') * 100)
        if self.plot_dir is not None:
            write_reliability(bins, self.plot_dir)
        return metrics


def write_reliability(bins: CalibrationBins, folder: str) -> str:
    """Write ``reliability.png`` and ``reliability.json`` into ``folder``.

    Returns:
        str: The PNG path.
    """
    import json

    os.makedirs(folder, exist_ok=True)
    with open(osp.join(folder, 'reliability.json'), 'w') as f:
        json.dump(
            dict(edges=bins.edges.tolist(),
                 count=bins.count.tolist(),
                 confidence=bins.confidence.tolist(),
                 accuracy=bins.accuracy.tolist(),
                 ece=calibration_error(bins, 'l1') * 100,
                 mce=calibration_error(bins, 'max') * 100,
                 note='the last bin holds confidences equal to 1; ece and '
                 'mce in percent'),
            f,
            indent=1)
    return plot_reliability_diagram(
        bins, osp.join(folder, 'reliability.png'),
        f'reliability diagram ({int(bins.count.sum())} predictions)')


def with_reliability_plot(evaluator: Any, plot_dir: str) -> List[Any]:
    """An evaluator config whose calibration metrics draw to ``plot_dir``.

    Every ``CalibrationError`` of ``evaluator`` gets ``plot_dir``; when it
    has none, ``dict(type='CalibrationError', plot_dir=plot_dir)`` is
    appended (the default 15 bins). What ``tools/test.py --show-dir`` does
    to ``test_evaluator``.

    Args:
        evaluator (dict | list[dict]): A ``val_evaluator`` /
            ``test_evaluator`` config (one metric or a list of them).
        plot_dir (str): Folder of the reliability diagram.

    Returns:
        list[dict]: The metric configs (copies).
    """
    metrics = evaluator if isinstance(evaluator, (list, tuple)) else [
        evaluator
    ]
    out, found = [], False
    for metric in metrics:
        metric = type(metric)(metric)
        if metric.get('type') in ('CalibrationError', CalibrationError):
            metric['plot_dir'] = plot_dir
            found = True
        out.append(metric)
    if not found:
        out.append(dict(type='CalibrationError', plot_dir=plot_dir))
    return out
