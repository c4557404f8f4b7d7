# CPU demo: scikit-learn's digits (32 px RGB, 10 classes; written to
# data/digits by `tools/demo.py` or `mixplugins.datasets.prepare_digits`),
# a tiny CNN, a few epochs. Each method's config sets `model.train_cfg`.
default_scope = 'mmpretrain'
custom_imports = dict(imports=['mixplugins'], allow_failed_imports=False)
# exact --resume (RNG, per-rank history, position in the epoch)
custom_hooks = [dict(type='ExactResumeHook')]

num_classes = 10
data_root = 'data/digits'

model = dict(type='MixImageClassifier',
             backbone=dict(type='DemoCNN', widths=(16, 32, 64)),
             neck=dict(type='GlobalAveragePooling'),
             head=dict(type='LinearClsHead',
                       num_classes=num_classes,
                       in_channels=64,
                       loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
                       topk=(1, )))

# pixel statistics of the 1497 training images (bilinear 32 px, 0..255)
data_preprocessor = dict(num_classes=num_classes,
                         mean=[77.95] * 3,
                         std=[82.54] * 3,
                         to_rgb=False)

# digits are centred and not mirror-symmetric: small shifts, no flip
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomCrop', crop_size=32, padding=2),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='PackInputs'),
]

train_dataloader = dict(
    batch_size=32,
    num_workers=0,
    dataset=dict(type='CustomDataset',
                 data_root=data_root,
                 data_prefix='train',
                 pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True),
)
val_dataloader = dict(
    batch_size=100,
    num_workers=0,
    dataset=dict(type='CustomDataset',
                 data_root=data_root,
                 data_prefix='val',
                 pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False),
)
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_dataloader = val_dataloader
test_evaluator = val_evaluator

optim_wrapper = dict(optimizer=dict(
    type='SGD', lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True))
max_epochs = 5
param_scheduler = [
    dict(type='CosineAnnealingLR',
         by_epoch=True,
         begin=0,
         end=max_epochs,
         convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=1)
val_cfg = dict()
test_cfg = dict()

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=10),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # no periodic checkpoint, only the last epoch's
    checkpoint=dict(type='CheckpointHook', interval=-1, save_last=True),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='VisualizationHook', enable=False),
)
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='gloo'),
)
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='UniversalVisualizer', vis_backends=vis_backends)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0, deterministic=False)
