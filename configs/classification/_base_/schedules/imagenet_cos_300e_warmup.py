# RecursiveMix ImageNet ResNet-50 schedule (implus/RecursiveMix-pytorch,
# main.py and utils.adjust_learning_rate; --lr 0.2 --scheduler cos
# --warmup 5 --epoch 300): SGD(momentum=0.9, no Nesterov, weight_decay=1e-4
# on all parameters), AMP with a dynamic loss scale. The LR is set once per
# epoch. In 0-based epochs k the reference uses 0.2 * (k + 1) / 6 for
# k = 0..4 and 0.2 * 0.5 * (1 + cos(pi * k / 300)) for k >= 5 (the cosine is
# not shifted past the warmup: 0.199863 at k = 5, 5.5e-6 at k = 299).
# Here LinearLR (factors (k + 1) / 6 over [0, 6), then 1) is chained with
# CosineAnnealingLR(T_max=300) over all 300 epochs, which reproduces every
# epoch k >= 5 exactly. Residual: during the 5 warmup epochs the chained
# product also carries the cosine factor 0.5 * (1 + cos(pi * k / 300)), so
# the LR is lower by a factor in [0.99956, 1] (at most 0.044 %, epoch 4);
# mmengine has no scheduler that adds a warmup to an unshifted cosine.
optim_wrapper = dict(
    type='AmpOptimWrapper',
    loss_scale='dynamic',
    optimizer=dict(
        type='SGD', lr=0.2, momentum=0.9, nesterov=False, weight_decay=1e-4))

param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=1. / 6,
        end_factor=1.0,
        by_epoch=True,
        begin=0,
        end=6),
    dict(
        type='CosineAnnealingLR',
        T_max=300,
        eta_min=0.,
        by_epoch=True,
        begin=0,
        end=300),
]

train_cfg = dict(by_epoch=True, max_epochs=300, val_interval=1)
val_cfg = dict()
test_cfg = dict()
