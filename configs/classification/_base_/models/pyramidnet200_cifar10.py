# PyramidNet-200 (bottleneck, alpha=240) for CIFAR-10, as in RecursiveMix
# (pyramidnet_200_240; final feature map 8x8x1024, PyTorch-default fc init).
model = dict(
    type='MixImageClassifier',
    backbone=dict(type='PyramidNet', depth=200, alpha=240),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=10,
        in_channels=1024,
        loss=dict(type='CrossEntropyLoss', use_soft=True, loss_weight=1.0),
        cal_acc=False,
        init_cfg=None))
