"""RLMix (R-Mix with a PPO agent) through MixImageClassifier, on a tiny
ResNet and a batch of 4."""
import ast
import copy
import inspect
import math
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip('mmpretrain')
pytest.importorskip('stable_baselines3')
from mmengine.logging import MessageHub  # noqa: E402
from mmengine.optim import OptimWrapper  # noqa: E402
from mmpretrain.registry import BATCH_AUGMENTS  # noqa: E402

import mixplugins  # noqa: E402,F401
from mixplugins.classification import rl_agent as rl  # noqa: E402
from mixplugins.classification import rlmix as rlmix_module  # noqa: E402
from mixplugins.core.rmix import DEFAULT_QUANTILE_LEVELS  # noqa: E402
from mixplugins.classification import RLMix  # noqa: E402
from mixplugins.core.rmix import (cell_masks, input_saliency,  # noqa: E402
                                  mix_by_masks, upsample_masks)
from tests._helpers import (NUM_CLASSES, cls_model,  # noqa: E402
                            make_batch, set_epoch)

pytestmark = pytest.mark.usefixtures('epoch0')

B = 4
# tiny rollouts so that an update happens within a few steps
FAST = dict(type='RLMix', n_steps=4, batch_size=2, n_epochs=2,
            total_timesteps=40)


def build_model(augments=None, **kwargs):
    """A tiny initialised ``MixImageClassifier`` with ``augments``
    (default: ``[FAST]``)."""
    return cls_model(augments or [FAST], init_weights=True, **kwargs)


def rlmix_of(model):
    """The RLMix augment inside the model's data preprocessor."""
    augments = model.data_preprocessor.batch_augments.augments
    return next(a for a in augments if isinstance(a, RLMix))


def sgd(model):
    return OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.05))


def train(model, optim, seeds):
    for seed in seeds:
        torch.manual_seed(seed)
        np.random.seed(seed)
        model.train_step(make_batch(seed=seed)[0], optim)


def policy_params(model):
    return {
        k: v.detach().clone()
        for k, v in model.rl_agent.policy.state_dict().items()
    }


def pool8(maps):
    """Mean over 4x4 pixel blocks of (N, 32, 32) maps -> (N, 8, 8)."""
    return maps.reshape(maps.shape[0], 8, 4, 8, 4).mean((2, 4))


# ------------------------------------------------------------- building
@pytest.mark.parametrize('bad, name', [
    (dict(mix_grids=(0, 2)), 'mix_grids'),
    (dict(mix_grids=()), 'mix_grids'),
    (dict(agent_grid=3), 'agent_grid'),
    (dict(n_steps=1), 'n_steps'),
    (dict(batch_size=1), 'batch_size'),
    (dict(n_steps=100, batch_size=200), 'batch_size'),
    (dict(n_epochs=0), 'n_epochs'),
    (dict(agent_lr=0.0), 'agent_lr'),
    (dict(gamma=1.5), 'gamma'),
    (dict(gae_lambda=-0.1), 'gae_lambda'),
    (dict(clip_range=0), 'clip_range'),
    (dict(ent_coef=-1.0), 'ent_coef'),
    (dict(total_timesteps=0), 'total_timesteps'),
    (dict(alpha=0), 'alpha'),
    (dict(quantile_levels=(0.5, 2.0)), 'quantile_levels'),
    (dict(partner='roll'), 'partner'),
])
def test_init_errors_name_the_argument(bad, name):
    with pytest.raises(ValueError, match=name):
        BATCH_AUGMENTS.build({'type': 'RLMix', **bad})


def test_official_defaults():
    aug = BATCH_AUGMENTS.build(dict(type='RLMix'))
    assert aug.mix_grids == (2, 4) and aug.agent_grid == 8
    assert (aug.n_steps, aug.batch_size, aug.n_epochs) == (1000, 250, 10)
    assert aug.agent_lr == 1e-3 and aug.alpha == 1.0
    assert (aug.gamma, aug.gae_lambda, aug.clip_range, aug.ent_coef) == (
        0.99, 0.95, 0.2, 0.0)
    assert aug.quantile_levels == DEFAULT_QUANTILE_LEVELS


def test_missing_stable_baselines3_is_a_clear_build_error(monkeypatch):
    monkeypatch.setitem(sys.modules, 'stable_baselines3', None)
    with pytest.raises(ImportError, match=r'mixplugins\[rl\]'):
        BATCH_AUGMENTS.build(dict(type='RLMix'))
    # R-Mix does not need it
    BATCH_AUGMENTS.build(dict(type='RMix'))


def test_stable_baselines3_is_imported_lazily():
    """`import mixplugins` must work without the `rl` extra: neither the
    augment nor the classifier imports it (or rl_agent) at module level."""
    from mixplugins.classification import classifier
    for module in (rlmix_module, classifier):
        tree = ast.parse(inspect.getsource(module))
        names = []
        for node in tree.body:
            if isinstance(node, ast.Import):
                names += [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names.append(node.module or '')
                names += [a.name for a in node.names]
        assert not any(
            n.split('.')[0] in ('stable_baselines3', 'gymnasium')
            or n.endswith('rl_agent') for n in names), names


def test_one_rlmix_per_classifier():
    with pytest.raises(ValueError, match='one RLMix'):
        build_model([FAST, dict(FAST)])


def test_agent_is_owned_but_not_trained_by_the_classifier():
    model = build_model()
    plain = build_model([dict(type='RMix')])
    assert isinstance(model.rl_agent, rl.RLMixAgent)
    assert plain.rl_agent is None
    # before the first step: an empty tensor (mmengine broadcasts every
    # state_dict entry at init under DDP, which needs tensors)
    placeholder = model.state_dict()['rl_agent._extra_state']
    assert isinstance(placeholder, torch.Tensor) and placeholder.numel() == 0
    plain.load_state_dict(plain.state_dict())
    build_model().load_state_dict(model.state_dict())
    optim = sgd(model)
    train(model, optim, [0])
    # the policy exists now, outside the classifier's parameters, buffers
    # and optimizer (it has its own Adam)
    assert len(list(model.rl_agent.policy.parameters())) > 0
    assert list(model.rl_agent.parameters()) == []
    assert list(model.rl_agent.buffers()) == []
    assert len(list(model.parameters())) == len(list(plain.parameters()))
    policy_ids = {id(p) for p in model.rl_agent.policy.parameters()}
    opt_ids = {id(p) for g in optim.param_groups for p in g['params']}
    assert not policy_ids & opt_ids
    keys = set(model.state_dict()) - set(plain.state_dict())
    assert keys == {'rl_agent._extra_state'}


def test_policy_network_shapes():
    """The official network: Conv(B->150, 3x3), Conv(150->100, 2x2),
    Linear(K->256) per image, Linear(2500 + B*256 -> 256), heads [64, 64],
    one 10-way categorical per image."""
    model = build_model()
    train(model, sgd(model), [0])
    policy = model.rl_agent.policy
    ext = policy.features_extractor
    assert isinstance(ext, rl.SaliencyLogitsExtractor)
    assert ext.saliency_net[0].weight.shape == (150, B, 3, 3)
    assert ext.saliency_net[2].weight.shape == (100, 150, 2, 2)
    assert ext.logits_net[0].weight.shape == (256, NUM_CLASSES)
    assert ext.linear[0].weight.shape == (256, 2500 + B * 256)
    assert [m.out_features for m in policy.mlp_extractor.policy_net
            if isinstance(m, torch.nn.Linear)] == [64, 64]
    assert [m.out_features for m in policy.mlp_extractor.value_net
            if isinstance(m, torch.nn.Linear)] == [64, 64]
    assert policy.action_net.out_features == 10 * B
    assert policy.value_net.out_features == 1


# ---------------------------------------------------------- observation
def test_observe_pools_and_normalises():
    aug = BATCH_AUGMENTS.build(dict(type='RLMix'))
    g = torch.Generator().manual_seed(0)
    sal = torch.rand(3, 32, 32, generator=g)
    sal[2] = 0  # a zero map stays zero (no NaN)
    obs, cells = aug.observe(sal)
    expected = pool8(sal)
    torch.testing.assert_close(cells, expected)
    torch.testing.assert_close(obs[:2].sum((1, 2)), torch.ones(2))
    torch.testing.assert_close(
        obs[:2], expected[:2] / expected[:2].sum((1, 2), keepdim=True))
    assert torch.equal(obs[2], torch.zeros(8, 8))


def test_observation_is_the_clean_saliency_and_logits():
    model = build_model()
    data, labels = make_batch()
    x = torch.stack(data['inputs']).float()
    # train-mode BN: the clean pass is a deterministic function of the batch
    sal = input_saliency(lambda t: model(t, mode='tensor'), x, labels)
    with torch.no_grad():
        logits = model(x, mode='tensor')
    model.data_preprocessor(data, True)
    pending = model.rl_agent._pending
    obs = pending['obs']
    assert obs['saliency'].shape == (1, B, 8, 8)
    assert obs['logits'].shape == (1, B, NUM_CLASSES)
    assert obs['saliency'].dtype == obs['logits'].dtype == np.float32
    cells = pool8(sal)
    np.testing.assert_allclose(
        obs['saliency'][0], (cells / cells.sum((1, 2), keepdim=True)).numpy(),
        rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(obs['saliency'][0].sum((1, 2)), np.ones(B),
                               rtol=1e-5)
    np.testing.assert_allclose(obs['logits'][0], logits.numpy(), rtol=1e-5,
                               atol=1e-6)
    # the reward's reference is the same map, not normalised
    torch.testing.assert_close(pending['clean'], cells)
    action = pending['action']
    assert action.shape == (1, B) and action.min() >= 0 and action.max() < 10


def test_saliency_scale_observes_the_resized_clean_pass():
    """``saliency_scale=0.5``: the clean pass runs on 16 px copies; the
    observation and the reward's reference are that saliency pooled to the
    8 x 8 agent grid; the images are mixed at 32 px."""
    model = build_model([{**FAST, 'saliency_scale': 0.5}])
    data, labels = make_batch()
    x = torch.stack(data['inputs']).float()
    sal = input_saliency(lambda t: model(t, mode='tensor'), x, labels,
                         scale_factor=0.5)
    assert sal.shape == (B, 16, 16)
    out = model.data_preprocessor(data, True)
    assert out['inputs'].shape == (B, 3, 32, 32)
    p = rlmix_of(model).last_params
    assert torch.equal(p.saliency, sal)
    assert torch.equal(p.masks, cell_masks(sal, p.grid, p.quantiles))
    pending = model.rl_agent._pending
    cells = sal.reshape(B, 8, 2, 8, 2).mean((2, 4))
    torch.testing.assert_close(pending['clean'], cells)
    np.testing.assert_allclose(
        pending['obs']['saliency'][0],
        (cells / cells.sum((1, 2), keepdim=True)).numpy(), rtol=1e-5,
        atol=1e-7)


def test_agent_grid_must_fit_the_resized_images():
    """32 px at 0.125 is 4 px, smaller than the 8 x 8 agent grid: refused
    before the clean pass (no agent built), naming ``agent_grid``."""
    model = build_model([{**FAST, 'saliency_scale': 0.125}])
    with pytest.raises(ValueError, match=r'`agent_grid` \(8,\) must be '
                       r'<= min\(h, w\) = 4'):
        model.data_preprocessor(make_batch()[0], True)
    assert not model.rl_agent.built


@pytest.mark.parametrize('bad', [0, 1.5, float('nan')])
def test_saliency_scale_init_errors(bad):
    with pytest.raises(ValueError, match='saliency_scale'):
        BATCH_AUGMENTS.build(dict(type='RLMix', saliency_scale=bad))


# -------------------------------------------------------------- actions
def _recorded_masks(model, monkeypatch, actions):
    """Run one augment call with the policy's actions forced."""
    policy = model.rl_agent.policy
    acts = torch.as_tensor(actions)[None]
    monkeypatch.setattr(
        policy, 'forward', lambda obs, deterministic=False:
        (acts, torch.zeros(1, 1), torch.zeros(1)))
    model.data_preprocessor(make_batch(seed=3)[0], True)
    params = rlmix_of(model).last_params  # the policy stays forced
    return params.grid, params.quantiles, upsample_masks(params.masks, 32, 32)


def test_actions_choose_the_quantile_levels_of_the_masks(monkeypatch):
    model = build_model([{**FAST, 'mix_grids': (8, )}])
    model.data_preprocessor(make_batch(seed=2)[0], True)  # builds the agent
    counts = {}
    for actions in ([0, 0, 0, 0], [9, 9, 9, 9], [0, 3, 6, 9]):
        grid, q, masks = _recorded_masks(model, monkeypatch, actions)
        assert grid == 8
        torch.testing.assert_close(
            q, torch.tensor([DEFAULT_QUANTILE_LEVELS[a] for a in actions]))
        # 64 cells of distinct saliency: the cells at or above the
        # q-quantile (rank q * 63, linear interpolation) are the top
        # 64 - ceil(q * 63) ones (16 pixels each)
        kept = masks.flatten(1).sum(1) // 16
        expected = [64 - math.ceil(DEFAULT_QUANTILE_LEVELS[a] * 63 - 1e-9)
                    for a in actions]
        assert kept.tolist() == expected
        counts[tuple(actions)] = kept.tolist()
    assert counts[(0, 0, 0, 0)] == [64] * 4
    assert counts[(9, 9, 9, 9)] == [1] * 4


def test_all_zero_actions_give_plain_mixup(monkeypatch):
    """q = 0 keeps every cell of both images, so every pixel is blended
    with one lam: x_mix = lam * x + (1 - lam) * x[perm]."""
    model = build_model([{**FAST, 'mix_grids': (2, 4)}])
    model.data_preprocessor(make_batch(seed=2)[0], True)
    _, q, masks = _recorded_masks(model, monkeypatch, [0] * B)
    assert q.tolist() == [0.0] * B and bool(masks.all())
    data, labels = make_batch(seed=4)
    x = torch.stack(data['inputs']).float()
    out = model.data_preprocessor(data, True)  # still all-zero actions
    mixed = out['inputs'].detach()
    scores = torch.stack([s.gt_score for s in out['data_samples']])
    onehot = F.one_hot(labels, NUM_CLASSES).float()
    # find lam and the partner of every image from the mixed pixels
    for b in range(B):
        fits = []
        for p in range(B):
            diff = x[b] - x[p]
            if diff.abs().sum() == 0:
                continue
            lam = ((mixed[b] - x[p]) * diff).sum() / (diff * diff).sum()
            err = (mixed[b] - (lam * x[b] + (1 - lam) * x[p])).abs().max()
            fits.append((float(err), float(lam), p))
        err, lam, p = min(fits)
        if err < 1e-3:
            torch.testing.assert_close(
                scores[b], lam * onehot[b] + (1 - lam) * onehot[p])
        else:  # paired with itself: unchanged
            torch.testing.assert_close(mixed[b], x[b])


# ------------------------------------------------------------- rewards
def test_saliency_similarity_hand_values():
    clean = torch.tensor([[[1., 0.], [0., 0.]]])

    def grad_with_rms(cells):  # every channel equal: RMS = |value|
        return cells[:, None].expand(-1, 3, -1, -1).clone()

    same = rl.saliency_similarity(clean, grad_with_rms(clean * 7))
    orth = rl.saliency_similarity(
        clean, grad_with_rms(torch.tensor([[[0., -2.], [0., 0.]]])))
    half = rl.saliency_similarity(
        clean, grad_with_rms(torch.tensor([[[3., 3.], [0., 0.]]])))
    assert same.item() == pytest.approx(1.0)
    assert orth.item() == pytest.approx(0.0)
    assert half.item() == pytest.approx(1 / math.sqrt(2))
    # whole-batch flattening: one scalar for two images
    two = rl.saliency_similarity(
        torch.tensor([[[1., 0.], [0., 0.]], [[0., 0.], [0., 1.]]]),
        grad_with_rms(torch.tensor([[[1., 0.], [0., 0.]],
                                    [[0., 0.], [0., 0.]]])))
    assert two.shape == () and two.item() == pytest.approx(1 / math.sqrt(2))


def test_mixed_inputs_are_a_leaf_and_the_reward_uses_their_gradient():
    model = build_model()
    data, labels = make_batch(seed=1)
    x = torch.stack(data['inputs']).float()
    clean = pool8(
        input_saliency(lambda t: model(t, mode='tensor'), x, labels))
    out = model.data_preprocessor(data, True)
    mixed = out['inputs']
    assert mixed.is_leaf and mixed.requires_grad
    assert model.rl_agent._pending['mixed'] is mixed
    losses = model(**out, mode='loss')
    loss, _ = model.parse_losses(losses)
    loss.backward()
    # reference: the input gradient of the same loss, recomputed
    xr = mixed.detach().clone().requires_grad_(True)
    ref_loss, _ = model.parse_losses(
        model(xr, copy.deepcopy(out['data_samples']), mode='loss'))
    (grad, ) = torch.autograd.grad(ref_loss, xr)
    mix_cells = pool8(grad.pow(2).mean(1).sqrt())
    a, b = clean.flatten(), mix_cells.flatten()
    expected = float(a @ b / (a.norm() * b.norm()))
    # the next step settles the reward and stores the transition
    model.data_preprocessor(make_batch(seed=2)[0], True)
    buffer = model.rl_agent.ppo.rollout_buffer
    assert buffer.pos == 1
    assert buffer.rewards[0, 0] == pytest.approx(expected, rel=1e-4)
    hub = MessageHub.get_current_instance()
    assert hub.get_scalar('train/rlmix_reward').current() == pytest.approx(
        expected, rel=1e-4)


def test_a_step_without_backward_gives_no_transition():
    model = build_model()
    for seed in range(3):
        model.data_preprocessor(make_batch(seed=seed)[0], True)
    assert model.rl_agent.ppo.rollout_buffer.pos == 0
    assert model.rl_agent.ppo.num_timesteps == 0


def test_episodes_follow_the_epochs():
    model = build_model()
    optim = sgd(model)
    train(model, optim, [0, 1])
    set_epoch(1)
    train(model, optim, [2, 3])
    starts = model.rl_agent.ppo.rollout_buffer.episode_starts[:3, 0]
    # obs 0 starts the run, obs 2 is the first of epoch 1
    assert starts.tolist() == [1.0, 0.0, 1.0]


# ----------------------------------------------------------------- PPO
def test_ppo_update_changes_the_policy_with_the_official_lr():
    model = build_model()
    optim = sgd(model)
    train(model, optim, [0])
    before = policy_params(model)
    train(model, optim, [1, 2, 3])  # 3 transitions: no update yet
    agent = model.rl_agent
    assert agent.ppo._n_updates == 0 and agent.ppo.rollout_buffer.pos == 3
    for k, v in policy_params(model).items():
        assert torch.equal(v, before[k]), k
    train(model, optim, [4])  # 4th transition fills the rollout: update
    assert agent.ppo.num_timesteps == 4
    assert agent.ppo._n_updates == 2  # n_epochs
    assert agent.ppo.rollout_buffer.pos == 0
    after = policy_params(model)
    changed = [k for k in after if not torch.equal(after[k], before[k])]
    assert 'action_net.weight' in changed and 'value_net.weight' in changed
    assert any(k.startswith('features_extractor') for k in changed)
    # exp_schedule: lr = 1e-3 * (1 - 4 / 40) ** 0.9
    lr = agent.policy.optimizer.param_groups[0]['lr']
    assert lr == pytest.approx(1e-3 * 0.9**0.9)
    hub = MessageHub.get_current_instance()
    assert hub.get_scalar('train/rlmix_learning_rate').current() == \
        pytest.approx(1e-3 * 0.9**0.9)


def test_total_timesteps_defaults_to_max_iters():
    model = build_model([{**FAST, 'total_timesteps': None}])
    hub = MessageHub.get_current_instance()
    hub.update_info('max_iters', 8)
    optim = sgd(model)
    train(model, optim, range(5))
    lr = model.rl_agent.policy.optimizer.param_groups[0]['lr']
    assert lr == pytest.approx(1e-3 * 0.5**0.9)
    hub.update_info('max_iters', None)
    model = build_model([{**FAST, 'total_timesteps': None}])
    with pytest.raises(RuntimeError, match='total_timesteps'):
        train(model, sgd(model), range(5))


# -------------------------------------------------------------- resume
def test_resume_restores_the_agent_and_continues_identically(tmp_path):
    model = build_model()
    optim = sgd(model)
    train(model, optim, range(6))  # one update, then 1 transition + pending
    agent = model.rl_agent
    assert agent.ppo._n_updates == 2 and agent.ppo.rollout_buffer.pos == 1
    # through a file, with torch's default (weights_only) loader
    torch.save(model.state_dict(), tmp_path / 'ckpt.pth')
    state = torch.load(tmp_path / 'ckpt.pth', weights_only=True)
    extra = state['rl_agent._extra_state']
    assert extra['batch_images'] == B and extra['buffer']['pos'] == 1
    assert extra['pending'] is not None

    fresh = build_model()
    fresh.load_state_dict(state)
    assert not fresh.rl_agent.built
    # a checkpoint written before the first step passes the state through
    assert fresh.state_dict()['rl_agent._extra_state']['num_timesteps'] == 5
    fresh_optim = sgd(fresh)
    # lockstep: the same batches and seeds on both
    for seed in (6, 7):
        train(model, optim, [seed])
        train(fresh, fresh_optim, [seed])
        a, b = model.rl_agent, fresh.rl_agent
        assert a.ppo.num_timesteps == b.ppo.num_timesteps
        assert a.ppo.rollout_buffer.pos == b.ppo.rollout_buffer.pos
        for k, v in policy_params(model).items():
            torch.testing.assert_close(policy_params(fresh)[k], v)
        for key in ('actions', 'rewards', 'values', 'log_probs',
                    'episode_starts'):
            np.testing.assert_allclose(
                getattr(a.ppo.rollout_buffer, key),
                getattr(b.ppo.rollout_buffer, key), rtol=1e-5, atol=1e-6)
    # the next update (the 4th transition after the first update) matches
    for seed in (8, 9):
        train(model, optim, [seed])
        train(fresh, fresh_optim, [seed])
    assert model.rl_agent.ppo._n_updates == fresh.rl_agent.ppo._n_updates \
        == 4
    for k, v in policy_params(model).items():
        torch.testing.assert_close(policy_params(fresh)[k], v, rtol=1e-4,
                                   atol=1e-6)
    sa = model.rl_agent.policy.optimizer.state_dict()['state']
    sb = fresh.rl_agent.policy.optimizer.state_dict()['state']
    for i in sa:
        torch.testing.assert_close(sb[i]['exp_avg'], sa[i]['exp_avg'],
                                   rtol=1e-4, atol=1e-7)


def test_batch_size_must_not_change():
    model = build_model()
    optim = sgd(model)
    train(model, optim, [0])
    with pytest.raises(ValueError, match='drop_last'):
        model.data_preprocessor(make_batch(n=3)[0], True)


def test_resume_with_another_per_gpu_batch_is_refused():
    model = build_model()
    train(model, sgd(model), range(2))
    fresh = build_model()
    fresh.load_state_dict(copy.deepcopy(model.state_dict()))
    with pytest.raises(ValueError, match='per-GPU batch'):
        fresh.data_preprocessor(make_batch(n=2)[0], True)


def test_exp_schedule():
    sched = rl.ExpSchedule(1e-3)
    assert sched(1.0) == pytest.approx(1e-3)
    assert sched(0.5) == pytest.approx(1e-3 * 0.5**0.9)
    assert sched(-0.1) == 0.0 and sched(1.5) == pytest.approx(1e-3)


# -------------------------------------------------------------- configs
@pytest.mark.parametrize('arch, number', [('preactresnet18', '80.75'),
                                          ('wrn28-10', '84.90')])
def test_configs_are_the_rmix_recipe_with_the_agent(arch, number):
    """Everything but the augment equals the R-Mix config of the same
    backbone; the augment carries the official PPO settings."""
    from pathlib import Path

    from mmengine.config import Config
    root = Path(__file__).resolve().parents[2] / 'configs' / 'classification'
    path = root / f'{arch}_rlmix_cifar100.py'
    cfg = Config.fromfile(str(path), import_custom_modules=False)
    ref = Config.fromfile(
        str(root / f'{arch}_rmix_cifar100.py'), import_custom_modules=False)
    header = path.read_text().split('_base_ =')[0]
    assert f'Reproduces: {number}' in header
    assert 'GPUs x per-GPU batch: 1 x 100' in header
    assert f'configs/classification/{arch}_rlmix_cifar100.py' in header
    (aug, ) = cfg.model.train_cfg.augments
    assert aug == dict(
        type='RLMix', alpha=1.0, mix_grids=(2, 4), agent_grid=8,
        partner='randperm', clean_loss_weight=0.0, n_steps=1000,
        batch_size=250, n_epochs=10, agent_lr=1e-3)
    BATCH_AUGMENTS.build(dict(aug))
    a, b = cfg.to_dict(), ref.to_dict()
    a['model'].pop('train_cfg')
    b['model'].pop('train_cfg')
    assert a == b
    assert cfg.train_dataloader.drop_last is True


def test_last_params_reproduce_the_output_bitwise():
    """Applying the core kernels to ``last_params`` gives the augment's
    output; the quantiles are the agent's levels and the masks those of the
    recorded saliency."""
    model = build_model()
    for seed in range(3):
        data, labels = make_batch(seed=seed)
        x = model.data_preprocessor(copy.deepcopy(data), False)['inputs']
        out = model.data_preprocessor(data, True)
        p = rlmix_of(model).last_params
        onehot = F.one_hot(labels, NUM_CLASSES).float()
        action = model.rl_agent._pending['action'][0]
        levels = torch.tensor(DEFAULT_QUANTILE_LEVELS)[action]
        assert torch.equal(p.quantiles, levels)
        assert p.masks.shape == (B, p.grid, p.grid) and p.grid in (2, 4)
        assert torch.equal(p.masks, cell_masks(p.saliency, p.grid,
                                               p.quantiles))
        mixed, scores = mix_by_masks(x, onehot,
                                     upsample_masks(p.masks, 32, 32),
                                     p.index, p.lam)
        assert torch.equal(out['inputs'].detach(), mixed)
        got = torch.stack([s.gt_score for s in out['data_samples']])
        assert torch.equal(got, scores)
