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
- ``BandMFPrivatizer`` (banded matrix factorisation, Choquette-Choo et al. 2023):
  step t adds ``sigma * C * (C_s^-1 Z)_t`` where Z_t ~ N(0, I) are independent draws
  (one per step, from the step's key, drawn exactly as DP-SGD draws its noise) and C_s
  is a lower-triangular b-banded Toeplitz strategy with columns normalised to L2 norm 1.
  The noise of step t is therefore correlated with the draws of the previous b-1 steps
  (the state keeps them). ``C_s^-1`` is jax-privacy's streaming implementation
  (``matrix_factorization.toeplitz.inverse_as_streaming_matrix``); the coefficients come
  from ``toeplitz.optimize_banded_toeplitz``. The mechanism is equivalent to releasing
  C_s x + sigma C Z (x the stream of clipped sums) followed by post-processing, so its
  sensitivity is the strategy's max column norm (1) per participation; with
  participations at least b steps apart (cyclic Poisson sampling,
  privacy/batch_selection.py) the accountant's event is jax-privacy's
  ``amplified_bandmf_event`` (``CyclicPoissonSampling.dp_event``).

``PRIVATIZERS`` maps the config's privacy.mechanism to the privatizer class; each class
builds itself from the plan's public parameters (``create``), states the mechanism in a
sentence for the privacy report (``describe``) and picks the batch selection it is
accounted with (``accounted_selection``).

Secrecy of the state: BandMF's state is the noise of the last b-1 steps (scaled):
together with neighbouring iterates it would reveal noiseless gradient sums. So it is
NEVER written: checkpoints hold ``publishable(state)`` (the noise state zeroed), and a
resume rebuilds it with ``replay``, which re-draws Z_0..Z_{t-1} from the secret key and
runs them through C_s^-1 (the state depends on the draws only, never on the data).
Checkpoints of a BandMF run are thus as publishable as DP-SGD's.

Why not ``jax_privacy.noise_addition.matrix_factorization_privatizer`` itself: its
state holds the PRNG key (it would end up in checkpoints and the train state) and it
draws Z with its own key schedule, so b = 1 could not reproduce DP-SGD's noise bit for
bit. We use the same streaming C^-1 it uses and feed it our secret, per-step keys.
"""
import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from image_classification.privacy import batch_selection
from image_classification.privacy import noise

PyTree = Any

OPTIMIZER_STEPS = 250

_NORMALISED = 'normalised by the expected batch size'


def _draws(tree: PyTree, key: jax.Array, stddev: float) -> PyTree:
  """stddev * N(0, I) shaped like ``tree``: the same keys and draws as noise.add_noise."""
  leaves, treedef = jax.tree_util.tree_flatten(tree)
  keys = jax.random.split(key, len(leaves))
  return jax.tree_util.tree_unflatten(
      treedef, [stddev * jax.random.normal(k, x.shape, x.dtype)
                for x, k in zip(leaves, keys)])


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
            f'added once per logical batch, {_NORMALISED}')

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


@dataclasses.dataclass(frozen=True)
class BandMFPrivatizer:
  """Correlated noise sigma*C * C_s^-1 Z of a column-normalised b-banded strategy.

  ``coefs``: the b Toeplitz coefficients of C_s (L2 norm 1); ``steps``: the run's
  number of steps (column normalisation is for an n = steps square matrix);
  ``stddev``: sigma * C * sensitivity, the std of each independent draw Z_t.
  The state is jax-privacy's streaming state of C_s^-1: the last b-1 outputs of the
  banded solve (one float32 copy of the parameters each) and the row index.
  """
  coefs: tuple
  steps: int
  stddev: float

  uses_strategy = True  # the plan fills in strategy_coefs (optimised, then cached)
  requirement = ("privacy.mechanism='bandmf' needs sampling='poisson' (cyclic Poisson "
                 'sampling; its amplified accounting has no fixed-size form)')

  @classmethod
  def create(cls, *, noise_multiplier: float, clipping_norm: float, steps: int,
             num_bands: int, strategy_coefs: tuple, strategy_sensitivity: float):
    """BandMF with b = 1 is DP-SGD: its strategy is the identity (coefficients [1]),
    so the Gaussian privatizer is used (same noise, no state)."""
    stddev = noise_multiplier * clipping_norm
    if num_bands == 1:
      return GaussianPrivatizer(stddev)
    if len(strategy_coefs) != num_bands:
      raise ValueError('the BandMF plan has no strategy; fill in its strategy first')
    return cls(tuple(strategy_coefs), steps, stddev * strategy_sensitivity)

  @staticmethod
  def describe(num_bands: int = 1) -> str:
    return (f'BandMF (banded matrix factorisation, b = {num_bands} bands): per-example '
            'clipping to L2 norm C; step t adds the noise sigma*C*sens * (C^-1 Z)_t, '
            "correlated with the previous b-1 steps' draws through the "
            'column-normalised b-banded Toeplitz strategy C (max column norm sens = 1); '
            'cyclic Poisson sampling: the examples are split into b groups, step t '
            f'samples group t mod b with rate q; {_NORMALISED}')

  @staticmethod
  def accepts(sampler: type) -> bool:
    return sampler is batch_selection.PoissonSampling

  @staticmethod
  def accounted_selection(selection, num_bands: int = 1):
    """Cyclic Poisson sampling over b groups, from the config's Poisson sampling."""
    if not isinstance(selection, batch_selection.PoissonSampling):
      raise ValueError(BandMFPrivatizer.requirement)
    return batch_selection.CyclicPoissonSampling(
        selection.dataset_size, selection.expected_batch_size, num_bands,
        seed=selection.seed)

  @property
  def num_bands(self) -> int:
    return len(self.coefs)

  def noising_matrix(self):
    from jax_privacy.matrix_factorization import toeplitz  # pylint: disable=g-import-not-at-top
    return toeplitz.inverse_as_streaming_matrix(
        jnp.asarray(self.coefs, jnp.float32), column_normalize_for_n=self.steps)

  def init(self, params: PyTree):
    abstract = jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(jnp.shape(x), jnp.float32), params)
    return self.noising_matrix().init_multiply(abstract)

  def update(self, clipped_sum: PyTree, state, key: jax.Array):
    z = _draws(clipped_sum, key, self.stddev)
    correlated, state = self.noising_matrix().multiply_next(z, state)
    noisy = jax.tree_util.tree_map(lambda x, n: (x + n).astype(x.dtype),
                                   clipped_sum, correlated)
    return noisy, state


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


# The config's choices of privacy.mechanism.
PRIVATIZERS = {'dpsgd': GaussianPrivatizer, 'bandmf': BandMFPrivatizer}


# ------------------------------------------------------------------ the strategy
def optimize_strategy(steps: int, bands: int,
                      optimizer_steps: int = OPTIMIZER_STEPS) -> np.ndarray:
  """jax-privacy's banded Toeplitz strategy for ``steps`` steps and ``bands`` bands,
  optimised for the mean squared error of the prefix sums (the SGD workload); the
  returned coefficients have L2 norm 1."""
  if bands == 1:
    return np.ones(1)
  from jax_privacy.matrix_factorization import toeplitz  # pylint: disable=g-import-not-at-top
  coefs = toeplitz.optimize_banded_toeplitz(n=steps, bands=bands,
                                            max_optimizer_steps=optimizer_steps)
  return np.asarray(coefs, np.float64)


def sensitivity(coefs, steps: int) -> float:
  """Max column L2 norm of the column-normalised strategy: 1 by construction (checked
  here from jax-privacy's sensitivity of the un-normalised matrix, whose columns all
  have norm at most ||coefs|| = 1)."""
  from jax_privacy.matrix_factorization import toeplitz  # pylint: disable=g-import-not-at-top
  raw = math.sqrt(float(toeplitz.sensitivity_squared(jnp.asarray(coefs), n=steps)))
  if not 0.999 < raw < 1.001:
    raise ValueError(f'strategy coefficients have norm {raw}, expected 1')
  return 1.0


def marginal_stds(coefs, steps: int, stddev: float) -> np.ndarray:
  """Per-coordinate std of the noise added at each step t = 0..steps-1 by the strategy
  ``coefs`` with draws of std ``stddev`` (sigma * C * sensitivity):
  stddev * ||row t of C_s^-1|| (stddev at every step for b = 1, DP-SGD)."""
  if len(coefs) <= 1:
    return np.full(steps, stddev)
  priv = BandMFPrivatizer(tuple(coefs), steps, stddev)
  rows = np.asarray(priv.noising_matrix().row_norms_squared(steps), np.float64)
  return stddev * np.sqrt(rows)
