# ATSS R-50 FPN 1x, COCO, baseline (RecursiveMix README, COCO ATSS table, row 'ResNet-50').
# Reproduces: 39.4 (COCO val2017 box AP, epoch 12). This row is mmdet's model
# zoo ATSS (atss_r50_fpn_1x_coco_20200209-985f7bd0.pth), whose backbone is
# torchvision's 90-epoch ImageNet ResNet-50 -- not the 300-epoch baseline of
# configs/classification/r50_in1k.py.
# Recipe: stock mmdet ATSS R-50 FPN 1x (the RecursiveMix runs change only the
# backbone checkpoint; nothing is mixed in detection): 12 epochs, lr x0.1
# after epochs 8 and 11, SGD lr 0.01 momentum 0.9 wd 1e-4, linear warmup 500
# iterations from 0.001 x lr; frozen stem + stage 1, BN frozen (norm_eval).
# GPUs x per-GPU batch: 8 x 2 (total 16).
# Run: bash tools/dist_train.sh configs/detection/atss_r50_fpn_1x_coco.py 8
_base_ = [
    '_base_/models/atss_r50_fpn.py',
    '_base_/datasets/coco_detection.py',
    '_base_/schedules/schedule_1x.py',
    '_base_/default_runtime.py',
]

default_scope = 'mmdet'
custom_imports = dict(imports=['mixplugins'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        init_cfg=dict(type='Pretrained',
                      checkpoint='torchvision://resnet50')))

train_dataloader = dict(batch_size=2)
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0001))
auto_scale_lr = dict(enable=False, base_batch_size=16)
