# R-Mix, ResNet-50, ImageNet-1k (R-Mix README table, row 'ResNet-50
# ImageNet R-Mix').
# Reproduces: 77.39 (ImageNet-1k val top-1).
# Recipe: minhlong94/Random-Mixup imagenet/run_fast_ddp.sh (main_fast_ddp.py
# with configs/comix/configs_fast_phase{1,2,3}.yml), 100 epochs in three
# phases, run here as one job (see configs/classification/README.md):
#   epochs  0-15: size160 data, crop 128, 4 x 256,
#                 lr (0, 8, 15) -> (0.5, 1.0, 0.125)
#   epochs 15-40: size352 data, crop 224, 4 x 112, lr (15, 40) -> (0.2, 0.02)
#   epochs 40-100: same data,
#                 lr (40, 65, 90, 100) -> (.02, .002, .0002, .00002)
# The LR is np.interp(epoch + (i + 1) / len(loader), ...) before every
# iteration; SGD(momentum 0.9, Nesterov, weight decay 1e-4 except on BN
# parameters); apex AMP O1 with a static loss scale of 1024.
# GPUs x per-GPU batch: 4 x 256 (total 1024) in phase 1, 4 x 112 (total 448)
# in phases 2-3.
# Run: bash tools/dist_train.sh configs/classification/r50_rmix_in1k.py 4
_base_ = [
    '_base_/models/resnet50_in1k.py',
    '_base_/datasets/imagenet_rmix_progressive.py',
    '_base_/default_runtime.py',
]

# R-Mix on ImageNet: every batch mixed, lam ~ Beta(0.2, 0.2) per batch,
# saliency pooled to a 2x2 or 4x4 grid, quantile level per image from
# linspace(0, 0.99, 10), the partner is the reversed batch (x.flip(0)) and
# the clean-pass CE is a training term (weight 1) whose gradient is kept.
# torchvision's fc init: weight ~ N(0, 0.01) (R-Mix's init_dist_weights; the
# bias keeps PyTorch's uniform default there, 0 here).
model = dict(
    head=dict(
        init_cfg=dict(
            _delete_=True, type='Normal', layer='Linear', std=0.01)),
    train_cfg=dict(augments=[
        dict(
            type='RMix',
            alpha=0.2,
            grids=(2, 4),
            partner='flip',
            clean_loss_weight=1.0)
    ]))

optim_wrapper = dict(
    type='AmpOptimWrapper',
    loss_scale=1024.0,
    # lr is set before every iteration by PiecewiseLinearLRHook (the
    # reference builds SGD with lr 0 too).
    optimizer=dict(
        type='SGD', lr=0.0, momentum=0.9, nesterov=True, weight_decay=1e-4),
    paramwise_cfg=dict(norm_decay_mult=0.0))

# No param_scheduler: the LR comes from PiecewiseLinearLRHook.
train_cfg = dict(by_epoch=True, max_epochs=100, val_interval=1)
val_cfg = dict()
test_cfg = dict()

_phase23_pipeline = [
    dict(type='LoadImageFromFile', imdecode_backend='pillow'),
    dict(
        type='RandomResizedCrop',
        scale=224,
        crop_ratio_range=(0.087, 1.0),
        aspect_ratio_range=(3. / 4., 4. / 3.),
        backend='pillow',
        interpolation='bilinear'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]

custom_hooks = [
    dict(type='ExactResumeHook'),
    dict(
        type='DataloaderSwitchHook',
        phases=[
            dict(
                epoch=15,
                dataloader=dict(
                    batch_size=112,
                    num_workers=10,
                    dataset=dict(
                        data_root='data/imagenet/size352',
                        pipeline=_phase23_pipeline))),
        ]),
    dict(
        type='PiecewiseLinearLRHook',
        phases=[
            dict(epochs=(0, 8, 15), values=(0.5, 1.0, 0.125)),
            dict(epochs=(15, 40), values=(0.2, 0.02)),
            dict(
                epochs=(40, 65, 90, 100),
                values=(0.02, 0.002, 0.0002, 0.00002)),
        ]),
]

auto_scale_lr = dict(enable=False, base_batch_size=1024)
