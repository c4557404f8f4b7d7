r"""The PPO agent of RL-Mix, built from stable-baselines3's pieces.

RL-Mix was proposed in `Expeditious Saliency-guided Mix-up through Random
Gradient Thresholding <https://arxiv.org/abs/2212.04875>`_ (Luu et al.,
AAAI'23 Practical-DL workshop); official code:
https://github.com/minhlong94/Random-Mixup (``environment.py``,
``policy_network.py``, ``main.py``).

This module needs the optional dependency stable-baselines3 (``pip install
mixplugins[rl]``); :class:`~mixplugins.classification.RLMix` imports it
lazily, when an RL-Mix augment is built.

Why stable-baselines3's pieces and not ``PPO.learn()``:
    The official code makes the whole CIFAR training loop a gym ``Env`` whose
    ``step`` trains the classifier on one batch, and lets ``PPO.learn()``
    drive it. In OpenMMLab the runner drives the loop (its hooks, the DDP
    wrapper, the optimizer wrapper with AMP and gradient accumulation,
    validation, checkpoints), so inverting control would bypass all of it.
    ``learn()`` is only ``collect_rollouts()`` (policy forward, ``env.step``,
    ``RolloutBuffer.add``, GAE at the end of the rollout) plus ``train()``;
    :meth:`RLMixAgent.step` replaces ``collect_rollouts()``'s loop body with
    one call per training iteration, fed by the batch augment, and calls
    stable-baselines3's own ``DictRolloutBuffer.compute_returns_and_advantage``
    and ``PPO.train()`` when the buffer is full. So the policy
    (``MultiInputActorCriticPolicy`` with :class:`SaliencyLogitsExtractor`),
    the buffer, the GAE, the clipped-surrogate update, the optimiser and the
    learning-rate schedule are stable-baselines3's, unchanged; no
    hand-written PPO. The ``PPO`` object is created without an environment
    (``env=None``, spaces set before ``_setup_model()``, the way
    ``PPO.load()`` does it).
"""
import copy
import warnings
from typing import Any, Dict, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from mmengine.logging import MessageHub
from stable_baselines3 import PPO
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import Tensor, nn

from ..core.rmix import saliency_from_grad

__all__ = [
    'SaliencyLogitsExtractor', 'ExpSchedule', 'RLMixAgent',
    'saliency_similarity'
]

#: Scalars of ``PPO.train()`` copied to mmengine's ``MessageHub`` (and so to
#: the training log) after every update, as ``train/rlmix_<name>``.
_LOGGED = ('learning_rate', 'policy_gradient_loss', 'value_loss',
           'entropy_loss', 'approx_kl', 'clip_fraction')

_STATE_VERSION = 1


def saliency_similarity(clean_cells: Tensor, mixed_grad: Tensor) -> Tensor:
    r"""RL-Mix's reward: gradient similarity of the clean and mixed batch.

    With :math:`s` the clean saliency pooled to the agent grid (not
    normalised) and :math:`\tilde{s}` the saliency
    :math:`\sqrt{\mathrm{mean}_c\, \tilde{g}^2}` of the mixed inputs' gradient
    pooled the same way, both flattened over the **whole batch**,
    :math:`r = \cos(s, \tilde{s})` with ``eps=1e-12`` -- one scalar per step,
    as the official ``grad_sim`` (``grad_sim=True``, ``reward_step=1``,
    ``reward_scaling=1``). Cosine similarity is invariant to a positive
    scale of either map, so a loss scale (AMP, gradient accumulation) does
    not change it.

    Args:
        clean_cells (Tensor): Clean saliency on the agent grid (B, G, G).
        mixed_grad (Tensor): Gradient of the training loss with respect to
            the mixed inputs (B, C, H, W).

    Returns:
        Tensor: The reward, a float32 scalar tensor on ``mixed_grad``'s
        device.
    """
    grid = clean_cells.shape[-2:]
    mixed_cells = F.adaptive_avg_pool2d(
        saliency_from_grad(mixed_grad).float()[:, None], grid)[:, 0]
    return F.cosine_similarity(
        clean_cells.float().flatten()[None],
        mixed_cells.flatten()[None].to(clean_cells.device),
        dim=1,
        eps=1e-12)[0]


class SaliencyLogitsExtractor(BaseFeaturesExtractor):
    """RL-Mix's features extractor (the official ``CNNExtractor``).

    Shared by the policy and value heads. The (B, G, G) saliency observation
    is one image with B channels: Conv(B, 150, 3x3) - ReLU - Conv(150, 100,
    2x2) - ReLU - flatten (100 * (G - 3)^2 = 2500 for G = 8). The (B, K)
    clean logits go through Linear(K, ``features_dim``) per image and are
    flattened (B * ``features_dim``). Both are concatenated and mapped by
    Linear(-, ``features_dim``) - ReLU.

    Args:
        observation_space (gymnasium.spaces.Dict): With ``saliency`` of
            shape (B, G, G), G >= 4, and ``logits`` of shape (B, K).
        features_dim (int): Width of the logits embedding and of the output.
            Official: 256. Defaults to 256.
    """

    def __init__(self,
                 observation_space: spaces.Dict,
                 features_dim: int = 256) -> None:
        batch, grid, _ = observation_space['saliency'].shape
        num_classes = observation_space['logits'].shape[-1]
        super().__init__(observation_space, features_dim)
        self.saliency_net = nn.Sequential(
            nn.Conv2d(batch, 150, kernel_size=3), nn.ReLU(),
            nn.Conv2d(150, 100, kernel_size=2), nn.ReLU(), nn.Flatten())
        self.logits_net = nn.Sequential(
            nn.Linear(num_classes, features_dim), nn.Flatten())
        in_dim = 100 * (grid - 3)**2 + batch * features_dim
        self.linear = nn.Sequential(nn.Linear(in_dim, features_dim), nn.ReLU())

    def forward(self, observations: Dict[str, Tensor]) -> Tensor:
        """Embed a batch of observations: (N, B, G, G), (N, B, K) -> (N, F).
        """
        return self.linear(
            torch.cat((self.saliency_net(observations['saliency']),
                       self.logits_net(observations['logits'])), 1))


class ExpSchedule:
    r"""The official ``exp_schedule``: :math:`lr = lr_0\, p^{0.9}`.

    ``p`` is stable-baselines3's ``progress_remaining`` (1 at the start,
    0 at ``total_timesteps``); clamped to [0, 1] here so that a run resumed
    with a longer schedule never gets a complex power.

    Args:
        initial_value (float): :math:`lr_0`.
        power (float): The exponent. Official: 0.9. Defaults to 0.9.
    """

    def __init__(self, initial_value: float, power: float = 0.9) -> None:
        self.initial_value = float(initial_value)
        self.power = float(power)

    def __call__(self, progress_remaining: float) -> float:
        p = min(max(float(progress_remaining), 0.0), 1.0)
        return self.initial_value * p**self.power

    def __repr__(self) -> str:
        return f'ExpSchedule({self.initial_value}, power={self.power})'


def _to_tensor(array: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(array).copy())


class RLMixAgent(nn.Module):
    """RL-Mix's PPO agent: the single owner of the agent's state.

    A submodule (``rl_agent``) of
    :class:`~mixplugins.classification.MixImageClassifier`, created when an
    :class:`~mixplugins.classification.RLMix` augment is configured, so that
    its state travels with mm checkpoints as ``rl_agent._extra_state``. It has
    **no** parameters or buffers of its own: the policy is not a registered
    submodule, so the classifier's optimizer, ``model.to()`` and DDP never
    see it; it is trained by its own Adam inside ``PPO.train()``.

    The policy is built at the first training step, when the per-GPU batch
    size B (its action space is ``MultiDiscrete([L] * B)`` and its first
    convolution has B input channels), the number of classes and the
    device are known; it lives on the inputs' device (the official agent
    runs on ``cuda``). A restored state waits until then.

    One call of :meth:`step` per training iteration: the transition of the
    previous iteration is completed with its reward (read from the mixed
    inputs' ``.grad`` that the optimizer's backward filled, see
    :meth:`record_mixed`) and added to the rollout buffer; when the buffer
    holds ``n_steps`` transitions, GAE is computed with the value of the
    current observation and ``PPO.train()`` runs (``n_epochs`` passes of
    ``n_steps / batch_size`` minibatches), then the buffer restarts. Then the
    policy samples this iteration's actions. A transition whose mixed inputs
    got no gradient (no backward ran) or a non-finite one (an AMP overflow
    step) has no reward and is dropped.

    Episodes: the official environment ends an episode with each epoch (no
    bootstrapping across it). Here a new episode starts when mmengine's
    ``epoch`` (read from ``MessageHub``) changes; under an iteration-based
    loop the whole run is one episode.

    Checkpoints: :meth:`get_extra_state` saves the policy and its optimiser,
    ``num_timesteps`` and ``n_updates`` (for the learning-rate schedule),
    the filled part of the rollout buffer and the pending transition with
    its reward, so a resumed run continues the same rollout. The buffer is
    at most ``n_steps * B * (G * G + K) * 4`` bytes (65.6 MB for the
    CIFAR-100 recipe). DDP: one agent per process, as the official
    (per-process) code; mmengine saves rank 0's state, so a resumed
    multi-process run restores rank 0's agent on every rank.

    Args:
        num_levels (int): L, the number of quantile levels (actions per
            image).
        agent_grid (int): G, the side of the observed saliency grid, >= 4.
            Defaults to 8.
        n_steps (int): Rollout length. Defaults to 1000.
        batch_size (int): PPO minibatch size (transitions). Defaults to 250.
        n_epochs (int): Passes over the rollout per update. Defaults to 10.
        agent_lr (float): Initial learning rate :math:`lr_0` of
            :class:`ExpSchedule`. Defaults to 1e-3.
        gamma (float): Discount. Defaults to 0.99.
        gae_lambda (float): GAE lambda. Defaults to 0.95.
        clip_range (float): PPO clip range. Defaults to 0.2.
        ent_coef (float): Entropy coefficient. Defaults to 0.0.
        total_timesteps (int, optional): Steps over which the learning rate
            decays to 0. Defaults to None: mmengine's ``max_iters``.
    """

    def __init__(self,
                 num_levels: int,
                 agent_grid: int = 8,
                 n_steps: int = 1000,
                 batch_size: int = 250,
                 n_epochs: int = 10,
                 agent_lr: float = 1e-3,
                 gamma: float = 0.99,
                 gae_lambda: float = 0.95,
                 clip_range: float = 0.2,
                 ent_coef: float = 0.0,
                 total_timesteps: Optional[int] = None) -> None:
        super().__init__()
        self.num_levels = int(num_levels)
        self.agent_grid = int(agent_grid)
        self.n_steps = int(n_steps)
        self.batch_size = int(batch_size)
        self.n_epochs = int(n_epochs)
        self.agent_lr = float(agent_lr)
        self.gamma = float(gamma)
        self.gae_lambda = float(gae_lambda)
        self.clip_range = float(clip_range)
        self.ent_coef = float(ent_coef)
        self.total_timesteps = total_timesteps
        # Not nn.Module attributes: PPO is a plain object, so its policy is
        # not registered as a submodule.
        self.ppo: Optional[PPO] = None
        self.batch_images: Optional[int] = None
        self.num_classes: Optional[int] = None
        self._restored: Optional[Dict[str, Any]] = None
        self._pending: Optional[Dict[str, Any]] = None
        self._epoch: Any = None
        self._started = False

    # ------------------------------------------------------------- build
    @property
    def built(self) -> bool:
        """Whether the policy exists (after the first training step)."""
        return self.ppo is not None

    @property
    def policy(self) -> nn.Module:
        """The stable-baselines3 policy (after the first training step)."""
        if self.ppo is None:
            raise RuntimeError('The RL-Mix policy is built at the first '
                               'training step')
        return self.ppo.policy

    def _check_batch(self, batch: int, source: str) -> None:
        if batch != self.batch_images:
            raise ValueError(
                f'RL-Mix: the policy is built for a per-GPU batch of '
                f'{self.batch_images} images (action space MultiDiscrete('
                f'[{self.num_levels}] * {self.batch_images}), one saliency '
                f'channel per image), but {source} has {batch}. Set '
                '`train_dataloader.drop_last=True` and keep the per-GPU '
                '`batch_size`; a resumed run must use the same per-GPU batch '
                'size (the same number of GPUs for the same total batch).')

    def _build(self, batch: int, num_classes: int,
               device: torch.device) -> None:
        grid = self.agent_grid
        obs_space = spaces.Dict(
            saliency=spaces.Box(0.0, 1.0, (batch, grid, grid), np.float32),
            logits=spaces.Box(-np.inf, np.inf, (batch, num_classes),
                              np.float32))
        action_space = spaces.MultiDiscrete([self.num_levels] * batch)
        # The policy is initialised from the global CPU RNG without
        # advancing it, so that building the agent lazily (or restoring it)
        # leaves the training's random stream as it is.
        with torch.random.fork_rng(devices=[]):
            ppo = self._make_ppo(obs_space, action_space, device)
        self.ppo = ppo
        self.batch_images, self.num_classes = batch, num_classes
        if self._restored is not None:
            state, self._restored = self._restored, None
            self._load(state)

    def _make_ppo(self, obs_space: spaces.Dict,
                  action_space: spaces.MultiDiscrete,
                  device: torch.device) -> PPO:
        ppo = PPO(
            'MultiInputPolicy',
            env=None,
            learning_rate=ExpSchedule(self.agent_lr),
            n_steps=self.n_steps,
            batch_size=self.batch_size,
            n_epochs=self.n_epochs,
            gamma=self.gamma,
            gae_lambda=self.gae_lambda,
            clip_range=self.clip_range,
            ent_coef=self.ent_coef,
            policy_kwargs=dict(
                features_extractor_class=SaliencyLogitsExtractor,
                features_extractor_kwargs=dict(features_dim=256),
                normalize_images=False),
            device=device,
            _init_setup_model=False)
        ppo.observation_space = obs_space
        ppo.action_space = action_space
        ppo.n_envs = 1
        ppo._setup_model()
        ppo.set_logger(Logger(folder=None, output_formats=[]))
        return ppo

    # ------------------------------------------------------------ acting
    def step(self, saliency: Tensor, logits: Tensor) -> Tensor:
        """One environment step: finish the previous transition, act.

        Args:
            saliency (Tensor): Observation, the sum-normalised clean saliency
                on the agent grid (B, G, G).
            logits (Tensor): Observation, the clean logits (B, K).

        Returns:
            Tensor: The action of every image, int64 (B,) on ``saliency``'s
            device: indices into the quantile levels.
        """
        batch, num_classes = logits.shape
        if not self.built:
            self._build(batch, num_classes, saliency.device)
        self._check_batch(batch, 'this batch')
        if num_classes != self.num_classes:
            raise ValueError(f'RL-Mix: the policy is built for '
                             f'{self.num_classes} classes, got logits with '
                             f'{num_classes}')
        device = self.ppo.device
        obs = dict(
            saliency=saliency.detach().float().to(device)[None],
            logits=logits.detach().float().to(device)[None])
        epoch = MessageHub.get_current_instance().get_info('epoch')
        episode_start = not self._started or epoch != self._epoch
        self._started, self._epoch = True, epoch
        with torch.autocast(device.type, enabled=False):
            self._finish_pending(obs, episode_start)
            policy = self.ppo.policy
            policy.set_training_mode(False)
            with torch.no_grad():
                actions, values, log_probs = policy(obs)
        self._pending = dict(
            obs={k: v.cpu().numpy()
                 for k, v in obs.items()},
            action=actions.cpu().numpy(),
            value=values,
            log_prob=log_probs,
            episode_start=episode_start,
            reward=None,
            mixed=None,
            clean=None)
        return actions[0].to(saliency.device)

    def record_mixed(self, mixed: Tensor, clean_cells: Tensor) -> None:
        """Remember this step's mixed inputs (a leaf that requires grad) and
        the clean saliency on the agent grid (not normalised); the reward is
        computed from ``mixed.grad`` once the training backward has run."""
        if self._pending is None:
            raise RuntimeError('record_mixed() must follow step()')
        self._pending['mixed'] = mixed
        self._pending['clean'] = clean_cells.detach()

    def _settle(self, pending: Optional[Dict[str, Any]]) -> None:
        """Turn the pending transition's mixed-input gradient into its
        reward (a float), if the backward has filled it."""
        if pending is None or pending['reward'] is not None:
            return
        mixed = pending['mixed']
        if mixed is None or mixed.grad is None:
            return
        with torch.no_grad():
            reward = float(saliency_similarity(pending['clean'], mixed.grad))
        pending['reward'] = reward
        pending['mixed'] = pending['clean'] = None
        if np.isfinite(reward):
            MessageHub.get_current_instance().update_scalar(
                'train/rlmix_reward', reward)

    def _finish_pending(self, next_obs: Dict[str, Tensor],
                        next_episode_start: bool) -> None:
        pending, self._pending = self._pending, None
        self._settle(pending)
        if pending is None or pending['reward'] is None or not np.isfinite(
                pending['reward']):
            # No backward reached the mixed inputs (or an AMP overflow step
            # gave a non-finite gradient): the transition has no reward and
            # is dropped.
            return
        ppo, buffer = self.ppo, self.ppo.rollout_buffer
        buffer.add(pending['obs'], pending['action'],
                   np.array([pending['reward']], dtype=np.float32),
                   np.array([pending['episode_start']], dtype=np.float32),
                   pending['value'], pending['log_prob'])
        ppo.num_timesteps += 1
        if buffer.full:
            with torch.no_grad():
                last_values = ppo.policy.predict_values(next_obs)
            buffer.compute_returns_and_advantage(
                last_values=last_values,
                dones=np.array([next_episode_start]))
            self._update()
            buffer.reset()

    def _update(self) -> None:
        """``PPO.train()`` on the full buffer, with the official learning
        rate ``agent_lr * progress_remaining ** 0.9``."""
        ppo = self.ppo
        total = self.total_timesteps
        if total is None:
            total = MessageHub.get_current_instance().get_info('max_iters')
        if not total:
            raise RuntimeError(
                'RL-Mix: the agent learning-rate schedule needs the run '
                'length; set RLMix `total_timesteps` (training iterations) '
                'when training outside an mmengine Runner')
        ppo._current_progress_remaining = min(
            max(1.0 - ppo.num_timesteps / float(total), 0.0), 1.0)
        with torch.enable_grad():
            ppo.train()
        hub = MessageHub.get_current_instance()
        values = ppo.logger.name_to_value
        for name in _LOGGED:
            key = f'train/{name}'
            if key in values:
                hub.update_scalar(f'train/rlmix_{name}', float(values[key]))
        ppo.logger.dump(step=ppo.num_timesteps)

    # ------------------------------------------------------ checkpoints
    def get_extra_state(self) -> Union[Dict[str, Any], Tensor]:
        """The agent's state (CPU tensors and Python scalars only).

        Before the first step, with nothing restored, an empty tensor:
        mmengine's ``Runner._init_model_weights`` broadcasts every
        ``state_dict()`` entry from rank 0 under DDP, which fails on an empty
        dict (and on anything that is not made of tensors).
        """
        if not self.built:
            return dict(self._restored) if self._restored else torch.zeros(0)
        self._settle(self._pending)
        ppo, buffer = self.ppo, self.ppo.rollout_buffer
        pos = buffer.pos
        pending = None
        if self._pending is not None and self._pending['reward'] is not None:
            p = self._pending
            pending = dict(
                obs={k: _to_tensor(v)
                     for k, v in p['obs'].items()},
                action=_to_tensor(p['action']),
                value=p['value'].detach().cpu().clone(),
                log_prob=p['log_prob'].detach().cpu().clone(),
                episode_start=bool(p['episode_start']),
                reward=float(p['reward']))
        return dict(
            version=_STATE_VERSION,
            batch_images=self.batch_images,
            num_classes=self.num_classes,
            num_levels=self.num_levels,
            agent_grid=self.agent_grid,
            n_steps=self.n_steps,
            policy={
                k: v.detach().cpu().clone()
                for k, v in ppo.policy.state_dict().items()
            },
            optimizer=_cpu_copy(ppo.policy.optimizer.state_dict()),
            num_timesteps=int(ppo.num_timesteps),
            n_updates=int(ppo._n_updates),
            buffer=dict(
                pos=int(pos),
                observations={
                    k: _to_tensor(v[:pos])
                    for k, v in buffer.observations.items()
                },
                actions=_to_tensor(buffer.actions[:pos]),
                rewards=_to_tensor(buffer.rewards[:pos]),
                episode_starts=_to_tensor(buffer.episode_starts[:pos]),
                values=_to_tensor(buffer.values[:pos]),
                log_probs=_to_tensor(buffer.log_probs[:pos])),
            pending=pending,
            epoch=self._epoch,
            started=self._started)

    def set_extra_state(self, state: Dict[str, Any]) -> None:
        """Restore :meth:`get_extra_state`; applied when the policy is
        built (at the first training step) if it is not built yet."""
        if not isinstance(state, dict) or not state:
            return  # the placeholder of an agent that had not acted yet
        for key in ('num_levels', 'agent_grid'):
            if state[key] != getattr(self, key):
                raise ValueError(
                    f'RL-Mix: the checkpoint\'s agent has {key}='
                    f'{state[key]}, the config has {getattr(self, key)}')
        if self.built:
            self._load(state)
        else:
            self._restored = dict(state)

    def _load(self, state: Dict[str, Any]) -> None:
        if state['batch_images'] != self.batch_images:
            raise ValueError(
                'RL-Mix: the checkpoint\'s agent was trained with a per-GPU '
                f'batch of {state["batch_images"]} images and this run has '
                f'{self.batch_images}: its policy cannot be reused. Resume '
                'with the same per-GPU batch size (the same number of GPUs '
                'for the same total batch), with drop_last=True.')
        if state['num_classes'] != self.num_classes:
            raise ValueError(f'RL-Mix: the checkpoint\'s agent has '
                             f'{state["num_classes"]} classes, this run '
                             f'{self.num_classes}')
        ppo = self.ppo
        ppo.policy.load_state_dict(state['policy'])
        ppo.policy.optimizer.load_state_dict(state['optimizer'])
        ppo.num_timesteps = int(state['num_timesteps'])
        ppo._n_updates = int(state['n_updates'])
        self._epoch = state['epoch']
        self._started = bool(state['started'])
        buffer = ppo.rollout_buffer
        buffer.reset()
        saved = state['buffer']
        pos = int(saved['pos'])
        if state['n_steps'] != self.n_steps and pos > 0:
            warnings.warn(f'RL-Mix: the checkpoint\'s rollout has n_steps='
                          f'{state["n_steps"]}, the config {self.n_steps}; '
                          'the rollout restarts')
            pos = 0
        for key, value in saved['observations'].items():
            buffer.observations[key][:pos] = value[:pos].numpy()
        for key in ('actions', 'rewards', 'episode_starts', 'values',
                    'log_probs'):
            getattr(buffer, key)[:pos] = saved[key][:pos].numpy()
        buffer.pos = pos
        self._pending = None
        pending = state.get('pending')
        if pending is not None:
            device = ppo.device
            self._pending = dict(
                obs={k: v.numpy()
                     for k, v in pending['obs'].items()},
                action=pending['action'].numpy(),
                value=pending['value'].to(device),
                log_prob=pending['log_prob'].to(device),
                episode_start=pending['episode_start'],
                reward=pending['reward'],
                mixed=None,
                clean=None)

    def extra_repr(self) -> str:
        return (f'num_levels={self.num_levels}, agent_grid={self.agent_grid}'
                f', n_steps={self.n_steps}, batch_size={self.batch_size}, '
                f'n_epochs={self.n_epochs}, agent_lr={self.agent_lr}, '
                f'built={self.built}')


def _cpu_copy(obj: Any) -> Any:
    if isinstance(obj, Tensor):
        return obj.detach().cpu().clone()
    if isinstance(obj, dict):
        return {k: _cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu_copy(v) for v in obj)
    return copy.deepcopy(obj)
