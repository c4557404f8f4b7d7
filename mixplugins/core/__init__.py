"""Pure-torch kernels of mixplugins (no OpenMMLab import).

Stateless, vectorised over the batch, device-agnostic and dtype-preserving;
random draws take an optional ``torch.Generator``. Each method's record of
one step (``RMixParams``, ``RecursiveMixParams``, ``CutMixParams``) is
defined here, next to the kernels that apply it; argument checks shared by
every layer are in :mod:`mixplugins.core.checks`.
"""
from .boxes import (PASTE_MODES, CutMixParams, box_area, occlude_boxes,
                    occlude_masks, paste_boxes, paste_images, paste_masks)
from .recursive import (RecursiveMixParams, consistency_loss, paste_history,
                        roi_pool_box, sample_box)
from .rmix import (RMixParams, cell_masks, grid_masks, input_saliency,
                   mix_by_masks, sample_rmix_params, saliency_from_grad,
                   upsample_masks)
from .sampling import rand_bbox, sample_beta
from .seg import paste_seg

__all__ = [
    'input_saliency', 'saliency_from_grad', 'cell_masks', 'upsample_masks',
    'grid_masks', 'mix_by_masks', 'RMixParams', 'sample_rmix_params',
    'sample_box', 'rand_bbox', 'paste_history', 'consistency_loss',
    'roi_pool_box', 'RecursiveMixParams', 'sample_beta', 'PASTE_MODES',
    'paste_images', 'paste_boxes', 'occlude_boxes', 'paste_masks',
    'occlude_masks', 'box_area', 'CutMixParams', 'paste_seg'
]
