# 1x schedule (12 epochs), written from mmdet 3.3.0's
# configs/_base_/schedules/schedule_1x.py, with the learning rate of mmdet's
# ATSS config and of the RecursiveMix runs (SGD 0.01, momentum 0.9, wd 1e-4;
# mmdet's generic 1x base uses 0.02 and ATSS overrides it). Linear warmup
# over 500 iterations from 0.001 x lr, x0.1 after epochs 8 and 11.
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=12, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

param_scheduler = [
    dict(
        type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(
        type='MultiStepLR',
        begin=0,
        end=12,
        by_epoch=True,
        milestones=[8, 11],
        gamma=0.1)
]

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0001))

# The recipe's total batch: 8 GPUs x 2 images. Scaling is off: with another
# total batch, set `enable=True` (or pass --auto-scale-lr) to scale lr.
auto_scale_lr = dict(enable=False, base_batch_size=16)
