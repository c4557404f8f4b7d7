# ResNeXt-29 (4x24d) for CIFAR-100 (Co-Mixup copy used by R-Mix). Its
# classifier is initialised with kaiming_normal_ (fan_in, gain sqrt(2)) and a
# zero bias.
model = dict(
    type='MixImageClassifier',
    backbone=dict(type='CifarResNeXt', depth=29, cardinality=4, base_width=24),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=100,
        in_channels=1024,
        loss=dict(type='CrossEntropyLoss', use_soft=True, loss_weight=1.0),
        cal_acc=False,
        init_cfg=dict(
            type='Kaiming',
            layer='Linear',
            a=0,
            mode='fan_in',
            nonlinearity='relu',
            distribution='normal',
            bias=0.)))
