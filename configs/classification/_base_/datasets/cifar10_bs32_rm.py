# CIFAR-10 as in RecursiveMix (implus/RecursiveMix-pytorch, dataset.py):
# RandomCrop(32, padding=4) + RandomHorizontalFlip + Normalize with
# mean (0.4914, 0.4822, 0.4465) and std (0.2023, 0.1994, 0.2010) (in 0-1
# units; x255 here because the preprocessor works in 0-255 units).
# Per-GPU batch 32 (2 GPUs, total 64), DistributedSampler(shuffle=True)
# with drop_last=False.
dataset_type = 'CIFAR10'
data_root = 'data/cifar10'
data_preprocessor = dict(
    num_classes=10,
    mean=[0.4914 * 255, 0.4822 * 255, 0.4465 * 255],
    std=[0.2023 * 255, 0.1994 * 255, 0.2010 * 255],
    to_rgb=False)

train_pipeline = [
    dict(type='RandomCrop', crop_size=32, padding=4, pad_val=0,
         padding_mode='constant'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [dict(type='PackInputs')]

train_dataloader = dict(
    batch_size=32,
    num_workers=8,
    drop_last=False,
    persistent_workers=True,
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        split='train',
        pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True),
)
val_dataloader = dict(
    batch_size=32,
    num_workers=8,
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
