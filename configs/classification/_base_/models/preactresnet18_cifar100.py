# PreActResNet-18 for CIFAR-100 (Co-Mixup copy used by R-Mix: stride-1 stem,
# no final BN/ReLU, 4x4 average pooling, PyTorch-default Linear init).
model = dict(
    type='MixImageClassifier',
    backbone=dict(type='PreActResNet', depth=18),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=100,
        in_channels=512,
        loss=dict(type='CrossEntropyLoss', use_soft=True, loss_weight=1.0),
        cal_acc=False,
        init_cfg=None))
