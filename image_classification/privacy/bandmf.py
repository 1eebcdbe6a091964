"""Banded matrix factorisation (BandMF, Choquette-Choo et al. 2023): correlated noise.

``BandMFPrivatizer``: step t adds ``sigma * C * (C_s^-1 Z)_t`` where Z_t ~ N(0, I) are
independent draws (one per step, from the step's key, drawn exactly as DP-SGD draws its noise) and C_s
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

Secrecy of the state: BandMF's state is the noise of the last b-1 steps (scaled):
together with neighbouring iterates it would reveal noiseless gradient sums. So it is
NEVER written (privatizers.publishable / replay): checkpoints hold ``publishable(state)`` (the noise state zeroed), and a
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
from image_classification.privacy import privatizers

PyTree = Any

OPTIMIZER_STEPS = 250


def _draws(tree: PyTree, key: jax.Array, stddev: float) -> PyTree:
  """stddev * N(0, I) shaped like ``tree``: the same draws as noise.add_noise."""
  leaves, treedef = jax.tree_util.tree_flatten(tree)
  return jax.tree_util.tree_unflatten(
      treedef, [stddev * z for z in noise.standard_normals(leaves, key)])


@privatizers.register('bandmf')
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
      return privatizers.GaussianPrivatizer(stddev)
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
            f'samples group t mod b with rate q; {privatizers.NORMALISED}')

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
