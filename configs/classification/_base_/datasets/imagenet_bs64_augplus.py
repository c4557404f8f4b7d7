# ImageNet-1k as in RecursiveMix's ResNet-50 runs (implus/RecursiveMix-pytorch,
# dataset.py with --aug_plus): RandomResizedCrop(224) + RandomHorizontalFlip +
# ToTensor + fb.resnet colour jitter (0.4, 0.4, 0.4) + PCA lighting (0.1) +
# Normalize; val Resize(256) + CenterCrop(224). torchvision decodes and
# resizes with PIL (bilinear), hence the pillow backends here.
# Per-GPU batch 64 (8 GPUs, total 512), DistributedSampler(shuffle=True),
# drop_last=False.
dataset_type = 'ImageNet'
data_root = 'data/imagenet'
data_preprocessor = dict(
    num_classes=1000,
    # (0.485, 0.456, 0.406) and (0.229, 0.224, 0.225) in 0-255 units
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    to_rgb=True)

train_pipeline = [
    dict(type='LoadImageFromFile', imdecode_backend='pillow'),
    dict(
        type='RandomResizedCrop',
        scale=224,
        crop_ratio_range=(0.08, 1.0),
        aspect_ratio_range=(3. / 4., 4. / 3.),
        backend='pillow',
        interpolation='bilinear'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    # aug_plus, on BGR images in 0-255 units (see mixplugins transforms)
    dict(type='LerpColorJitter', brightness=0.4, contrast=0.4,
         saturation=0.4, channel_order='bgr'),
    dict(
        type='PCALighting',
        eigval=(0.2175, 0.0188, 0.0045),
        eigvec=((-0.5675, 0.7192, 0.4009),
                (-0.5808, -0.0045, -0.8140),
                (-0.5836, -0.6948, 0.4203)),
        alphastd=0.1,
        value_scale=255.0,
        channel_order='bgr'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', imdecode_backend='pillow'),
    dict(type='ResizeEdge', scale=256, edge='short', backend='pillow',
         interpolation='bilinear'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]

train_dataloader = dict(
    batch_size=64,
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
    batch_size=64,
    num_workers=8,
    persistent_workers=True,
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        split='val',
        pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False),
)
val_evaluator = dict(type='Accuracy', topk=(1, 5))
test_dataloader = val_dataloader
test_evaluator = val_evaluator
