"""Pure-torch kernels of mixplugins (no OpenMMLab import).

Stateless, vectorised over the batch, device-agnostic and dtype-preserving;
random draws take an optional ``torch.Generator``.
"""
from .recursive import (consistency_loss, paste_history, roi_pool_box,
                        sample_box)
from .rmix import (RMixParams, grid_masks, input_saliency, mix_by_masks,
                   sample_rmix_params, saliency_from_grad)
from .sampling import sample_beta

__all__ = [
    'input_saliency', 'saliency_from_grad', 'grid_masks', 'mix_by_masks',
    'RMixParams', 'sample_rmix_params', 'sample_box', 'paste_history',
    'consistency_loss', 'roi_pool_box', 'sample_beta'
]
from .boxes import (PASTE_MODES, box_area, occlude_boxes, occlude_masks,
                    paste_boxes, paste_images, paste_masks, sample_cutmix_box)
from .seg import paste_seg

__all__ += [
    'PASTE_MODES', 'paste_images', 'paste_boxes', 'occlude_boxes',
    'paste_masks', 'occlude_masks', 'sample_cutmix_box', 'box_area',
    'paste_seg'
]
