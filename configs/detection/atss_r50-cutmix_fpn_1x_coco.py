# ATSS R-50 FPN 1x, COCO, CutMix-pretrained backbone (RecursiveMix README, COCO ATSS table, row '+ CutMix').
# Reproduces: 40.1 (COCO val2017 box AP, epoch 12; AP50 58.4, AP75 43.4).
# Recipe: atss_r50_fpn_1x_coco.py with the backbone initialised from the
# 300-epoch ImageNet ResNet-50 trained with CutMix (78.60 top-1):
#   1. bash tools/dist_train.sh configs/classification/r50_cutmix_in1k.py 8
#      (the authors did not publish this ImageNet checkpoint);
#   2. python tools/convert_checkpoint.py \
#        work_dirs/r50_cutmix_in1k/<best or last>.pth \
#        checkpoints/r50_cutmix_in1k_backbone.pth \
#        --src-format mixplugins --target backbone
# or point `backbone_checkpoint` below to any backbone-only ResNet-50.
# GPUs x per-GPU batch: 8 x 2 (total 16).
# Run: bash tools/dist_train.sh configs/detection/atss_r50-cutmix_fpn_1x_coco.py 8
_base_ = ['./atss_r50_fpn_1x_coco.py']

backbone_checkpoint = 'checkpoints/r50_cutmix_in1k_backbone.pth'

model = dict(
    backbone=dict(
        init_cfg=dict(type='Pretrained', checkpoint=backbone_checkpoint)))

auto_scale_lr = dict(enable=False, base_batch_size=16)
