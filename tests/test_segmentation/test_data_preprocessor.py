"""Tests of ``MixSegDataPreProcessor``: mmseg's preprocessing plus working
batch augments."""
import pytest
import torch
from mmseg.models.data_preprocessor import SegDataPreProcessor
from mmseg.registry import MODELS
from torch import nn

from mixplugins.segmentation import MixSegDataPreProcessor, SegBatchAugments

from ._helpers import IdBatch, seg_of

ARGS = dict(mean=[10., 20., 30.],
            std=[2., 4., 8.],
            size=(32, 40),
            pad_val=0,
            seg_pad_val=255,
            bgr_to_rgb=True)


class Recorder(nn.Module):
    """Adds 1 to the images and records what it was given."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, inputs, data_samples):
        self.calls.append((inputs.clone(), len(data_samples)))
        return inputs + 1, data_samples


def test_same_as_mmseg_without_augments():
    batch = IdBatch([(32, 40), (20, 33)], 1)
    for training in (True, False):
        if not training:
            batch = IdBatch([(20, 33), (20, 33)], 1)
        ours = MixSegDataPreProcessor(**ARGS)(batch.data(), training)
        ref = SegDataPreProcessor(**ARGS)(batch.data(), training)
        assert torch.equal(ours['inputs'], ref['inputs'])
        assert torch.equal(seg_of(ours['data_samples']),
                           seg_of(ref['data_samples']))


def test_augments_run_in_training_only_after_normalise_and_pad():
    rec = Recorder()
    pre = MixSegDataPreProcessor(**ARGS, batch_augments=[rec])
    assert isinstance(pre.batch_augments, SegBatchAugments)
    batch = IdBatch([(32, 40), (20, 33)], 1)
    ref = SegDataPreProcessor(**ARGS)(batch.data(), True)
    out = pre(batch.data(), training=True)
    assert len(rec.calls) == 1
    assert torch.equal(rec.calls[0][0], ref['inputs'])  # normalised, padded
    assert torch.equal(out['inputs'], ref['inputs'] + 1)
    test_batch = IdBatch([(20, 33), (20, 33)], 1)
    pre(test_batch.data(), training=False)
    assert len(rec.calls) == 1


def test_augments_chain_in_order_and_are_built_from_mmseg_models():
    pre = MODELS.build(
        dict(type='MixSegDataPreProcessor',
             **ARGS,
             batch_augments=[
                 dict(type='RecursiveMix'),
                 dict(type='CutMix', alpha=1.0)
             ]))
    names = [type(m).__name__ for m in pre.batch_augments]
    assert names == ['RecursiveMix', 'SegCutMix']
    rec1, rec2 = Recorder(), Recorder()
    pre = MixSegDataPreProcessor(**ARGS, batch_augments=[rec1, rec2])
    pre(IdBatch([(32, 40)], 1).data(), training=True)
    assert torch.equal(rec2.calls[0][0], rec1.calls[0][0] + 1)
    # the augments are submodules: their state goes into checkpoints
    assert any(
        k.startswith('batch_augments.') for k in MODELS.build(
            dict(type='MixSegDataPreProcessor',
                 **ARGS,
                 batch_augments=[dict(type='RecursiveMix')])).state_dict())


def test_bad_batch_augments():
    with pytest.raises(TypeError, match='batch_augments'):
        MixSegDataPreProcessor(**ARGS, batch_augments=dict(type='CutMix'))
    with pytest.raises(TypeError, match='batch_augments'):
        MixSegDataPreProcessor(**ARGS, batch_augments=[3])
    with pytest.raises(KeyError):
        MixSegDataPreProcessor(**ARGS, batch_augments=[dict(type='NoSuch')])
