# Runtime shared by the classification recipes (mmpretrain 1.2.0 scope).
default_scope = 'mmpretrain'
custom_imports = dict(imports=['mixplugins'], allow_failed_imports=False)

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=100),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # Both reference codes report the best test/val top-1 over training and
    # also keep the last checkpoint.
    checkpoint=dict(
        type='CheckpointHook',
        interval=1,
        max_keep_ckpts=2,
        save_best='accuracy/top1',
        rule='greater'),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='VisualizationHook', enable=False),
)

env_cfg = dict(
    # the reference codes run with cudnn.benchmark = True
    cudnn_benchmark=True,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'),
)

vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='UniversalVisualizer', vis_backends=vis_backends)

log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=None, deterministic=False)

# `--resume` continues exactly where the checkpoint was taken: RNG states,
# per-rank RecursiveMix history / RL-Mix agent, position in the epoch
# (docs/resume.md).
custom_hooks = [dict(type='ExactResumeHook')]
