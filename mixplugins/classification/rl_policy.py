r"""RL-Mix's policy pieces: the reward, the features extractor, the
learning-rate schedule and the environment-less ``PPO`` object.

Used by :class:`~mixplugins.classification.rl_agent.RLMixAgent` (see
:mod:`mixplugins.classification.rl_agent` for why stable-baselines3's pieces
and not ``PPO.learn()``). Needs the optional dependency stable-baselines3
(``pip install mixplugins[rl]``); imported lazily, with the agent.

Official code: https://github.com/minhlong94/Random-Mixup
(``policy_network.py``, ``environment.py``, ``main.py``).
"""
from typing import Any, Dict

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import Tensor, nn

from ..core.rmix import saliency_from_grad

__all__ = [
    'SaliencyLogitsExtractor', 'ExpSchedule', 'saliency_similarity',
    'PPO_DEFAULTS', 'make_ppo'
]

#: PPO hyper-parameters of the agent, with the official values as defaults.
#: Their types (int or float) are those of the defaults.
PPO_DEFAULTS: Dict[str, Any] = dict(
    n_steps=1000,
    batch_size=250,
    n_epochs=10,
    gamma=0.99,
    gae_lambda=0.95,
    clip_range=0.2,
    ent_coef=0.0)


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


def make_ppo(batch: int, num_classes: int, num_levels: int, grid: int,
             device: torch.device, agent_lr: float,
             ppo_kwargs: Dict[str, Any]) -> PPO:
    """stable-baselines3's ``PPO`` for RL-Mix, without an environment.

    Observations: ``saliency`` (B, G, G) in [0, 1] and ``logits`` (B, K);
    actions: ``MultiDiscrete([L] * B)``. The policy is
    ``MultiInputActorCriticPolicy`` with :class:`SaliencyLogitsExtractor`,
    the learning rate :class:`ExpSchedule`. As ``PPO.load()`` does, the
    spaces are set before ``_setup_model()`` (``env=None``); the logger
    writes nowhere (the agent copies its values to mmengine's log).

    Args:
        batch (int): B, images per (per-GPU) batch.
        num_classes (int): K.
        num_levels (int): L, quantile levels (actions per image).
        grid (int): G, the side of the saliency observation.
        device (torch.device): Device of the policy.
        agent_lr (float): Initial learning rate.
        ppo_kwargs (dict): The hyper-parameters of :data:`PPO_DEFAULTS`.

    Returns:
        PPO: The set-up ``PPO`` object, whose ``policy`` and
        ``rollout_buffer`` the agent drives.
    """
    ppo = PPO(
        'MultiInputPolicy',
        env=None,
        learning_rate=ExpSchedule(agent_lr),
        policy_kwargs=dict(
            features_extractor_class=SaliencyLogitsExtractor,
            features_extractor_kwargs=dict(features_dim=256),
            normalize_images=False),
        device=device,
        _init_setup_model=False,
        **ppo_kwargs)
    ppo.observation_space = spaces.Dict(
        saliency=spaces.Box(0.0, 1.0, (batch, grid, grid), np.float32),
        logits=spaces.Box(-np.inf, np.inf, (batch, num_classes), np.float32))
    ppo.action_space = spaces.MultiDiscrete([num_levels] * batch)
    ppo.n_envs = 1
    ppo._setup_model()
    ppo.set_logger(Logger(folder=None, output_formats=[]))
    return ppo
