# R-Mix (Luu et al., arXiv 2212.04875) with its CIFAR settings: alpha = 1,
# grids {2, 4} on 32 px images, random-permutation partners.
_base_ = ['./_base_/demo_digits.py']

model = dict(
    head=dict(loss=dict(type='CrossEntropyLoss',
                        loss_weight=1.0,
                        use_soft=True),
              cal_acc=False),
    train_cfg=dict(augments=[dict(type='RMix', alpha=1.0, grids=(2, 4))]))
