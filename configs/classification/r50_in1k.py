# Baseline (no mixing), ResNet-50, ImageNet-1k (RecursiveMix README, row
# 'ResNet-50').
# Reproduces: 76.32 (ImageNet-1k val top-1, best epoch; RecursiveMix README
# ImageNet table, ResNet-50, 224 px, 300 epochs).
# Recipe: implus/RecursiveMix-pytorch main.py with --lr 0.2 --scheduler cos
# --warmup 5 --epoch 300 --batch_size 512 --weight_decay 1e-4 --aug_plus,
# AMP, seed 27 on every rank, see configs/classification/README.md.
# GPUs x per-GPU batch: 8 x 64 (total 512).
# Run: bash tools/dist_train.sh configs/classification/r50_in1k.py 8
_base_ = [
    '_base_/models/resnet50_in1k.py',
    '_base_/datasets/imagenet_bs64_augplus.py',
    '_base_/schedules/imagenet_cos_300e_warmup.py',
    '_base_/default_runtime.py',
]

# No batch mixing: plain CE on the hard labels (the reference's
# LabelSmoothingLoss with smoothing 0 on one-hot targets).
model = dict(
    head=dict(loss=dict(type='CrossEntropyLoss', use_soft=False,
                        loss_weight=1.0)))
randomness = dict(seed=27, diff_rank_seed=False, deterministic=False)
auto_scale_lr = dict(enable=False, base_batch_size=512)
