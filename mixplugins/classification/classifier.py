"""``MixImageClassifier``: mmpretrain's ImageClassifier plus the model-side
services of R-Mix and RecursiveMix.

Enabling a method in an existing mmpretrain config::

    custom_imports = dict(imports=['mixplugins'], allow_failed_imports=False)
    model = dict(
        type='MixImageClassifier',
        train_cfg=dict(augments=[dict(type='RecursiveMix', alpha=0.5)]))

mmengine 0.10.7's ``MMDistributedDataParallel.train_step`` never calls the
module's ``train_step``, so everything per-step happens in the two places
both paths run: the data preprocessor (where mmpretrain calls the batch
augments, which reach this model through :meth:`bind`) and :meth:`loss`.
"""
import contextlib
from typing import Dict, Iterator, List, Optional

import torch
from mmpretrain.models import ImageClassifier
from mmpretrain.models.utils import RandomBatchAugment
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..core.recursive import consistency_loss, roi_pool_box
from .base import ModelBoundAugment
from ..engine.history import RecursiveMixHistory
from .recursivemix import RecursiveMix, RecursiveMixStep
from .rlmix import RLMix
from .rmix import RMix

__all__ = ['MixImageClassifier']

#: Input sizes tried (in order) to check that the backbone ends in a 4-D map.
_PROBE_SIZES = (64, 224)


@MODELS.register_module()
class MixImageClassifier(ImageClassifier):
    """An :class:`mmpretrain.models.ImageClassifier` that serves mixplugins'
    batch augments.

    With no mixplugins augment in ``train_cfg`` it behaves exactly as
    ``ImageClassifier`` (a drop-in). With:

    * :class:`~mixplugins.classification.RMix`: runs R-Mix's clean saliency
      pass on this (unwrapped) module -- input gradient only, BN in the mode
      the augment asks for -- and adds ``loss_clean`` when the augment has a
      ``clean_loss_weight``.
    * :class:`~mixplugins.classification.RecursiveMix`: owns the history
      (``rm_history``) and the consistency head ``fc_roi``, a linear layer
      sized from the backbone's last feature map and the head's
      ``num_classes``. ``fc_roi`` sees the RoIAlign-pooled last feature map
      over the paste box and is trained against the history's logits; the
      loss is logged as ``loss_consistency``. ``fc_roi`` takes part in every
      training forward (weight 0 when nothing was pasted), so DDP's default
      ``find_unused_parameters=False`` works.
    * :class:`~mixplugins.classification.RLMix`: as RMix, and owns the PPO
      agent (``rl_agent``, no parameters of its own; its state is saved in
      checkpoints).

    Args:
        backbone (dict): Backbone config. With RecursiveMix its last output
            must be a 4-D feature map (checked at build time).
        neck (dict, optional): Neck config. Defaults to None.
        head (dict, optional): Head config (a ``ClsHead``). Defaults to None.
        pretrained (str, optional): Checkpoint to initialise from. Defaults to
            None.
        train_cfg (dict, optional): ``dict(augments=[...], probs=...)``, as in
            mmpretrain. Defaults to None.
        data_preprocessor (dict, optional): As in mmpretrain. With a
            mixplugins augment its ``num_classes`` defaults to the head's,
            and another value is refused at build time. Defaults to None.
        init_cfg (dict, optional): Initialisation config. Defaults to None.
    """

    def __init__(self,
                 backbone: dict,
                 neck: Optional[dict] = None,
                 head: Optional[dict] = None,
                 pretrained: Optional[str] = None,
                 train_cfg: Optional[dict] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None):
        super().__init__(
            backbone=backbone,
            neck=neck,
            head=head,
            pretrained=pretrained,
            train_cfg=train_cfg,
            data_preprocessor=data_preprocessor,
            init_cfg=init_cfg)
        self._step_losses: Dict[str, Tensor] = {}
        self._recursive_step: Optional[RecursiveMixStep] = None
        augments = list(self._mix_augments())
        for aug in augments:
            aug.bind(self)
        recursive = [a for a in augments if isinstance(a, RecursiveMix)]
        if any(isinstance(a, (RMix, RecursiveMix)) for a in augments):
            self._check_head()
        if len(recursive) > 1:
            raise ValueError('`train_cfg.augments` may hold one RecursiveMix, '
                             f'got {len(recursive)}')
        rlmix = [a for a in augments if isinstance(a, RLMix)]
        if len(rlmix) > 1:
            raise ValueError('`train_cfg.augments` may hold one RLMix, got '
                             f'{len(rlmix)}')
        self.rl_agent: Optional[nn.Module] = (
            rlmix[0].build_agent() if rlmix else None)
        self.fc_roi: Optional[nn.Linear] = None
        self.rm_history: Optional[RecursiveMixHistory] = None
        if recursive:
            channels = self._last_feature_channels()
            self.fc_roi = nn.Linear(channels, self.head.num_classes)
            self.rm_history = RecursiveMixHistory(
                carry_history=recursive[0].carry_history)

    # ------------------------------------------------------------ build
    def _mix_augments(self) -> Iterator[ModelBoundAugment]:
        batch_augments = getattr(self.data_preprocessor, 'batch_augments',
                                 None)
        if isinstance(batch_augments, RandomBatchAugment):
            candidates = batch_augments.augments
        else:
            candidates = [batch_augments]
        for aug in candidates:
            if isinstance(aug, ModelBoundAugment):
                yield aug

    def _check_head(self) -> None:
        if self.head is None or not hasattr(self.head, 'num_classes'):
            raise ValueError('mixplugins augments need a classification '
                             '`head` with `num_classes`')
        # The augments mix the one-hot scores that the data preprocessor
        # makes from `gt_label` with its own `num_classes`: unset, mmpretrain
        # would fail at the first step on an assert, so the head's value
        # (the only one that works) is used; another value than the head's
        # would fail in the loss on a shape mismatch.
        pre_classes = getattr(self.data_preprocessor, 'num_classes', -1)
        if pre_classes is None:
            self.data_preprocessor.num_classes = self.head.num_classes
        elif pre_classes != -1 and pre_classes != self.head.num_classes:
            raise ValueError(
                f'`data_preprocessor.num_classes` ({pre_classes}) must equal '
                f'`head.num_classes` ({self.head.num_classes})')
        from mmpretrain.models.heads import MultiLabelClsHead
        if isinstance(self.head, MultiLabelClsHead) and any(
                isinstance(a, RMix) for a in self._mix_augments()):
            raise ValueError(
                'RMix computes its saliency with a single-label '
                'cross-entropy; a multi-label `head` '
                f'({type(self.head).__name__}) is not supported')

    def _last_feature_channels(self) -> int:
        """Channels of the backbone's last output, which must be 4-D."""
        in_channels = getattr(self.backbone, 'in_channels', 3)
        was_training = self.backbone.training
        self.backbone.eval()
        errors: List[str] = []
        try:
            for size in _PROBE_SIZES:
                probe = torch.zeros(1, in_channels, size, size)
                try:
                    with torch.no_grad():
                        outs = self.backbone(probe)
                except Exception as e:  # noqa: BLE001  (reported below)
                    errors.append(f'{size}x{size}: {e}')
                    continue
                last = outs[-1] if isinstance(outs, (tuple, list)) else outs
                if isinstance(last, Tensor) and last.dim() == 4:
                    return last.shape[1]
                shape = getattr(last, 'shape', type(last).__name__)
                raise ValueError(
                    'RecursiveMix needs a `backbone` whose last output is a '
                    '4-D feature map (B, C, h, w) to RoI-align over the paste '
                    f'box; {type(self.backbone).__name__} gives {shape} '
                    "(for ViT-style backbones try out_type='featmap')")
        finally:
            self.backbone.train(was_training)
        raise ValueError('RecursiveMix could not run the `backbone` to find '
                         'its last feature map: ' + '; '.join(errors))

    # ------------------------------------------------- per-step services
    @contextlib.contextmanager
    def bn_mode(self, mode: str):
        """Run BatchNorm layers in ``'train'`` (as they are) or ``'eval'``
        mode inside the block; their previous modes are restored after."""
        switched = []
        if mode == 'eval':
            switched = [
                m for m in self.modules()
                if isinstance(m, _BatchNorm) and m.training
            ]
            for m in switched:
                m.eval()
        try:
            yield
        finally:
            for m in switched:
                m.train()

    def add_step_loss(self, name: str, value: Tensor) -> None:
        """Add a loss term computed by an augment to this step's losses."""
        self._step_losses[name] = value

    def set_recursive_step(self, step: RecursiveMixStep) -> None:
        """Record this step's RecursiveMix paste for :meth:`loss`."""
        self._recursive_step = step

    # ---------------------------------------------------------- losses
    def loss(self, inputs: Tensor,
             data_samples: List[DataSample]) -> Dict[str, Tensor]:
        """Losses of a (mixed) batch, plus the mixplugins terms.

        Args:
            inputs (Tensor): The (mixed) inputs (B, C, H, W).
            data_samples (List[DataSample]): Samples with ``gt_score``.

        Returns:
            dict[str, Tensor]: The head's losses, plus ``loss_consistency``
            (RecursiveMix) and ``loss_clean`` (RMix with a clean loss).
        """
        step_losses, self._step_losses = self._step_losses, {}
        step, self._recursive_step = self._recursive_step, None
        if self.fc_roi is None:
            losses = super().loss(inputs, data_samples)
        else:
            losses = self._recursive_loss(inputs, data_samples, step)
        losses.update(step_losses)
        return losses

    def _recursive_loss(self, inputs: Tensor, data_samples: List[DataSample],
                        step: Optional[RecursiveMixStep]
                        ) -> Dict[str, Tensor]:
        maps = self.backbone(inputs)
        feats = self.neck(maps) if self.with_neck else maps
        logits = self.head(feats)
        losses = self.head._get_loss(logits, data_samples)
        height, width = inputs.shape[-2:]
        box = step.box if step is not None else (0, 0, width, height)
        last = maps[-1] if isinstance(maps, (tuple, list)) else maps
        roi_logits = self.fc_roi(roi_pool_box(last, box, (height, width)))
        if step is not None:
            losses['loss_consistency'] = consistency_loss(
                roi_logits, step.hist_logits, step.lam, step.omega)
        else:  # keep fc_roi in the graph (DDP), with weight 0
            losses['loss_consistency'] = roi_logits.sum() * 0.0
        if self.training:
            self.rm_history.sync_epoch()
            self.rm_history.store(
                inputs, targets=_stack_targets(data_samples), logits=logits)
        return losses


def _stack_targets(data_samples: List[DataSample]) -> Tensor:
    if 'gt_score' not in data_samples[0]:
        raise ValueError('RecursiveMix needs one-hot `gt_score` targets; '
                         'they are set by the data preprocessor when '
                         '`train_cfg.augments` is given')
    return torch.stack([s.gt_score for s in data_samples]).float()
