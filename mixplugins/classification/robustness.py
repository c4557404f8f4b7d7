r"""Robustness of an mmpretrain classifier: corruptions, occlusion, FGSM, PGD.

What ``tools/analysis/robustness.py`` and
``benchmarks/reproduce_digits.py`` evaluate, in one place:

- **Common corruptions**: the 15 corruptions x 5 severities of ImageNet-C,
  `Benchmarking Neural Network Robustness to Common Corruptions and
  Perturbations <https://arxiv.org/abs/1903.12261>`_ (Hendrycks and
  Dietterich, ICLR 2019), applied to the test images with
  ``imagecorruptions-imaug`` (https://github.com/imaug/imagecorruptions),
  the maintained fork of bethgelab's ``imagecorruptions``. Why the fork:
  ``imagecorruptions`` 1.1.2 (2020, the last release) fails on today's
  stack -- ``fog`` uses ``np.float_`` (removed in NumPy 2) and
  ``glass_blur`` passes ``multichannel`` to scikit-image's ``gaussian``
  (removed in 0.19) -- while the fork runs all 15 with NumPy 2.4 and
  scikit-image 0.26, keeps the reference formulas and parameters, and takes
  a seed for ``glass_blur`` / ``impulse_noise``. Kornia has no ImageNet-C
  set. Both import as ``imagecorruptions``; install the fork
  (``pip install mixplugins[eval]``).
- **Occlusion**, as OpenMixup's occlusion test
  (``tools/analysis_tools/occlusion_robustness.py``), which sets patches of
  the *normalised* image to 0: one ``size x size`` square per image, at a
  random position inside it, filled with the data preprocessor's mean (0
  after normalisation).
- **FGSM** (`Explaining and Harnessing Adversarial Examples
  <https://arxiv.org/abs/1412.6572>`_, Goodfellow et al., ICLR 2015) and
  **PGD** with a random start (`Towards Deep Learning Models Resistant to
  Adversarial Attacks <https://arxiv.org/abs/1706.06083>`_, Madry et al.,
  ICLR 2018), untargeted, L-inf, on the cross-entropy, with the budget
  ``eps`` in pixel units (0..255; ``eps=8`` is the usual 8/255). A short
  own implementation, because the attack must run through the model's own
  data preprocessor (channel order, mean / std) on raw pixels; it computes
  what torchattacks' ``FGSM`` / ``PGD`` compute on [0, 1] images (checked
  in ``tests/test_tools/test_robustness.py``).

Every random draw is fixed by ``seed`` and the image's position in the
test set (not the batch), so the numbers do not depend on the batch size.

Attack accuracy is reported two ways: ``fgsm_single[eps]`` is the accuracy
under the attack run at ``eps`` alone; ``fgsm[eps]`` counts an image as
correct only if every attack run at an ``eps' <= eps`` failed on it (an
adversarial image found in a smaller ball lies in the larger one too), the
standard way to report robust accuracy over a range of budgets. It cannot
rise with ``eps``, and at ``eps = 0`` it is the clean accuracy. Same for
PGD.
"""
from typing import (Any, Callable, Dict, Iterable, List, NamedTuple, Optional,
                    Tuple)

import numpy as np
import torch
from torch import Tensor

from ..core.checks import (check_choice, check_int, check_number,
                           check_sequence)
from .metrics import (CalibrationBins, calibration_bins, calibration_error,
                      top1_confidence)
from .perturbations import (CORRUPTIONS, SEVERITIES, CachedCorruptions,
                            PixelClassifier, corrupt_images,
                            dataloader_batches, fgsm, import_imagecorruptions,
                            occlude_images, occlusion_boxes, pgd, _seed)

__all__ = [
    'CORRUPTIONS', 'SEVERITIES', 'RobustnessPlan', 'RobustnessReport',
    'import_imagecorruptions', 'corrupt_images', 'occlusion_boxes',
    'occlude_images', 'fgsm', 'pgd', 'PixelClassifier', 'dataloader_batches',
    'CachedCorruptions', 'evaluate_robustness', 'format_markdown',
    'plot_robustness'
]

class RobustnessPlan(NamedTuple):
    """What :func:`evaluate_robustness` measures.

    Attributes:
        corruptions (tuple[str]): Subset of :data:`CORRUPTIONS`.
        severities (tuple[int]): Subset of 1..5.
        occlusion (tuple[int]): Patch sides in pixels.
        fgsm (tuple[float]): FGSM budgets in pixel units.
        pgd (tuple[float]): PGD budgets in pixel units.
        pgd_steps (int): PGD steps.
        seed (int): Seed of every draw.
        n_bins (int): Bins of the clean ECE.
    """
    corruptions: Tuple[str, ...] = CORRUPTIONS
    severities: Tuple[int, ...] = SEVERITIES
    occlusion: Tuple[int, ...] = ()
    fgsm: Tuple[float, ...] = ()
    pgd: Tuple[float, ...] = ()
    pgd_steps: int = 10
    seed: int = 0
    n_bins: int = 15

    def checked(self) -> 'RobustnessPlan':
        """A copy with every field validated (sorted, no duplicates)."""

        def unique(values):
            return tuple(sorted(set(values)))

        corruptions = (tuple(
            dict.fromkeys(
                check_sequence('corruptions', self.corruptions, check_choice,
                               CORRUPTIONS))) if self.corruptions else ())
        severities = (unique(
            check_sequence('severities', self.severities, check_int, 1, 5))
                      if corruptions else ())
        if corruptions and not severities:
            raise ValueError('`severities` must not be empty when '
                             'corruptions are evaluated')
        occlusion = (unique(
            check_sequence('occlusion', self.occlusion, check_int, 1))
                     if self.occlusion else ())
        fgsm_eps = (unique(check_sequence('fgsm', self.fgsm, check_number,
                                          0.0)) if self.fgsm else ())
        pgd_eps = (unique(check_sequence('pgd', self.pgd, check_number, 0.0))
                   if self.pgd else ())
        return RobustnessPlan(corruptions, severities, occlusion, fgsm_eps,
                              pgd_eps, check_int('pgd_steps', self.pgd_steps,
                                                 1),
                              check_int('seed', self.seed, 0),
                              check_int('n_bins', self.n_bins, 1))

    def num_conditions(self) -> int:
        """Evaluations per batch (clean included)."""
        return (1 + len(self.corruptions) * len(self.severities) +
                len(self.occlusion) + len(self.fgsm) + len(self.pgd))


class RobustnessReport(NamedTuple):
    """What :func:`evaluate_robustness` returns.

    Attributes:
        results (dict): JSON-ready numbers, accuracies and ECE in percent
            (see :func:`evaluate_robustness`).
        bins (CalibrationBins): Calibration bins of the clean predictions.
    """
    results: Dict[str, Any]
    bins: CalibrationBins


def _eps_key(eps: float) -> str:
    return f'{eps:g}'


def evaluate_robustness(
        classifier: PixelClassifier,
        batches: Iterable[Tuple[Tensor, Tensor]],
        plan: RobustnessPlan,
        corrupt: Callable[..., Tensor] = corrupt_images,
        progress: Optional[Callable[[int], None]] = None
) -> RobustnessReport:
    """Evaluate ``classifier`` on clean, corrupted, occluded and attacked
    versions of the test images, in one pass over ``batches``.

    Args:
        classifier (PixelClassifier): The model.
        batches (Iterable): ``(pixels, labels)``: (N, C, H, W) uint8 images
            in the dataloader's channel order and (N,) labels, e.g.
            :func:`dataloader_batches`.
        plan (RobustnessPlan): What to measure.
        corrupt (Callable): ``corrupt(rgb_images, corruption, severity,
            indices, seed)``; defaults to :func:`corrupt_images` (a caching
            wrapper of it may be passed).
        progress (Callable, optional): Called with 1 after each condition
            of each batch (:meth:`RobustnessPlan.num_conditions` per batch).

    Returns:
        RobustnessReport: ``results`` holds ``num_images``; ``clean``
        (``accuracy``, ``ece``, ``mce``); ``corruptions`` (name -> severity
        -> accuracy), ``corruption_mean`` (name -> mean over severities),
        ``severity_mean`` (severity -> mean over corruptions) and
        ``mean_corruption_accuracy``; ``occlusion`` (size -> accuracy);
        ``fgsm`` / ``pgd`` (eps -> accuracy, cumulative over the smaller
        budgets, see the module docstring) and ``fgsm_single`` /
        ``pgd_single`` (eps -> accuracy of that attack alone); ``settings``.
    """
    plan = plan.checked()
    tick = progress or (lambda n: None)
    correct: Dict[str, int] = {}
    total = 0
    scores_all: List[Tensor] = []
    labels_all: List[Tensor] = []

    def add(key: str, hits: Tensor) -> None:
        correct[key] = correct.get(key, 0) + int(hits.sum())

    def predicted(pixels: Tensor, labels: Tensor) -> Tensor:
        scores = classifier.scores(pixels.to(classifier.device))
        return scores.topk(1, dim=1).indices[:, 0] == labels

    def flip(x: Tensor) -> Tensor:
        return x.flip(1) if classifier.bgr_inputs and x.shape[1] == 3 else x

    for pixels, labels in batches:
        n = pixels.shape[0]
        indices = list(range(total, total + n))
        labels = labels.cpu().long()
        x = pixels.float()
        scores = classifier.scores(x.to(classifier.device))
        scores_all.append(scores)
        labels_all.append(labels)
        add('clean', scores.topk(1, dim=1).indices[:, 0] == labels)
        tick(1)
        for name in plan.corruptions:
            for severity in plan.severities:
                images = flip(
                    corrupt(flip(pixels), name, severity, indices,
                            plan.seed))
                add(f'corruption/{name}/{severity}',
                    predicted(images.float(), labels))
                tick(1)
        if plan.occlusion:
            fill = classifier.fill(x.shape[1])
            for size in plan.occlusion:
                boxes = occlusion_boxes(x.shape[2], x.shape[3], size,
                                        indices, plan.seed)
                add(f'occlusion/{size}',
                    predicted(occlude_images(x, boxes, fill), labels))
                tick(1)
        for attack in ('fgsm', 'pgd'):
            still = torch.ones(n, dtype=torch.bool)
            for eps in getattr(plan, attack):
                xd = x.to(classifier.device)
                yd = labels.to(classifier.device)
                if attack == 'fgsm':
                    adv = fgsm(classifier.loss, xd, yd, eps)
                else:
                    generator = torch.Generator(device=xd.device)
                    generator.manual_seed(
                        _seed(plan.seed, int(round(eps * 1000)), total))
                    adv = pgd(classifier.loss,
                              xd,
                              yd,
                              eps,
                              steps=plan.pgd_steps,
                              generator=generator)
                hits = predicted(adv, labels)
                still &= hits
                add(f'{attack}_single/{_eps_key(eps)}', hits)
                add(f'{attack}/{_eps_key(eps)}', still)
                tick(1)
        total += n
    if total == 0:
        raise ValueError('the test dataloader yielded no image')

    def acc(key: str) -> float:
        return 100.0 * correct[key] / total

    bins = calibration_bins(*top1_confidence(torch.cat(scores_all),
                                             torch.cat(labels_all)),
                            plan.n_bins)
    results: Dict[str, Any] = dict(
        num_images=total,
        clean=dict(accuracy=acc('clean'),
                   ece=calibration_error(bins, 'l1') * 100,
                   mce=calibration_error(bins, 'max') * 100))
    if plan.corruptions:
        table = {
            name: {
                str(s): acc(f'corruption/{name}/{s}')
                for s in plan.severities
            }
            for name in plan.corruptions
        }
        results['corruptions'] = table
        results['corruption_mean'] = {
            name: float(np.mean(list(row.values())))
            for name, row in table.items()
        }
        results['severity_mean'] = {
            str(s): float(np.mean([table[n][str(s)] for n in table]))
            for s in plan.severities
        }
        results['mean_corruption_accuracy'] = float(
            np.mean(list(results['corruption_mean'].values())))
    if plan.occlusion:
        results['occlusion'] = {
            str(s): acc(f'occlusion/{s}')
            for s in plan.occlusion
        }
    for attack in ('fgsm', 'pgd'):
        budgets = getattr(plan, attack)
        if budgets:
            results[attack] = {
                _eps_key(e): acc(f'{attack}/{_eps_key(e)}')
                for e in budgets
            }
            results[f'{attack}_single'] = {
                _eps_key(e): acc(f'{attack}_single/{_eps_key(e)}')
                for e in budgets
            }
    results['settings'] = dict(
        corruptions=list(plan.corruptions),
        severities=list(plan.severities),
        corruption_library='imagecorruptions-imaug',
        occlusion=list(plan.occlusion),
        occlusion_fill='data preprocessor mean (0 after normalisation)',
        fgsm=list(plan.fgsm),
        pgd=list(plan.pgd),
        pgd_steps=plan.pgd_steps,
        pgd_alpha='eps / 4',
        pgd_random_start=True,
        eps_units='pixels (0..255)',
        seed=plan.seed,
        n_bins=plan.n_bins)
    return RobustnessReport(results, bins)


def format_markdown(results: Dict[str, Any], title: str = '') -> str:
    """The results of :func:`evaluate_robustness` as markdown tables."""
    lines = [f'# {title}', ''] if title else []
    clean = results['clean']
    lines += [
        f'{results["num_images"]} test images; accuracies and calibration '
        'errors in percent.', '', '| clean top-1 | ECE | MCE |',
        '|---|---|---|',
        f'| {clean["accuracy"]:.2f} | {clean["ece"]:.2f} | '
        f'{clean["mce"]:.2f} |', ''
    ]
    if 'corruptions' in results:
        sev = list(next(iter(results['corruptions'].values())))
        lines += [
            f'Corruptions (mean over them: '
            f'{results["mean_corruption_accuracy"]:.2f})', '',
            '| corruption | ' +
            ' | '.join(f'severity {s}' for s in sev) + ' | mean |',
            '|---|' + '---|' * (len(sev) + 1)
        ]
        for name, row in results['corruptions'].items():
            lines.append(f'| {name} | ' +
                         ' | '.join(f'{row[s]:.2f}' for s in sev) +
                         f' | {results["corruption_mean"][name]:.2f} |')
        lines.append('| **mean** | ' + ' | '.join(
            f'{results["severity_mean"][s]:.2f}' for s in sev) +
                     f' | **{results["mean_corruption_accuracy"]:.2f}** |')
        lines.append('')
    if 'occlusion' in results:
        sizes = list(results['occlusion'])
        lines += [
            'Occlusion (one square patch of the given side, random '
            'position)', '', '| patch side (px) | ' + ' | '.join(sizes) +
            ' |', '|---|' + '---|' * len(sizes), '| top-1 | ' +
            ' | '.join(f'{results["occlusion"][s]:.2f}' for s in sizes) +
            ' |', ''
        ]
    for attack in ('fgsm', 'pgd'):
        if attack not in results:
            continue
        budgets = list(results[attack])
        name = attack.upper()
        if attack == 'pgd':
            name += f' ({results["settings"]["pgd_steps"]} steps)'
        lines += [
            f'{name}, eps in pixel units (0..255)', '',
            '| eps | ' + ' | '.join(budgets) + ' |',
            '|---|' + '---|' * len(budgets),
            '| top-1 (all eps\' <= eps) | ' +
            ' | '.join(f'{results[attack][e]:.2f}' for e in budgets) + ' |',
            '| top-1 (this eps alone) | ' + ' | '.join(
                f'{results[attack + "_single"][e]:.2f}'
                for e in budgets) + ' |', ''
        ]
    return '\n'.join(lines)


def plot_robustness(results: Dict[str, Any], path: str,
                    title: str = '') -> str:
    """Plot the results of :func:`evaluate_robustness` to a PNG file.

    Panels (those measured): accuracy per corruption (mean over
    severities), accuracy per severity, accuracy per occlusion size,
    accuracy per FGSM / PGD budget; the clean accuracy is a dashed line in
    each.

    Returns:
        str: ``path``.
    """
    import os
    import os.path as osp

    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    clean = results['clean']['accuracy']
    panels = [k for k in ('corruptions', 'severity', 'occlusion', 'attacks')
              if (k == 'severity' and 'corruptions' in results) or (
                  k == 'attacks' and ('fgsm' in results or 'pgd' in results))
              or k in results]
    fig, axes = plt.subplots(1,
                             max(len(panels), 1),
                             figsize=(4.2 * max(len(panels), 1) + 1.5, 3.8),
                             squeeze=False)
    for ax, panel in zip(axes[0], panels):
        if panel == 'corruptions':
            names = list(results['corruption_mean'])
            ax.barh(range(len(names)),
                    [results['corruption_mean'][n] for n in names],
                    color='#4c72b0')
            ax.set_yticks(range(len(names)))
            ax.set_yticklabels(names, fontsize=7)
            ax.invert_yaxis()
            ax.axvline(clean, ls='--', color='grey', lw=1)
            ax.set_xlabel('top-1 (%), mean over severities')
            ax.set_xlim(0, 100)
            ax.set_title(f'corruptions (mean '
                         f'{results["mean_corruption_accuracy"]:.1f})',
                         fontsize=9)
            continue
        if panel == 'severity':
            xs = [int(s) for s in results['severity_mean']]
            ys = list(results['severity_mean'].values())
            ax.plot([0] + xs, [clean] + ys, 'o-', color='#4c72b0')
            ax.set_xlabel('severity (0 = clean)')
            ax.set_title('mean over corruptions', fontsize=9)
        elif panel == 'occlusion':
            xs = [int(s) for s in results['occlusion']]
            ax.plot([0] + xs, [clean] + list(results['occlusion'].values()),
                    'o-', color='#55a868')
            ax.set_xlabel('occluding patch side (px, 0 = clean)')
            ax.set_title('occlusion', fontsize=9)
        else:
            for attack, colour in (('fgsm', '#c44e52'), ('pgd', '#8172b2')):
                if attack in results:
                    xs = [float(e) for e in results[attack]]
                    ax.plot(xs,
                            list(results[attack].values()),
                            'o-',
                            color=colour,
                            label=attack.upper())
            ax.set_xlabel('eps (pixels, 0..255)')
            ax.set_title('adversarial (worst over eps\' <= eps)', fontsize=9)
            ax.legend(fontsize=8)
        ax.axhline(clean, ls='--', color='grey', lw=1)
        ax.set_ylim(0, 100)
        ax.set_ylabel('top-1 (%)')
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
