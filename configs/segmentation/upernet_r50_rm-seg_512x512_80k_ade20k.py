# UPerNet R-50, ADE20K 512x512 80k, with RecursiveMix applied *inside*
# segmentation training (mixplugins' `RecursiveMix` batch augment, run by
# `MixSegDataPreProcessor` -- mmseg 1.2.2's own SegDataPreProcessor cannot run
# batch augments). The recipe is that of upernet_r50_512x512_80k_ade20k.py
# (the RecursiveMix paper's segmentation recipe), which this file inherits:
# mmseg `ResNet` (torchvision stem), SyncBN, norm_eval False; AdamW lr 1e-4
# wd 1e-4, poly decay (power 0.9) to 0 per iteration, no warmup, 80k
# iterations, validation every 8k; crop 512; 8 GPUs x 2 images. This file
# holds only what it changes: the data preprocessor with the batch augment,
# the exact-resume hook, and the backbone, which starts from torchvision's
# ImageNet ResNet-50 (public); set `backbone_checkpoint` to an RM-pretrained
# backbone to combine both.
#
# Not a published recipe: the paper's ADE20K numbers fine-tune RM-pretrained
# backbones *without* mixing; pasting the previous batch (image and label map,
# nearest, ignore index kept, only inside each image's unpadded area) follows
# the design sketch of recursivemix_spec.md section 3.1 and has no reference
# number. Under the iteration-based loop the epoch never changes, so the
# history is carried over the whole run.
# GPUs x per-GPU batch: 8 x 2 (total 16).
# Run: bash tools/dist_train.sh configs/segmentation/upernet_r50_rm-seg_512x512_80k_ade20k.py 8
_base_ = ['./upernet_r50_512x512_80k_ade20k.py']

custom_imports = dict(imports=['mixplugins'], allow_failed_imports=False)
# exact --resume (RNG, per-rank history, position in the epoch)
custom_hooks = [dict(type='ExactResumeHook')]

backbone_checkpoint = 'torchvision://resnet50'

data_preprocessor = dict(type='MixSegDataPreProcessor',
                         batch_augments=[
                             dict(type='RecursiveMix',
                                  alpha=0.5,
                                  interpolation='nearest',
                                  carry_history=False)
                         ])
model = dict(data_preprocessor=data_preprocessor,
             backbone=dict(init_cfg=dict(type='Pretrained',
                                         checkpoint=backbone_checkpoint)))
