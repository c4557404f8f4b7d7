# ResNet-50 (torchvision layout, stride in the 3x3 conv) for ImageNet, as in
# the RecursiveMix and R-Mix references: no zero-init of the last BN of each
# block (torchvision's default, and R-Mix's zero-init silently does nothing),
# PyTorch-default fc init (RecursiveMix). Soft-target CE for mixed labels.
model = dict(
    type='MixImageClassifier',
    backbone=dict(
        type='ResNet', depth=50, num_stages=4, out_indices=(3, ),
        style='pytorch', zero_init_residual=False),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=2048,
        loss=dict(type='CrossEntropyLoss', use_soft=True, loss_weight=1.0),
        cal_acc=False,
        init_cfg=None))
