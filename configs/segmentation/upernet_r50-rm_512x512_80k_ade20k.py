# UPerNet R-50, ADE20K 512x512 80k, RecursiveMix-pretrained backbone (RecursiveMix README, ADE20K UPerNet table, row '+ RecursiveMix').
# Reproduces: 42.30 (ADE20K val mIoU, single scale, final 80k evaluation;
# mAcc 52.61, aAcc 80.14).
# Recipe: upernet_r50_512x512_80k_ade20k.py with the backbone initialised
# from the 300-epoch ImageNet ResNet-50 trained with RecursiveMix (79.20
# top-1). Either convert the published checkpoint
# (github.com/implus/RecursiveMix/releases/download/v0.0/
#  checkpoint_imagenet_300epoch_r50_rm_79.20_top1_acc.pth):
#   python tools/convert_checkpoint.py \
#     checkpoint_imagenet_300epoch_r50_rm_79.20_top1_acc.pth \
#     checkpoints/r50_rm_in1k_backbone.pth \
#     --src-format recursivemix --arch resnet50 --target backbone
# or train configs/classification/r50_rm_in1k.py and convert its checkpoint
# with --src-format mixplugins --target backbone.
# GPUs x per-GPU batch: 8 x 2 (total 16).
# Run: bash tools/dist_train.sh configs/segmentation/upernet_r50-rm_512x512_80k_ade20k.py 8
_base_ = ['./upernet_r50_512x512_80k_ade20k.py']

backbone_checkpoint = 'checkpoints/r50_rm_in1k_backbone.pth'

model = dict(
    backbone=dict(
        init_cfg=dict(type='Pretrained', checkpoint=backbone_checkpoint)))

auto_scale_lr = dict(enable=False, base_batch_size=16)
