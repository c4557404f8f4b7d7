# UPerNet R-50, ADE20K 512x512 80k, CutMix-pretrained backbone (RecursiveMix README, ADE20K UPerNet table, row '+ CutMix').
# Reproduces: 41.24 (ADE20K val mIoU, single scale, final 80k evaluation).
# Recipe: upernet_r50_512x512_80k_ade20k.py with the backbone initialised
# from the 300-epoch ImageNet ResNet-50 trained with CutMix (78.60 top-1):
#   1. bash tools/dist_train.sh configs/classification/r50_cutmix_in1k.py 8
#      (the authors did not publish this ImageNet checkpoint);
#   2. python tools/convert_checkpoint.py \
#        work_dirs/r50_cutmix_in1k/<best or last>.pth \
#        checkpoints/r50_cutmix_in1k_backbone.pth \
#        --src-format mixplugins --target backbone
# GPUs x per-GPU batch: 8 x 2 (total 16).
# Run: bash tools/dist_train.sh configs/segmentation/upernet_r50-cutmix_512x512_80k_ade20k.py 8
_base_ = ['./upernet_r50_512x512_80k_ade20k.py']

backbone_checkpoint = 'checkpoints/r50_cutmix_in1k_backbone.pth'

model = dict(
    backbone=dict(
        init_cfg=dict(type='Pretrained', checkpoint=backbone_checkpoint)))

auto_scale_lr = dict(enable=False, base_batch_size=16)
