# CutMix+, PreActResNet-18, CIFAR-100 (R-Mix README table, row 'PreActResNet18
# CutMix+').
# Reproduces: 81.62 (CIFAR-100 top-1, R-Mix README "Last checkpoints").
# Recipe: minhlong94/Random-Mixup main.py defaults (300 epochs, OneCycleLR
# per iteration with cycled momentum, soft-target CE), see
# configs/classification/README.md.
# GPUs x per-GPU batch: 1 x 100 (total 100).
# Run: python tools/train.py configs/classification/preactresnet18_cutmix_cifar100.py
_base_ = [
    '_base_/models/preactresnet18_cifar100.py',
    '_base_/datasets/cifar100_bs100_rmix.py',
    '_base_/schedules/cifar100_onecycle_300e.py',
    '_base_/default_runtime.py',
]

# CutMix+ of the R-Mix README: CutMix applied with probability 0.5,
# lam ~ Beta(1, 1), box area corrected lam (main.py --method cutmix).
model = dict(
    train_cfg=dict(augments=[dict(type='CutMix', alpha=1.0)], probs=[0.5]))

auto_scale_lr = dict(enable=False, base_batch_size=100)
