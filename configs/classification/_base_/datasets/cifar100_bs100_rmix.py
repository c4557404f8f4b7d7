# CIFAR-100 as in R-Mix (minhlong94/Random-Mixup, dataloaders.py):
# RandomHorizontalFlip + RandomCrop(32, padding=2) + Normalize with
# mean (129.3, 124.1, 112.4) / 255 and std (68.2, 65.4, 70.4) / 255,
# batch 100, shuffle, drop_last=True (500 iterations per epoch).
# mmpretrain's CIFAR100 yields RGB uint8 images, so to_rgb=False; the
# preprocessor normalizes in 0-255 units. Flip and crop commute in
# distribution, so their order does not matter.
dataset_type = 'CIFAR100'
data_root = 'data/cifar100'
data_preprocessor = dict(
    num_classes=100,
    mean=[129.3, 124.1, 112.4],
    std=[68.2, 65.4, 70.4],
    to_rgb=False)

train_pipeline = [
    dict(type='RandomCrop', crop_size=32, padding=2, pad_val=0,
         padding_mode='constant'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [dict(type='PackInputs')]

train_dataloader = dict(
    batch_size=100,
    num_workers=4,
    drop_last=True,
    persistent_workers=True,
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        split='train',
        pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True),
)
val_dataloader = dict(
    batch_size=100,
    num_workers=4,
    persistent_workers=True,
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        split='test',
        pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False),
)
val_evaluator = dict(type='Accuracy', topk=(1, 5))
test_dataloader = val_dataloader
test_evaluator = val_evaluator
