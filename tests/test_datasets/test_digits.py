"""Tests of the bundled digits data (``mixplugins.datasets.digits``)."""
import os
import os.path as osp

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from mixplugins.datasets import DIGITS_CLASSES, load_digits_split, \
    prepare_digits


def _files(root, split):
    """{class: sorted sklearn indices} of the PNGs on disk."""
    out = {}
    for cls in sorted(os.listdir(osp.join(root, split))):
        names = os.listdir(osp.join(root, split, cls))
        out[cls] = sorted(int(n[:-4]) for n in names if n.endswith('.png'))
    return out


@pytest.fixture(scope='module')
def root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('digits'))
    info = prepare_digits(root)
    assert info['created']
    return root


def test_split_sizes_and_class_balance(root):
    info = prepare_digits(root)
    assert info['num_train'] == 1497 and info['num_val'] == 300
    assert info['classes'] == [str(i) for i in range(10)]
    sklearn_counts = np.bincount(load_digits().target, minlength=10)
    train, val = _files(root, 'train'), _files(root, 'val')
    assert sorted(train) == sorted(val) == list(DIGITS_CLASSES)
    for c in range(10):
        assert len(val[str(c)]) == 30
        assert len(train[str(c)]) == sklearn_counts[c] - 30
        assert info['val_counts'][str(c)] == 30
        assert info['train_counts'][str(c)] == sklearn_counts[c] - 30


def test_split_is_a_partition_with_correct_labels(root):
    target = load_digits().target
    seen = []
    for split in ('train', 'val'):
        for cls, indices in _files(root, split).items():
            assert all(target[i] == int(cls) for i in indices)
            seen += indices
    assert sorted(seen) == list(range(len(target)))


def test_files_match_in_memory_split(root):
    for split in ('train', 'val'):
        images, labels, indices = load_digits_split(split)
        on_disk = sorted(i for v in _files(root, split).values() for i in v)
        assert sorted(indices.tolist()) == on_disk
        k = len(indices) // 2
        path = osp.join(root, split, str(labels[k]), f'{indices[k]:04d}.png')
        np.testing.assert_array_equal(np.asarray(Image.open(path)), images[k])


def test_nearest_images_are_4x_blocks_of_the_originals(tmp_path):
    prepare_digits(str(tmp_path), interpolation='nearest')
    digits = load_digits()
    i = int(load_digits_split('train')[2][0])
    img = np.asarray(
        Image.open(
            osp.join(tmp_path, 'train', str(digits.target[i]),
                     f'{i:04d}.png')))
    assert img.shape == (32, 32, 3) and img.dtype == np.uint8
    expected = np.kron(np.round(digits.images[i] * 255 / 16), np.ones((4, 4)))
    for ch in range(3):
        np.testing.assert_array_equal(img[..., ch], expected)


def test_bilinear_images_are_rgb_grey_32px(root):
    images, _, _ = load_digits_split('val')
    assert images.shape == (300, 32, 32, 3) and images.dtype == np.uint8
    assert (images[..., 0] == images[..., 1]).all()
    assert (images[..., 0] == images[..., 2]).all()
    assert images.max() > 200 and images.min() == 0


def test_idempotent(tmp_path):
    root = str(tmp_path)
    assert prepare_digits(root)['created']
    probe = osp.join(root, 'val', '3',
                     sorted(os.listdir(osp.join(root, 'val', '3')))[0])
    os.utime(probe, (1, 1))
    again = prepare_digits(root)
    assert not again['created']
    assert os.stat(probe).st_mtime == 1  # nothing rewritten
    # an incomplete folder is rewritten
    os.remove(probe)
    assert prepare_digits(root)['created']
    assert osp.isfile(probe)
    assert not prepare_digits(root)['created']
    # other arguments: rewritten, old files gone
    assert prepare_digits(root, size=16)['created']
    img = Image.open(probe)
    assert img.size == (16, 16)
    assert sum(len(v) for v in _files(root, 'val').values()) == 300


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match='size'):
        prepare_digits(str(tmp_path), size=4)
    with pytest.raises(ValueError, match='interpolation'):
        prepare_digits(str(tmp_path), interpolation='bicubic')
    with pytest.raises(ValueError, match='val_per_class'):
        prepare_digits(str(tmp_path), val_per_class=0)
    with pytest.raises(TypeError, match='data_root'):
        prepare_digits(None)
    with pytest.raises(ValueError, match='split'):
        load_digits_split('test')
    assert not os.listdir(tmp_path)


def test_mmpretrain_custom_dataset_reads_the_folders(root):
    from mmpretrain.datasets import CustomDataset

    for split, size in (('train', 1497), ('val', 300)):
        ds = CustomDataset(data_root=root, data_prefix=split, pipeline=[])
        assert len(ds) == size
        assert tuple(ds.metainfo['classes']) == DIGITS_CLASSES
        labels = np.array(
            [ds.get_data_info(i)['gt_label'] for i in range(len(ds))])
        assert np.bincount(labels, minlength=10).min() >= 30
        for i in (0, size - 1):
            info = ds.get_data_info(i)
            folder = osp.basename(osp.dirname(info['img_path']))
            assert ds.metainfo['classes'][info['gt_label']] == folder
