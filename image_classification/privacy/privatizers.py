"""Privatizers: what turns the clipped sum of a logical batch into a noisy one.

Each privatizer is shaped like an optax transformation, ``init(params) -> state`` and
``update(clipped_sum, state, key) -> (noisy_sum, state)``, with its state kept in the
TrainState (``TrainState.noise_state``) and so checkpointed and restored with it. The
one difference from optax: the step's noise key is an ARGUMENT of ``update``, derived
by the trainer from the run's secret base noise key and the step
(``noise.step_noise_key``). It is never closed over (the compilation cache must not
hold it) and never stored in the state (checkpoints must not let anyone regenerate the
noise). Normalising by the expected batch size is the caller's job (dp_step._update).

- ``GaussianPrivatizer`` (DP-SGD): clipped_sum + N(0, (sigma C)^2) per coordinate,
  through ``noise.add_noise``: the very operations DP-SGD always used. Stateless.
- ``BandMFPrivatizer`` (privacy/bandmf.py): banded matrix factorisation, correlated
  noise with a state (the previous b-1 draws).

``PRIVATIZERS`` maps the config's privacy.mechanism to the privatizer class (a module
registers its class with ``@register(name)``; privacy/__init__.py imports the modules,
so a new noise mechanism is one new module plus one import line there); each class
builds itself from the plan's public parameters (``create``), states the mechanism in a
sentence for the privacy report (``describe``) and picks the batch selection it is
accounted with (``accounted_selection``).

Secrecy of a stateful privatizer's state: it is the noise of earlier steps, which next
to neighbouring iterates would reveal noiseless gradient sums. So it is NEVER written:
checkpoints hold ``publishable(state)`` (the noise state zeroed), and a resume rebuilds
it with ``replay``, which re-draws the noise from the secret key (the state depends on
the draws only, never on the data).
"""
import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from image_classification.privacy import noise
from image_classification import registry

PyTree = Any

NORMALISED = 'normalised by the expected batch size'


# The config's choices of privacy.mechanism: name -> privatizer class.
PRIVATIZERS = registry.Registry('privatizer')
register = PRIVATIZERS.register


@register('dpsgd')
@dataclasses.dataclass(frozen=True)
class GaussianPrivatizer:
  """DP-SGD's Gaussian mechanism: independent N(0, stddev^2) noise at every step."""
  stddev: float

  uses_strategy = False  # no strategy matrix: num_bands is 1

  @classmethod
  def create(cls, *, noise_multiplier: float, clipping_norm: float, **unused):
    del unused
    return cls(noise_multiplier * clipping_norm)

  @staticmethod
  def describe(num_bands: int = 1) -> str:
    del num_bands
    return ('DP-SGD: per-example clipping to L2 norm C, Gaussian noise N(0, (sigma*C)^2) '
            f'added once per logical batch, {NORMALISED}')

  @staticmethod
  def accepts(sampler: type) -> bool:
    """Whether the privatizer can be accounted with the batch selection ``sampler``."""
    del sampler
    return True

  @staticmethod
  def accounted_selection(selection, num_bands: int = 1):
    """The batch selection the run draws and is accounted with: the config's own."""
    del num_bands
    return selection

  def init(self, params: PyTree):
    del params
    return ()

  def update(self, clipped_sum: PyTree, state, key: jax.Array):
    return noise.add_noise(clipped_sum, key, self.stddev), state


def publishable(state):
  """The TrainState as checkpoints hold it: the secret noise state zeroed."""
  return state.replace(noise_state=jax.tree_util.tree_map(jnp.zeros_like,
                                                          state.noise_state))


def replay(privatizer, params: PyTree, noise_key, steps: int):
  """The privatizer's state after ``steps`` steps, rebuilt from the secret noise key.

  Each step's update is run on a zero clipped sum with that step's key
  (noise.step_noise_key, as dp_step._update derives it): the state depends only on
  the draws, so this equals the state the run had. Cost: ``steps`` noise draws.
  """
  state = privatizer.init(params)
  if not jax.tree_util.tree_leaves(state) or steps == 0:
    return state
  zeros = jax.tree_util.tree_map(lambda x: jnp.zeros(jnp.shape(x), jnp.float32), params)

  @jax.jit
  def run(state, key):
    def body(t, s):
      return privatizer.update(zeros, s, noise.step_noise_key(key, t))[1]
    return jax.lax.fori_loop(0, steps, body, state)

  return run(state, jnp.asarray(noise_key))
