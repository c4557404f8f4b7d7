r"""RL-Mix as an mmpretrain batch augment.

Proposed in `Expeditious Saliency-guided Mix-up through Random Gradient
Thresholding <https://arxiv.org/abs/2212.04875>`_ (Luu et al., AAAI'23
Practical-DL workshop); official code:
https://github.com/minhlong94/Random-Mixup (``--method rlmix``).

RL-Mix is R-Mix whose per-image quantile level is chosen by a PPO agent
(stable-baselines3, an optional dependency: ``pip install mixplugins[rl]``)
instead of uniformly at random. The agent, its rollout buffer and its
optimiser live in :class:`~mixplugins.classification.rl_agent.RLMixAgent`,
owned by :class:`~mixplugins.classification.MixImageClassifier` as
``rl_agent`` (so they are saved in mm checkpoints).

How the reward gets its gradient without an extra backward: the augment
returns the mixed batch as a leaf tensor that requires grad and hands it to
the agent. mmengine's ``OptimWrapper.update_params`` then runs the usual
training backward, which also fills that leaf's ``.grad`` (the input
gradient of the mixed pass, as the official ``Variable(mixed_inputs,
requires_grad=True)``); the optimizer only touches parameters, so the
gradient survives until the next training step, whose augment call turns it
into the reward of the previous step -- the order of the official
environment, whose reward for step t is computed after step t's backward.
"""
import importlib
import math
from types import ModuleType
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmpretrain.registry import BATCH_AUGMENTS
from torch import Tensor, nn

from ..core.rmix import (check_grids, grid_masks, mix_by_masks,
                         sample_rmix_params, saliency_from_grad)
from .rmix import RMix

__all__ = ['RLMix', 'import_rl_agent']

_EXTRA_HINT = ('RLMix needs the optional dependencies stable-baselines3 and '
               'gymnasium: `pip install mixplugins[rl]` (or `pip install '
               '"stable-baselines3>=2.3" "gymnasium>=0.29"`)')


def import_rl_agent() -> ModuleType:
    """Import :mod:`mixplugins.classification.rl_agent` (and with it
    stable-baselines3); raise an ``ImportError`` naming the ``rl`` extra
    when the dependency is missing."""
    try:
        importlib.import_module('stable_baselines3')
        importlib.import_module('gymnasium')
    except ImportError as e:
        raise ImportError(f'{_EXTRA_HINT} ({e})') from e
    return importlib.import_module(f'{__package__}.rl_agent')


def _check_int(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or \
            value < minimum:
        raise ValueError(f'`{name}` must be an int >= {minimum}, got '
                         f'{value!r}')
    return value


def _check_float(name: str, value: float, low: float, high: float,
                 low_open: bool = False) -> float:
    ok = not isinstance(value, bool) and isinstance(
        value, (int, float)) and math.isfinite(value)
    if ok:
        ok = (low < value if low_open else low <= value) and value <= high
    if not ok:
        bracket = '(' if low_open else '['
        closing = ')' if high == math.inf else ']'
        raise ValueError(f'`{name}` must be a number in {bracket}{low}, '
                         f'{high}{closing}, got {value!r}')
    return float(value)


@BATCH_AUGMENTS.register_module()
class RLMix(RMix):
    r"""RL-Mix: R-Mix with per-image quantile levels chosen by PPO.

    Every step, as :class:`~mixplugins.classification.RMix`, the clean pass
    gives the saliency (input gradient of the cross-entropy) and the clean
    logits. The agent observes ``saliency``: the saliency average-pooled to
    ``agent_grid x agent_grid`` cells and normalised to sum 1 per image
    (B, G, G), and ``logits``: the clean logits (B, K); its action picks one
    of the ``quantile_levels`` for every image (``MultiDiscrete([L] * B)``).
    The masks and the mix are R-Mix's, on a grid drawn from ``mix_grids``.
    Reward (computed at the next step, see the module docstring): the cosine
    similarity of the clean saliency on the agent grid (not normalised) and
    the mixed inputs' saliency pooled the same way, both flattened over the
    whole batch (``rl_agent.saliency_similarity``).

    PPO (stable-baselines3's ``PPO.train()``, ``MultiInputPolicy`` with
    :class:`~mixplugins.classification.rl_agent.SaliencyLogitsExtractor` and
    the default [64, 64] policy and value heads) with the official settings:
    rollouts of ``n_steps=1000`` iterations, minibatches of 250,
    ``n_epochs=10`` (the official ``agent_epochs=15`` is never passed to
    PPO), learning rate ``agent_lr * progress_remaining ** 0.9`` (the
    official ``exp_schedule``), the other settings stable-baselines3's
    defaults. The official ``exp_schedule(args.agent_lr)`` reads an argument
    that ``parse_args.py`` does not define (``main.py --method rlmix``
    crashes); 1e-3 is the value the fork minhrongcon2000/Random-Mixup uses.

    Grids: the official default (``use_random_patches=True``) thresholds a
    random 2x2 / 4x4 grid although the agent sees the 8x8 grid; the paper
    does not say which the reported run used. ``mix_grids=(2, 4)`` is that
    default; ``mix_grids=(8,)`` (``--use_random_patches False``) mixes on the
    observed grid.

    The policy's first convolution has one input channel per image and its
    action space one action per image, so the per-GPU batch size must not
    change: use ``drop_last=True`` (checked at
    every step, and when resuming). Under DDP each process has its own agent
    (as the official per-process code).

    Needs ``model.type='MixImageClassifier'``, which runs the clean pass and
    owns the agent (``rl_agent``).

    Args:
        alpha (float): Beta concentration of :math:`\lambda`. Official
            (CIFAR): 1.0. Defaults to 1.0.
        mix_grids (Sequence[int]): Mixing grid sizes, one drawn per batch;
            each must be <= min(H, W) of the images. Defaults to (2, 4).
        agent_grid (int): Side of the observed (and rewarded) saliency grid,
            >= 4 (the policy's convolutions need 4). Official: 8 (32 px
            images, 4 px cells). Defaults to 8.
        quantile_levels (Sequence[float], optional): The actions' quantile
            levels in [0, 1]. Defaults to None, the official
            ``linspace(0, 0.99, 10)``.
        partner (str): ``'randperm'`` or ``'flip'``. Defaults to
            ``'randperm'``.
        saliency_bn (str): BatchNorm mode of the clean pass, ``'train'``
            (official) or ``'eval'``. Defaults to ``'train'``.
        clean_loss_weight (float): Weight of the clean-pass cross-entropy
            added to the loss (official CIFAR: 0). Defaults to 0.0.
        n_steps (int): PPO rollout length, in training iterations. Official
            ``agent_trajectory_size``: 1000. Defaults to 1000.
        batch_size (int): PPO minibatch size in transitions, 2 <= batch_size
            <= n_steps. Official ``agent_batch_size``: 250. Defaults to 250.
        n_epochs (int): Passes over each rollout. Defaults to 10.
        agent_lr (float): Initial agent learning rate. Defaults to 1e-3.
        gamma (float): Discount factor. Defaults to 0.99.
        gae_lambda (float): GAE lambda. Defaults to 0.95.
        clip_range (float): PPO clip range. Defaults to 0.2.
        ent_coef (float): Entropy coefficient. Defaults to 0.0.
        total_timesteps (int, optional): Iterations over which the agent
            learning rate decays to 0 (official: all training iterations,
            300 x 500). Defaults to None, mmengine's ``max_iters``.
    """

    #: The name of :attr:`grids` in the constructor (for error messages).
    _grids_arg = 'mix_grids'

    def __init__(self,
                 alpha: float = 1.0,
                 mix_grids: Sequence[int] = (2, 4),
                 agent_grid: int = 8,
                 quantile_levels: Optional[Sequence[float]] = None,
                 partner: str = 'randperm',
                 saliency_bn: str = 'train',
                 clean_loss_weight: float = 0.0,
                 n_steps: int = 1000,
                 batch_size: int = 250,
                 n_epochs: int = 10,
                 agent_lr: float = 1e-3,
                 gamma: float = 0.99,
                 gae_lambda: float = 0.95,
                 clip_range: float = 0.2,
                 ent_coef: float = 0.0,
                 total_timesteps: Optional[int] = None) -> None:
        try:
            mix_grids = check_grids(mix_grids)
        except ValueError as e:
            raise ValueError(str(e).replace('`grids`', '`mix_grids`')) from e
        super().__init__(
            alpha=alpha,
            grids=mix_grids,
            quantile_levels=quantile_levels,
            partner=partner,
            saliency_bn=saliency_bn,
            clean_loss_weight=clean_loss_weight)
        self.agent_grid = _check_int('agent_grid', agent_grid, 4)
        self.n_steps = _check_int('n_steps', n_steps, 2)
        self.batch_size = _check_int('batch_size', batch_size, 2)
        if self.batch_size > self.n_steps:
            raise ValueError(f'`batch_size` (PPO minibatch, {batch_size}) '
                             f'must be <= `n_steps` ({n_steps})')
        self.n_epochs = _check_int('n_epochs', n_epochs, 1)
        self.agent_lr = _check_float('agent_lr', agent_lr, 0.0, float('inf'),
                                     low_open=True)
        self.gamma = _check_float('gamma', gamma, 0.0, 1.0)
        self.gae_lambda = _check_float('gae_lambda', gae_lambda, 0.0, 1.0)
        self.clip_range = _check_float('clip_range', clip_range, 0.0,
                                       float('inf'), low_open=True)
        self.ent_coef = _check_float('ent_coef', ent_coef, 0.0, float('inf'))
        if total_timesteps is not None:
            _check_int('total_timesteps', total_timesteps, 1)
        self.total_timesteps = total_timesteps
        # Fails here, at build time, when stable-baselines3 is missing.
        import_rl_agent()

    @property
    def mix_grids(self) -> Tuple[int, ...]:
        """The mixing grid sizes (``grids`` of the R-Mix parent)."""
        return self.grids

    def build_agent(self) -> nn.Module:
        """The agent owner that the classifier registers as ``rl_agent``."""
        return import_rl_agent().RLMixAgent(
            num_levels=len(self.quantile_levels),
            agent_grid=self.agent_grid,
            n_steps=self.n_steps,
            batch_size=self.batch_size,
            n_epochs=self.n_epochs,
            agent_lr=self.agent_lr,
            gamma=self.gamma,
            gae_lambda=self.gae_lambda,
            clip_range=self.clip_range,
            ent_coef=self.ent_coef,
            total_timesteps=self.total_timesteps)

    def clean_pass(self, inputs: Tensor,
                   labels: Tensor) -> Tuple[Tensor, Tensor]:
        """Run the clean pass on the bound model.

        Returns:
            tuple[Tensor, Tensor]: The saliency (B, H, W) and the detached
            clean logits (B, K).
        """
        model = self.model
        x = inputs.detach().requires_grad_(True)
        with torch.enable_grad(), model.bn_mode(self.saliency_bn):
            logits = model(x, mode='tensor')
            loss = F.cross_entropy(logits.float(), labels)
            keep_graph = self.clean_loss_weight > 0
            (grad, ) = torch.autograd.grad(loss, x, retain_graph=keep_graph)
        if keep_graph:
            model.add_step_loss('loss_clean', self.clean_loss_weight * loss)
        return saliency_from_grad(grad), logits.detach()

    def observe(self, saliency: Tensor) -> Tuple[Tensor, Tensor]:
        """The agent-grid saliency (B, G, G) in float32: normalised to sum 1
        per image (the observation; an all-zero map stays zero) and as is
        (the reward's reference)."""
        cells = F.adaptive_avg_pool2d(saliency.float()[:, None],
                                      self.agent_grid)[:, 0]
        total = cells.sum((1, 2), keepdim=True)
        return cells / total.clamp_min(torch.finfo(cells.dtype).tiny), cells

    def __call__(self, batch_inputs: Tensor,
                 batch_scores: Tensor) -> Tuple[Tensor, Tensor]:
        """Mix a batch with the agent's quantile levels.

        Args:
            batch_inputs (Tensor): Normalised images (B, C, H, W).
            batch_scores (Tensor): One-hot (or soft) scores (B, K); the
                clean pass uses their argmax as the label.

        Returns:
            tuple[Tensor, Tensor]: The mixed images -- a leaf tensor that
            requires grad, so that the training backward gives the reward's
            gradient -- and the mixed scores.
        """
        self._check_batch(batch_inputs, batch_scores)
        agent = getattr(self.model, 'rl_agent', None)
        if agent is None:
            raise RuntimeError(
                'RLMix needs the agent owned by MixImageClassifier '
                '(`rl_agent`); build the model with this augment in '
                '`train_cfg.augments`')
        scores = batch_scores.float()
        saliency, logits = self.clean_pass(batch_inputs, scores.argmax(1))
        observation, cells = self.observe(saliency)
        actions = agent.step(observation, logits)
        levels = torch.tensor(self.quantile_levels, dtype=torch.float32,
                              device=batch_inputs.device)
        params = sample_rmix_params(
            batch_inputs.shape[0],
            alpha=self.alpha,
            grids=self.grids,
            quantile_levels=self.quantile_levels,
            partner=self.partner,
            device=batch_inputs.device)
        masks = grid_masks(saliency, params.grid, levels[actions])
        mixed, targets = mix_by_masks(batch_inputs, scores, masks,
                                      params.index, params.lam)
        mixed = mixed.detach().requires_grad_(True)
        agent.record_mixed(mixed, cells)
        return mixed, targets
