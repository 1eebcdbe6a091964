"""Epsilon checked against references that do not rebuild the dp-accounting event the
code builds, so a wrong modelling choice (sampling rate, neighbouring relation, the
noise multiplier handed to the accountant) fails here even if it is self-consistent:

- no subsampling (q = 1): the exact privacy curve of the Gaussian mechanism in closed
  form (Balle & Wang 2018, "Improving the Gaussian mechanism", Theorem 8); T steps of
  noise sigma compose to one Gaussian mechanism with sigma / sqrt(T);
- Poisson subsampling, one step: the hockey-stick divergence between N(0, s^2) and
  (1 - q) N(0, s^2) + q N(1, s^2), both directions, integrated numerically;
- Poisson subsampling, T steps: the Renyi divergence of the sampled Gaussian by
  numerical integration at integer orders (Mironov, Talwar & Zhang 2019, both
  directions), composed additively and converted with Prop. 12 of Canonne, Kamath &
  Steinke 2020; plus the published De et al. 2022 value (tests/privacy/test_accounting.py);
- fixed-size batches (sampling without replacement, replace-one): Theorem 9 of Wang,
  Balle & Kasiviswanathan 2019 ("Subsampled Renyi DP and analytical moments
  accountant") at integer orders, for the Gaussian with sensitivity 2C, i.e. noise
  ratio sigma / 2, written out here from the paper. dp-accounting uses the same
  paper's tighter Theorem 27 for Gaussians, so ours is 5-25% below this bound in the
  cases tested; handing the accountant sigma instead of sigma / 2 halves it.
The references at integer orders only are upper bounds of dp-accounting's RDP result
(which also uses fractional orders) and within a few percent of it.
"""
import math

import numpy as np
import pytest
from scipy import special
from scipy import stats

from image_classification.privacy import accounting
from image_classification.privacy import batch_selection as bs

def _epsilon(selection, sigma, steps, delta, accountant):
  return accounting.epsilon(selection.dp_event(sigma, steps), delta, accountant,
                            selection.neighboring_relation)


ORDERS = list(range(2, 33)) + list(range(34, 64, 3)) + [128, 256]


def _gaussian_delta(eps, s):
  """Balle & Wang 2018, Thm 8: delta(eps) of the Gaussian mechanism, sensitivity 1,
  noise std s."""
  return (stats.norm.cdf(0.5 / s - eps * s)
          - math.exp(eps) * stats.norm.cdf(-0.5 / s - eps * s))


def _solve_eps(delta_of_eps, delta, hi=100.0):
  lo = 0.0
  if delta_of_eps(0.0) <= delta:
    return 0.0
  for _ in range(60):
    mid = 0.5 * (lo + hi)
    if delta_of_eps(mid) > delta:
      lo = mid
    else:
      hi = mid
  return hi


def _grid(s, extra=0.0):
  return np.linspace(-25 * s - 1, 25 * s + 1 + extra, 60001)


def _poisson_one_step_delta(eps, q, s):
  """max over both directions of the hockey-stick divergence, by quadrature."""
  z = _grid(s)
  dz = z[1] - z[0]
  p0 = stats.norm.pdf(z, 0, s)
  mix = (1 - q) * p0 + q * stats.norm.pdf(z, 1, s)
  remove = np.sum(np.maximum(mix - math.exp(eps) * p0, 0)) * dz
  add = np.sum(np.maximum(p0 - math.exp(eps) * mix, 0)) * dz
  return max(remove, add)


def _sampled_gaussian_rdp(alpha, q, s):
  """RDP of the Poisson-sampled Gaussian at integer order alpha, both directions, by
  numerical integration in log space."""
  z = _grid(s, extra=alpha)
  dz = z[1] - z[0]
  log_p0 = stats.norm.logpdf(z, 0, s)
  log_p1 = stats.norm.logpdf(z, 1, s)
  log_mix = np.logaddexp(np.log1p(-q) + log_p0, np.log(q) + log_p1) if q < 1 else log_p1
  a = special.logsumexp(alpha * log_mix + (1 - alpha) * log_p0) + math.log(dz)
  b = special.logsumexp(alpha * log_p0 + (1 - alpha) * log_mix) + math.log(dz)
  return max(a, b) / (alpha - 1)


def _rdp_to_eps(orders, rdp, delta):
  """Canonne, Kamath & Steinke 2020, Prop. 12 (also Asoodeh et al. 2020)."""
  return min(r + math.log1p(-1 / a) - math.log(delta * a) / (a - 1)
             for a, r in zip(orders, rdp))


def _wor_gaussian_rdp(alpha, gamma, s):
  """Wang, Balle & Kasiviswanathan 2019, Thm 9, for a Gaussian with noise ratio s
  (eps(j) = j / (2 s^2), eps(inf) = inf so min{2, (e^eps(inf) - 1)^j} = 2)."""
  def eps_of(j):
    return j / (2 * s * s)

  def log_binom(n, k):
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)

  terms = [0.0,
           2 * math.log(gamma) + log_binom(alpha, 2)
           + min(math.log(4) + math.log(math.expm1(eps_of(2))), math.log(2) + eps_of(2))]
  terms += [j * math.log(gamma) + log_binom(alpha, j) + (j - 1) * eps_of(j) + math.log(2)
            for j in range(3, alpha + 1)]
  return special.logsumexp(terms) / (alpha - 1)


@pytest.mark.parametrize('sigma,steps', [(1.0, 1), (2.0, 10), (5.0, 100)])
def test_no_subsampling_matches_the_analytic_gaussian(sigma, steps):
  delta = 1e-5
  exact = _solve_eps(lambda e: _gaussian_delta(e, sigma / math.sqrt(steps)), delta)
  everyone = bs.PoissonSampling(1000, 1000)  # q = 1
  assert _epsilon(everyone, sigma, steps, delta, 'pld') == pytest.approx(exact, rel=5e-3)
  rdp_eps = _epsilon(everyone, sigma, steps, delta, 'rdp')
  assert exact < rdp_eps < 1.5 * exact  # RDP: an upper bound, not far off


@pytest.mark.parametrize('sigma,n,b', [(1.0, 1000, 100), (0.8, 500, 50), (2.0, 60, 30)])
def test_poisson_one_step_matches_numerical_hockey_stick(sigma, n, b):
  delta = 1e-5
  exact = _solve_eps(lambda e: _poisson_one_step_delta(e, b / n, sigma), delta)
  assert _epsilon(bs.PoissonSampling(n, b), sigma, 1, delta, 'pld') == pytest.approx(
      exact, rel=5e-3)


@pytest.mark.parametrize('sigma,n,b,steps', [(10.0, 50000, 4096, 875),
                                             (1.1, 60000, 256, 2000),
                                             (2.0, 1437, 128, 50)])
def test_poisson_rdp_matches_numerical_renyi_divergence(sigma, n, b, steps):
  delta = 1e-5
  rdp = [steps * _sampled_gaussian_rdp(a, b / n, sigma) for a in ORDERS]
  reference = _rdp_to_eps(ORDERS, rdp, delta)
  ours = _epsilon(bs.PoissonSampling(n, b), sigma, steps, delta, 'rdp')
  assert reference * 0.97 < ours <= reference * (1 + 1e-6)
  # PLD is tighter than any RDP bound, but not by much in these regimes.
  pld_eps = _epsilon(bs.PoissonSampling(n, b), sigma, steps, delta, 'pld')
  assert 0.6 * reference < pld_eps < reference


@pytest.mark.parametrize('sigma,n,b,steps', [(4.0, 10000, 500, 200),
                                             (8.0, 50000, 4096, 500)])
def test_fixed_size_matches_wang_balle_kasiviswanathan(sigma, n, b, steps):
  delta = 1e-5
  rdp = [steps * _wor_gaussian_rdp(a, b / n, sigma / 2) for a in ORDERS]
  reference = _rdp_to_eps(ORDERS, rdp, delta)
  ours = _epsilon(bs.FixedSizeSampling(n, b), sigma, steps, delta, 'rdp')
  assert reference * 0.75 < ours <= reference * (1 + 1e-6)
