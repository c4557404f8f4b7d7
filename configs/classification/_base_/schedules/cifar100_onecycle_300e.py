# R-Mix CIFAR schedule (minhlong94/Random-Mixup, main.py + parse_args.py):
# SGD(momentum=0.9, nesterov=True, weight_decay=1e-4 on all parameters) and
# torch OneCycleLR(max_lr=0.29947526988779305, div_factor=100, pct_start=0.3,
# final_div_factor=1e4, cos, epochs=300, steps_per_epoch=500) stepped after
# every batch. PyTorch's default cycle_momentum=True also cycles the momentum
# 0.95 -> 0.85 -> 0.95, so the configured momentum 0.9 (and lr 0.2) are
# overwritten from the first step on. SafeOneCycleLR is mmengine's OneCycleLR
# with a weights_only-loadable state; OneCycleMomentum adds the momentum
# cycle. Both are converted to per-iteration schedules over 300 epochs
# (total_steps = 300 * iterations per epoch).
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(
        type='SGD', lr=0.2, momentum=0.9, nesterov=True, weight_decay=1e-4))

param_scheduler = [
    dict(
        type='SafeOneCycleLR',
        eta_max=0.29947526988779305,
        div_factor=100.,
        pct_start=0.3,
        final_div_factor=1e4,
        anneal_strategy='cos',
        three_phase=False,
        by_epoch=True,
        begin=0,
        end=300,
        convert_to_iter_based=True),
    dict(
        type='OneCycleMomentum',
        base_momentum=0.85,
        max_momentum=0.95,
        pct_start=0.3,
        anneal_strategy='cos',
        three_phase=False,
        by_epoch=True,
        begin=0,
        end=300,
        convert_to_iter_based=True),
]

train_cfg = dict(by_epoch=True, max_epochs=300, val_interval=1)
val_cfg = dict()
test_cfg = dict()
