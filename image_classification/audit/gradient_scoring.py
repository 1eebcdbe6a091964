"""Membership scores of gradient canaries, from the privatized updates (white-box).

The step reports, at every step t, the privatized gradient at each canary's
coordinate; times the public expected batch size B this is

    x_t = (real data's clipped sum at that coordinate) + c_t + noise_t,

with c_t = C when the canary was sampled at step t (included canaries, with
probability q) and 0 otherwise, and noise_t ~ N(0, s_t^2) (s_t = sigma C for DP-SGD;
BandMF's noise is correlated across steps, with marginal std s_t). Scores:

* 'llr': the log-likelihood ratio of "included" vs "excluded" for independent steps,
  sum_t log(1 - q + q exp((x_t C - C^2 / 2) / s_t^2)). For DP-SGD without the real
  data's term it is the optimal (Neyman-Pearson) test of one canary, and it uses the
  subsampling: one step where the canary was sampled counts more than many small
  shifts. For DP-SGD the strongest of the three where single steps stand out of the
  noise (eps 8 on the quickstart), level with 'sum' at small epsilon; with BandMF's
  correlated noise 'sum' does better (results/audit.md).
* 'sum': sum_t x_t, the correlation with the canary direction over the run.
* 'last_iterate': how far the final parameters moved against the canary direction,
  theta_0 - theta_T at its coordinate (the only white-box view that needs no access
  to the updates; weakest: the optimiser's later steps and the noise of all steps
  pile up).

Validity needs only that the scores do not look at the membership bits; nothing here
reads them. The scores use the PLANNED q, sigma, C (public): if the run is not what
the plan says, they are merely less powerful, never invalid.
"""

from __future__ import annotations

import numpy as np


def llr_scores(observations: np.ndarray, sampling_rate: float, noise_std,
               clipping_norm: float) -> np.ndarray:
  """Per-step likelihood-ratio scores.

  Args:
    observations: [T, m] x_t per step and canary, in clipped-sum units.
    sampling_rate: q, the planned probability that an included canary is sampled.
    noise_std: s_t, a scalar or [T] (per step), in clipped-sum units.
    clipping_norm: C, the planned contribution of a sampled canary.

  Returns:
    [m] float64 scores.
  """
  x = np.asarray(observations, np.float64)
  if x.ndim != 2:
    raise ValueError(f'observations must be [steps, canaries], got {x.shape}')
  q, c = float(sampling_rate), float(clipping_norm)
  if not 0 < q <= 1:
    raise ValueError(f'sampling_rate must be in (0, 1], got {q}')
  s = np.broadcast_to(np.asarray(noise_std, np.float64).reshape(-1, 1)
                      if np.ndim(noise_std) else np.float64(noise_std), x.shape)
  shift = (x * c - 0.5 * c * c) / (s * s)
  if q == 1.0:
    return shift.sum(axis=0)
  return np.logaddexp(np.log1p(-q), np.log(q) + shift).sum(axis=0)


def sum_scores(observations: np.ndarray) -> np.ndarray:
  """[m] sum over steps of x_t."""
  return np.asarray(observations, np.float64).sum(axis=0)


def last_iterate_scores(initial: np.ndarray, final: np.ndarray) -> np.ndarray:
  """[m] theta_0 - theta_T at each canary's coordinate (descent moves against it)."""
  return np.asarray(initial, np.float64) - np.asarray(final, np.float64)


def top_k_correct(scores: np.ndarray, included: np.ndarray, num_guesses: int) -> int:
  """How many of the ``num_guesses`` highest scores are included canaries.

  Ties are broken by canary index (a stable sort), which does not depend on the
  membership bits; a non-finite score ranks lowest."""
  scores = np.where(np.isfinite(scores), np.asarray(scores, np.float64), -np.inf)
  order = np.argsort(-scores, kind='stable')
  return int(np.asarray(included, bool)[order[:int(num_guesses)]].sum())
