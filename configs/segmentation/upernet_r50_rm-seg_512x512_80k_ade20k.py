# UPerNet R-50, ADE20K 512x512 80k, with RecursiveMix applied *inside*
# segmentation training (mixplugins' `RecursiveMix` batch augment, run by
# `MixSegDataPreProcessor` -- mmseg 1.2.2's own SegDataPreProcessor cannot run
# batch augments). The recipe is that of upernet_r50_512x512_80k_ade20k.py
# (the RecursiveMix paper's segmentation recipe): mmseg `ResNet`
# (torchvision stem), SyncBN, norm_eval False; AdamW lr 1e-4 wd 1e-4, poly
# decay (power 0.9) to 0 per iteration, no warmup, 80k iterations, validation
# every 8k; crop 512; 8 GPUs x 2 images. The backbone starts from
# torchvision's ImageNet ResNet-50 (public); set `backbone_checkpoint` to an
# RM-pretrained backbone to combine both.
#
# Not a published recipe: the paper's ADE20K numbers fine-tune RM-pretrained
# backbones *without* mixing; pasting the previous batch (image and label map,
# nearest, ignore index kept, only inside each image's unpadded area) follows
# the design sketch of recursivemix_spec.md section 3.1 and has no reference
# number. Under the iteration-based loop the epoch never changes, so the
# history is carried over the whole run.
# Run: bash tools/dist_train.sh configs/segmentation/upernet_r50_rm-seg_512x512_80k_ade20k.py 8
_base_ = [
    '_base_/models/upernet_r50.py',
    '_base_/datasets/ade20k.py',
    '_base_/default_runtime.py',
    '_base_/schedules/schedule_80k.py',
]

default_scope = 'mmseg'
custom_imports = dict(imports=['mixplugins'], allow_failed_imports=False)
# exact --resume (RNG, per-rank history, position in the epoch)
custom_hooks = [dict(type='ExactResumeHook')]

backbone_checkpoint = 'torchvision://resnet50'

crop_size = (512, 512)
data_preprocessor = dict(type='MixSegDataPreProcessor',
                         size=crop_size,
                         batch_augments=[
                             dict(type='RecursiveMix',
                                  alpha=0.5,
                                  interpolation='nearest',
                                  carry_history=False)
                         ])
model = dict(data_preprocessor=data_preprocessor,
             pretrained=None,
             backbone=dict(type='ResNet',
                           norm_eval=False,
                           init_cfg=dict(type='Pretrained',
                                         checkpoint=backbone_checkpoint)),
             decode_head=dict(num_classes=150),
             auxiliary_head=dict(num_classes=150))

optim_wrapper = dict(type='OptimWrapper',
                     optimizer=dict(_delete_=True,
                                    type='AdamW',
                                    lr=0.0001,
                                    betas=(0.9, 0.999),
                                    eps=1e-08,
                                    weight_decay=0.0001),
                     clip_grad=None)
param_scheduler = [
    dict(type='PolyLR',
         eta_min=0.0,
         power=0.9,
         begin=0,
         end=80000,
         by_epoch=False)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=80000, val_interval=8000)

train_dataloader = dict(batch_size=2)
auto_scale_lr = dict(enable=False, base_batch_size=16)
