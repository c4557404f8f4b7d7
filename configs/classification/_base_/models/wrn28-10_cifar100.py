# WRN-28-10 for CIFAR-100 (Co-Mixup copy used by R-Mix: no dropout, conv
# bias, PyTorch-default Linear init).
model = dict(
    type='MixImageClassifier',
    backbone=dict(type='WideResNet', depth=28, widen_factor=10),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=100,
        in_channels=640,
        loss=dict(type='CrossEntropyLoss', use_soft=True, loss_weight=1.0),
        cal_acc=False,
        init_cfg=None))
