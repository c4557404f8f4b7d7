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
from typing import Any, Dict, Optional

import numpy as np
import torch
from mmengine.logging import MessageHub
from stable_baselines3 import PPO
from torch import Tensor, nn

from .rl_policy import (PPO_DEFAULTS, ExpSchedule, SaliencyLogitsExtractor,
                        make_ppo, saliency_similarity)
from .rl_state import AgentStateMixin, new_transition

__all__ = [
    'SaliencyLogitsExtractor', 'ExpSchedule', 'RLMixAgent',
    'saliency_similarity'
]

#: Scalars of ``PPO.train()`` copied to mmengine's ``MessageHub`` (and so to
#: the training log) after every update, as ``train/rlmix_<name>``.
_LOGGED = ('learning_rate', 'policy_gradient_loss', 'value_loss',
           'entropy_loss', 'approx_kl', 'clip_fraction')


class RLMixAgent(AgentStateMixin, nn.Module):
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

    Checkpoints (:class:`~mixplugins.classification.rl_state.AgentStateMixin`):
    ``get_extra_state`` saves the policy and its optimiser,
    ``num_timesteps`` and ``n_updates`` (for the learning-rate schedule),
    the filled part of the rollout buffer and the pending transition with
    its reward, so a resumed run continues the same rollout. The buffer is
    at most ``n_steps * B * (G * G + K) * 4`` bytes (65.6 MB for the
    CIFAR-100 recipe). DDP: one agent per process, as the official
    (per-process) code; mmengine saves rank 0's state, so a resumed
    multi-process run restores rank 0's agent on every rank.

    The PPO hyper-parameters (``n_steps`` to ``ent_coef`` below) are
    keyword arguments, kept in :attr:`ppo_kwargs`.

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

    Attributes:
        ppo_kwargs (dict): ``n_steps``, ``batch_size``, ``n_epochs``,
            ``gamma``, ``gae_lambda``, ``clip_range``, ``ent_coef``, as given
            to ``PPO`` (defaults :data:`~.rl_policy.PPO_DEFAULTS`).
    """

    def __init__(self,
                 num_levels: int,
                 agent_grid: int = 8,
                 agent_lr: float = 1e-3,
                 total_timesteps: Optional[int] = None,
                 **ppo_kwargs: Any) -> None:
        super().__init__()
        unknown = sorted(set(ppo_kwargs) - set(PPO_DEFAULTS))
        if unknown:
            raise TypeError(f'RLMixAgent: unknown PPO arguments {unknown}; '
                            f'known: {sorted(PPO_DEFAULTS)}')
        self.num_levels = int(num_levels)
        self.agent_grid = int(agent_grid)
        self.agent_lr = float(agent_lr)
        self.total_timesteps = total_timesteps
        self.ppo_kwargs = {
            name: type(default)(ppo_kwargs.get(name, default))
            for name, default in PPO_DEFAULTS.items()
        }
        self.n_steps: int = self.ppo_kwargs['n_steps']
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
        # The policy is initialised from the global CPU RNG without
        # advancing it, so that building the agent lazily (or restoring it)
        # leaves the training's random stream as it is.
        with torch.random.fork_rng(devices=[]):
            ppo = make_ppo(batch, num_classes, self.num_levels,
                           self.agent_grid, device, self.agent_lr,
                           self.ppo_kwargs)
        self.ppo = ppo
        self.batch_images, self.num_classes = batch, num_classes
        if self._restored is not None:
            state, self._restored = self._restored, None
            self._load(state)

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
        self._pending = new_transition(
            {k: v.cpu().numpy()
             for k, v in obs.items()}, actions.cpu().numpy(), values,
            log_probs, episode_start)
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

    def extra_repr(self) -> str:
        kw = self.ppo_kwargs
        return (f'num_levels={self.num_levels}, agent_grid={self.agent_grid}'
                f', n_steps={self.n_steps}, batch_size={kw["batch_size"]}, '
                f'n_epochs={kw["n_epochs"]}, agent_lr={self.agent_lr}, '
                f'built={self.built}')

