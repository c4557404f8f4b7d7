# CutMix (mmpretrain's own augment) on every batch (p = 1), alpha = 1.
_base_ = ['./_base_/demo_digits.py']

model = dict(head=dict(loss=dict(type='CrossEntropyLoss',
                                 loss_weight=1.0,
                                 use_soft=True),
                       cal_acc=False),
             train_cfg=dict(augments=[dict(type='CutMix', alpha=1.0)]))
