"""Batches whose pixels encode their own identity, for the seg tests.

Image ``i`` of a batch has, at every pixel and channel, a unique id
(``first_id + running index``) and its label map holds the same id, so after
any mixing a pixel's label must still equal its value, and the id tells
which image and position it came from.
"""
import copy

import torch
import torch.nn.functional as F
from mmengine.structures import PixelData
from mmseg.structures import SegDataSample


class IdBatch:
    """Raw images and samples of the given ``(h, w)`` sizes."""

    def __init__(self, sizes, first_id, edge_map=False, seg_value=None):
        self.images, self.samples = [], []
        next_id = first_id
        for h, w in sizes:
            ids = torch.arange(next_id, next_id + h * w).view(1, h, w)
            next_id += h * w
            self.images.append(ids.expand(3, h, w).clone())
            seg = ids.clone() if seg_value is None else torch.full_like(
                ids, seg_value)
            sample = SegDataSample(metainfo=dict(ori_shape=(h, w)))
            sample.gt_sem_seg = PixelData(data=seg)
            if edge_map:
                sample.gt_edge_map = PixelData(data=seg.clone() + 7)
            self.samples.append(sample)

    def data(self):
        return dict(inputs=[x.clone() for x in self.images],
                    data_samples=copy.deepcopy(self.samples))

    def padded(self, size, pad_val=0):
        return torch.stack([
            F.pad(x.float(),
                  (0, size[1] - x.shape[2], 0, size[0] - x.shape[1]),
                  value=pad_val) for x in self.images
        ])


def seg_of(samples, field='gt_sem_seg'):
    return torch.stack([getattr(s, field).data for s in samples])
