# WRN-16-8 for CIFAR-100 (Co-Mixup copy used by R-Mix: no dropout, conv
# bias, PyTorch-default Linear init).
model = dict(
    type='MixImageClassifier',
    backbone=dict(type='WideResNet', depth=16, widen_factor=8),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=100,
        in_channels=512,
        loss=dict(type='CrossEntropyLoss', use_soft=True, loss_weight=1.0),
        cal_acc=False,
        init_cfg=None))
