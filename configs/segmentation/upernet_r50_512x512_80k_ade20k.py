# UPerNet R-50, ADE20K 512x512 80k, baseline backbone (RecursiveMix README, ADE20K UPerNet table, row 'ResNet-50').
# Reproduces: 40.40 (ADE20K val mIoU, single scale, final 80k evaluation).
# Recipe: the RecursiveMix paper's segmentation recipe (same for all three
# rows, each with its own 300-epoch ImageNet backbone; nothing is mixed in
# segmentation): mmseg `ResNet` (torchvision stem), SyncBN, norm_eval False;
# AdamW lr 1e-4 wd 1e-4, poly decay (power 0.9) to 0 per iteration, no
# warmup, 80k iterations, validation every 8k; crop 512.
# Backbone: the 300-epoch baseline ResNet-50 (76.32 top-1) of
# configs/classification/r50_in1k.py, converted with
#   python tools/convert_checkpoint.py work_dirs/r50_in1k/<best>.pth \
#     checkpoints/r50_in1k_backbone.pth --src-format mixplugins \
#     --target backbone
# (the authors did not publish it; torchvision://resnet50, 76.13 top-1 after
# 90 epochs, is the nearest public substitute).
# GPUs x per-GPU batch: 8 x 2 (total 16).
# Run: bash tools/dist_train.sh configs/segmentation/upernet_r50_512x512_80k_ade20k.py 8
_base_ = [
    '_base_/models/upernet_r50.py',
    '_base_/datasets/ade20k.py',
    '_base_/default_runtime.py',
    '_base_/schedules/schedule_80k.py',
]

default_scope = 'mmseg'
custom_imports = dict(imports=['mixplugins'], allow_failed_imports=False)

backbone_checkpoint = 'checkpoints/r50_in1k_backbone.pth'

crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(
        type='ResNet',
        norm_eval=False,
        init_cfg=dict(type='Pretrained', checkpoint=backbone_checkpoint)),
    decode_head=dict(num_classes=150),
    auxiliary_head=dict(num_classes=150))

# AdamW (PyTorch defaults betas (0.9, 0.999), eps 1e-8) replaces stock SGD.
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(
        _delete_=True,
        type='AdamW',
        lr=0.0001,
        betas=(0.9, 0.999),
        eps=1e-08,
        weight_decay=0.0001),
    clip_grad=None)
param_scheduler = [
    dict(
        type='PolyLR',
        eta_min=0.0,
        power=0.9,
        begin=0,
        end=80000,
        by_epoch=False)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=80000, val_interval=8000)

train_dataloader = dict(batch_size=2)
auto_scale_lr = dict(enable=False, base_batch_size=16)
