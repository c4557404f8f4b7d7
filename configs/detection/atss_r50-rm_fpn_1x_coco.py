# ATSS R-50 FPN 1x, COCO, RecursiveMix-pretrained backbone (RecursiveMix README, COCO ATSS table, row '+ RecursiveMix').
# Reproduces: 41.5 (COCO val2017 box AP, epoch 12; AP50 59.9, AP75 45.1,
# APs/m/l 25.7/45.5/52.4).
# Recipe: atss_r50_fpn_1x_coco.py with the backbone initialised from the
# 300-epoch ImageNet ResNet-50 trained with RecursiveMix (79.20 top-1).
# Either convert the published checkpoint
# (github.com/implus/RecursiveMix/releases/download/v0.0/
#  checkpoint_imagenet_300epoch_r50_rm_79.20_top1_acc.pth):
#   python tools/convert_checkpoint.py \
#     checkpoint_imagenet_300epoch_r50_rm_79.20_top1_acc.pth \
#     checkpoints/r50_rm_in1k_backbone.pth \
#     --src-format recursivemix --arch resnet50 --target backbone
# or train configs/classification/r50_rm_in1k.py and convert its checkpoint
# with --src-format mixplugins --target backbone.
# GPUs x per-GPU batch: 8 x 2 (total 16).
# Run: bash tools/dist_train.sh configs/detection/atss_r50-rm_fpn_1x_coco.py 8
_base_ = ['./atss_r50_fpn_1x_coco.py']

backbone_checkpoint = 'checkpoints/r50_rm_in1k_backbone.pth'

model = dict(
    backbone=dict(
        init_cfg=dict(type='Pretrained', checkpoint=backbone_checkpoint)))

auto_scale_lr = dict(enable=False, base_batch_size=16)
