# R-Mix, PreActResNet-18, CIFAR-100 (R-Mix README table, row 'PreActResNet18
# R-Mix').
# Reproduces: 81.45 (CIFAR-100 top-1, R-Mix README "Last checkpoints").
# Recipe: minhlong94/Random-Mixup main.py defaults (300 epochs, OneCycleLR
# per iteration with cycled momentum, soft-target CE), see
# configs/classification/README.md.
# GPUs x per-GPU batch: 1 x 100 (total 100).
# Run: python tools/train.py configs/classification/preactresnet18_rmix_cifar100.py
_base_ = [
    '_base_/models/preactresnet18_cifar100.py',
    '_base_/datasets/cifar100_bs100_rmix.py',
    '_base_/schedules/cifar100_onecycle_300e.py',
    '_base_/default_runtime.py',
]

# R-Mix on CIFAR: every batch mixed (no probability), lam ~ Beta(1, 1) per
# batch, saliency pooled to a 2x2 or 4x4 grid (16/8 px cells), quantile
# level per image from linspace(0, 0.99, 10), randperm partner, the
# clean-pass gradient is only used for the saliency (clean loss weight 0).
model = dict(
    train_cfg=dict(augments=[
        dict(
            type='RMix',
            alpha=1.0,
            grids=(2, 4),
            partner='randperm',
            clean_loss_weight=0.0)
    ]))

auto_scale_lr = dict(enable=False, base_batch_size=100)
