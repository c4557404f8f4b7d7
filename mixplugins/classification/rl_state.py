"""The checkpoint state of RL-Mix's agent (policy, optimiser, rollout).

:class:`AgentStateMixin` gives
:class:`~mixplugins.classification.rl_agent.RLMixAgent` its
``get_extra_state`` / ``set_extra_state``: the policy and its optimiser,
``num_timesteps`` and ``n_updates`` (for the learning-rate schedule), the
filled part of the rollout buffer and the pending transition with its
reward, as CPU tensors and Python scalars, so that a resumed run continues
the same rollout. :func:`new_transition` is the one layout of a pending
transition.
"""
import copy
import warnings
from typing import Any, Dict, Optional, Union

import numpy as np
import torch
from torch import Tensor

__all__ = ['AgentStateMixin', 'new_transition', 'STATE_VERSION']

STATE_VERSION = 1

#: Per-step arrays of stable-baselines3's ``DictRolloutBuffer`` (besides
#: ``observations``) that a checkpoint keeps.
_BUFFER_FIELDS = ('actions', 'rewards', 'episode_starts', 'values',
                  'log_probs')


def new_transition(obs: Dict[str, np.ndarray],
                   action: np.ndarray,
                   value: Tensor,
                   log_prob: Tensor,
                   episode_start: bool,
                   reward: Optional[float] = None) -> Dict[str, Any]:
    """A pending transition: what the policy saw and did, its value and
    log-probability on the policy's device, and its reward once known.

    ``mixed`` (the mixed inputs whose ``.grad`` gives the reward) and
    ``clean`` (the clean saliency on the agent grid) are filled by
    ``RLMixAgent.record_mixed``.
    """
    return dict(obs=obs, action=action, value=value, log_prob=log_prob,
                episode_start=episode_start, reward=reward, mixed=None,
                clean=None)


def _to_tensor(array: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(array).copy())


def _cpu_copy(obj: Any) -> Any:
    if isinstance(obj, Tensor):
        return obj.detach().cpu().clone()
    if isinstance(obj, dict):
        return {k: _cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu_copy(v) for v in obj)
    return copy.deepcopy(obj)


class AgentStateMixin:
    """``get_extra_state`` / ``set_extra_state`` of the RL-Mix agent.

    Relies on the agent's ``ppo``, ``built``, ``_settle``, ``_pending``,
    ``_restored``, ``_epoch``, ``_started`` and its configuration
    attributes.
    """

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
        saved_buffer = {
            key: _to_tensor(getattr(buffer, key)[:pos])
            for key in _BUFFER_FIELDS
        }
        saved_buffer['pos'] = int(pos)
        saved_buffer['observations'] = {
            k: _to_tensor(v[:pos])
            for k, v in buffer.observations.items()
        }
        return dict(
            version=STATE_VERSION,
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
            buffer=saved_buffer,
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
        for key in _BUFFER_FIELDS:
            getattr(buffer, key)[:pos] = saved[key][:pos].numpy()
        buffer.pos = pos
        self._pending = None
        pending = state.get('pending')
        if pending is not None:
            self._pending = new_transition(
                {k: v.numpy()
                 for k, v in pending['obs'].items()},
                pending['action'].numpy(), pending['value'].to(ppo.device),
                pending['log_prob'].to(ppo.device), pending['episode_start'],
                pending['reward'])
