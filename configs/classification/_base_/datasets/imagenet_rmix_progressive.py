# ImageNet-1k, phase 1 of R-Mix's progressive-resolution recipe
# (minhlong94/Random-Mixup imagenet/, Co-Mixup fast-ImageNet recipe):
# the train set is the shorter-side-160 copy made by imagenet/resize.py
# (BICUBIC), RandomResizedCrop(128, scale=(0.08, 1)) + RandomHorizontalFlip,
# no colour jitter; 4 GPUs x 256 (total 1024), DistributedSampler with
# drop_last=False, 12 workers per process. Phases 2-3 (size352 copy, crop
# 224, scale (0.087, 1), 4 x 112) are switched in by DataloaderSwitchHook
# (see r50_rmix_in1k.py). Validation: Resize(256) + CenterCrop(224) of the
# shorter-side-352 copy (the reference validates phases 2-3 and reports on
# that copy; its phase 1 validated on the 160 copy).
# Expected layout: data/imagenet/size160/{train,val}/<wnid>/*.JPEG and
# data/imagenet/size352/{train,val}/<wnid>/*.JPEG (resize.py writes them to
# <dest>/160 and <dest>/352).
dataset_type = 'ImageNet'
data_root_160 = 'data/imagenet/size160'
data_root_352 = 'data/imagenet/size352'
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
        scale=128,
        crop_ratio_range=(0.08, 1.0),
        aspect_ratio_range=(3. / 4., 4. / 3.),
        backend='pillow',
        interpolation='bilinear'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
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
    batch_size=256,
    num_workers=12,
    drop_last=False,
    persistent_workers=True,
    dataset=dict(
        type=dataset_type,
        data_root=data_root_160,
        split='train',
        pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True),
)
val_dataloader = dict(
    batch_size=112,
    num_workers=10,
    persistent_workers=True,
    dataset=dict(
        type=dataset_type,
        data_root=data_root_352,
        split='val',
        pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False),
)
val_evaluator = dict(type='Accuracy', topk=(1, 5))
test_dataloader = val_dataloader
test_evaluator = val_evaluator
