# RecursiveMix CIFAR-10 schedule (implus/RecursiveMix-pytorch, main.py and
# utils.adjust_learning_rate; --lr 0.25 --scheduler step --schedule 150 225
# --epoch 300, warmup 5 per the logs): SGD(momentum=0.9, nesterov=True,
# weight_decay=1e-4 on all parameters), AMP with a dynamic loss scale.
# The LR is set once per epoch. With 1-based epochs e the reference uses
# lr = 0.25 * e / 6 for e <= 5, then 0.25 * 0.1 ** #{milestones < e}.
# In 0-based epochs k: 0.25 * (k + 1) / 6 for k = 0..4 and 0.25 from k = 5,
# 0.025 from k = 150, 0.0025 from k = 225. mmengine's LinearLR over
# [0, 6) gives factors start + (1 - start) * k / 5 = (k + 1) / 6 for
# k = 0..5, i.e. exactly these values (the residual is float rounding of
# the chained multiplications, < 1e-15 relative), and MultiStepLR at
# [150, 225] the decays.
optim_wrapper = dict(
    type='AmpOptimWrapper',
    loss_scale='dynamic',
    optimizer=dict(
        type='SGD', lr=0.25, momentum=0.9, nesterov=True, weight_decay=1e-4))

param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=1. / 6,
        end_factor=1.0,
        by_epoch=True,
        begin=0,
        end=6),
    dict(
        type='MultiStepLR',
        milestones=[150, 225],
        gamma=0.1,
        by_epoch=True,
        begin=0,
        end=300),
]

train_cfg = dict(by_epoch=True, max_epochs=300, val_interval=1)
val_cfg = dict()
test_cfg = dict()
