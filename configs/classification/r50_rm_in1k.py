# RecursiveMix, ResNet-50, ImageNet-1k (RecursiveMix README, row
# 'RecursiveMix').
# Reproduces: 79.20 (ImageNet-1k val top-1, best epoch; RecursiveMix README
# ImageNet table, ResNet-50, 224 px, 300 epochs).
# Recipe: implus/RecursiveMix-pytorch main.py with --lr 0.2 --scheduler cos
# --warmup 5 --epoch 300 --batch_size 512 --weight_decay 1e-4 --aug_plus,
# AMP, seed 27 on every rank, see configs/classification/README.md.
# GPUs x per-GPU batch: 8 x 64 (total 512).
# Run: bash tools/dist_train.sh configs/classification/r50_rm_in1k.py 8
_base_ = [
    '_base_/models/resnet50_in1k.py',
    '_base_/datasets/imagenet_bs64_augplus.py',
    '_base_/schedules/imagenet_cos_300e_warmup.py',
    '_base_/default_runtime.py',
]

# RecursiveMix: paste the previous (resized) batch into a box whose area
# fraction is ~U(0, alpha), consistency loss weight omega * (1 - lam) on the
# RoI-aligned layer4 features (second linear head), nearest resize.
model = dict(
    train_cfg=dict(augments=[
        dict(type='RecursiveMix', alpha=0.5, omega=0.5,
             interpolation='nearest')
    ]))

# The official run needs find_unused_parameters=True because its fc_roi is
# skipped on unmixed steps; MixImageClassifier keeps fc_roi in every forward
# (weight 0), so DDP's default (False) works and is faster.
randomness = dict(seed=27, diff_rank_seed=False, deterministic=False)
auto_scale_lr = dict(enable=False, base_batch_size=512)
