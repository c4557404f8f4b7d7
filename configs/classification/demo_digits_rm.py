# RecursiveMix (Yang et al., arXiv 2203.06844): max paste area alpha = 0.5,
# consistency weight omega = 0.5 (the official defaults).
_base_ = ['./_base_/demo_digits.py']

model = dict(
    head=dict(loss=dict(type='CrossEntropyLoss',
                        loss_weight=1.0,
                        use_soft=True),
              cal_acc=False),
    train_cfg=dict(augments=[dict(type='RecursiveMix', alpha=0.5, omega=0.5)]))
