r"""Seeing what a batch augment did: record one mixing step and draw it.

Used by ``tools/visualize_mix.py`` (real batches of a config) and by
:class:`MixVisualizationHook` (every N training iterations, to the runner's
visualizer backends -- local files, TensorBoard, WandB -- as the official
R-Mix ``--vis_epoch`` option does).

Methods drawn:

* R-Mix and RL-Mix -- `Expeditious Saliency-guided Mix-up through Random
  Gradient Thresholding <https://arxiv.org/abs/2212.04875>`_ (Luu et al.,
  AAAI'23 Practical-DL workshop;
  https://github.com/minhlong94/Random-Mixup): the saliency maps, the grid
  masks with their quantiles, the partners and :math:`\lambda`.
* RecursiveMix -- `RecursiveMix: Mixed Learning with History
  <https://arxiv.org/abs/2203.06844>`_ (Yang et al., NeurIPS 2022;
  https://github.com/implus/RecursiveMix-pytorch): the paste boxes and the
  history batch being pasted, in classification, detection and
  segmentation.
* CutMix of this package's segmentation: the partners and the box;
  mmpretrain's Mixup, CutMix and any other batch augment: the batch before
  and after, and the pixels it changed.

Three parts:

* :mod:`.record` -- :func:`record_mix` / :class:`MixRecorder`: torch
  forward hooks on the data preprocessor (and on the augments that are
  modules) keep the batch before and after each augment and the augment's
  own record, ``last_params``. Nothing is patched, wrapped or recomputed.
* :mod:`.render` -- :class:`MixRenderer` turns a recording into rows of
  images (what to show for each record), :mod:`.layout` draws the rows
  with ``torchvision.utils``.
* :mod:`.hook` -- :class:`MixVisualizationHook`, registered in mmengine's
  ``HOOKS``, so ``custom_hooks`` of mmpretrain, mmdet and mmseg configs find
  it.
"""
from .hook import (MixVisualizationHook, inner_dataset_cfg,
                   source_channel_order)
from .record import (AugmentCall, MixRecorder, MixRecording,
                     iter_batch_augments, keeps_record, record_mix,
                     snapshot_targets)
from .layout import tint_outside
from .render import MixRenderer, label_weights

__all__ = [
    'AugmentCall', 'MixRecording', 'MixRecorder', 'record_mix',
    'iter_batch_augments', 'keeps_record', 'snapshot_targets', 'MixRenderer',
    'label_weights', 'tint_outside', 'inner_dataset_cfg',
    'source_channel_order', 'MixVisualizationHook'
]
