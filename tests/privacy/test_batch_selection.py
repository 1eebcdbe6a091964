"""Batch selections: the batch distribution the accountant assumes is the one we draw,
and each selection's dp-accounting event is the reference event for its draws."""
import dp_accounting
from dp_accounting import rdp
from jax_privacy.experimental import accounting as jp_accounting
import numpy as np
import pytest

from image_classification.privacy import accounting
from image_classification.privacy import batch_selection as bs


def test_poisson_sizes_follow_the_binomial():
  s = bs.PoissonSampling(dataset_size=2000, expected_batch_size=200, seed=3)
  sizes = np.array([len(s.indices(t)) for t in range(400)])
  assert sizes.mean() == pytest.approx(200, rel=0.03)
  # Binomial(2000, 0.1) has std sqrt(180) ~ 13.4.
  assert sizes.std() == pytest.approx(np.sqrt(2000 * 0.1 * 0.9), rel=0.15)


def test_poisson_membership_is_independent_per_example():
  s = bs.PoissonSampling(dataset_size=50, expected_batch_size=10, seed=0)
  counts = np.zeros(50)
  for t in range(2000):
    idx = s.indices(t)
    assert len(np.unique(idx)) == len(idx)
    counts[idx] += 1
  # Every example is included with probability q = 0.2 at every step.
  assert np.all(np.abs(counts / 2000 - 0.2) < 0.05)


def test_draws_depend_only_on_seed_and_step():
  a = bs.PoissonSampling(1000, 100, seed=1)
  b = bs.PoissonSampling(1000, 100, seed=1)
  c = bs.PoissonSampling(1000, 100, seed=2)
  np.testing.assert_array_equal(a.indices(17), b.indices(17))
  assert not np.array_equal(a.indices(17), c.indices(17))
  assert not np.array_equal(a.indices(17), a.indices(18))


def test_draws_are_the_pinned_numpy_streams():
  """A resume (or another version of the code) must draw the same batches: step t's
  draw is numpy's default_rng([seed, 0x5A3D, t]), groups default_rng([seed, 0x6B0A, b])."""
  seed, n, b = 12345, 300, 30
  rng = lambda t: np.random.default_rng([seed, 0x5A3D, t])
  for t in (0, 7):
    np.testing.assert_array_equal(bs.PoissonSampling(n, b, seed=seed).indices(t),
                                  np.flatnonzero(rng(t).random(n) < b / n))
    np.testing.assert_array_equal(bs.FixedSizeSampling(n, b, seed=seed).indices(t),
                                  np.sort(rng(t).choice(n, b, replace=False)))
    groups = np.random.default_rng([seed, 0x6B0A, 3]).integers(3, size=n)
    np.testing.assert_array_equal(
        bs.CyclicPoissonSampling(n, b, 3, seed=seed).indices(t),
        np.flatnonzero((rng(t).random(n) < 3 * b / n) & (groups == t % 3)))
  # b = 1: Poisson's batches exactly.
  np.testing.assert_array_equal(bs.CyclicPoissonSampling(n, b, 1, seed=seed).indices(4),
                                bs.PoissonSampling(n, b, seed=seed).indices(4))


def test_the_seed_is_secret_and_required_to_draw():
  s = bs.PoissonSampling(1000, 100, seed=987654321)
  assert '987654321' not in repr(s)
  assert s == bs.PoissonSampling(1000, 100)  # compared without the seed
  with pytest.raises(ValueError, match='no seed'):
    bs.PoissonSampling(1000, 100).indices(0)


def test_fixed_batches_are_exactly_b_distinct_uniform():
  s = bs.FixedSizeSampling(dataset_size=30, expected_batch_size=6, seed=0)
  counts = np.zeros(30)
  for t in range(3000):
    idx = s.indices(t)
    assert len(idx) == 6 and len(np.unique(idx)) == 6
    counts[idx] += 1
  np.testing.assert_allclose(counts / 3000, 0.2, atol=0.04)


def test_cyclic_sampling_uses_each_example_once_per_b_steps():
  s = bs.CyclicPoissonSampling(dataset_size=400, expected_batch_size=20, num_bands=4,
                               seed=5)
  assert s.sampling_rate == pytest.approx(4 * 20 / 400)
  last_seen = {}
  sizes = []
  for t in range(400):
    idx = s.indices(t)
    sizes.append(len(idx))
    assert np.all(s.groups[idx] == t % 4)
    for i in idx:
      assert t - last_seen.get(i, -4) >= 4
      last_seen[i] = t
  assert np.mean(sizes) == pytest.approx(20, rel=0.1)  # still B on average


def test_capacity_and_padding():
  cap = bs.PoissonSampling(1437, 512).capacity(multiple_of=4)
  assert cap % 4 == 0 and cap >= 512 + 6 * np.sqrt(1437 * (512 / 1437) * (1 - 512 / 1437))
  assert bs.FixedSizeSampling(60000, 512).capacity(multiple_of=8) == 512
  assert bs.FixedSizeSampling(60000, 510).capacity(multiple_of=4) == 512
  assert bs.CyclicPoissonSampling(1437, 512, 2).capacity(4) == cap
  chunks = bs.pad_chunks(np.array([3, 5, 9]), capacity=4)
  assert len(chunks) == 1
  idx, mask = chunks[0]
  np.testing.assert_array_equal(mask, [True, True, True, False])
  np.testing.assert_array_equal(idx[:3], [3, 5, 9])


def test_overflow_is_split_never_truncated():
  indices = np.arange(10)
  chunks = bs.pad_chunks(indices, capacity=4)
  assert len(chunks) == 3
  kept = np.concatenate([idx[mask] for idx, mask in chunks])
  np.testing.assert_array_equal(kept, indices)


def test_empty_batch_is_one_all_padding_chunk():
  chunks = bs.pad_chunks(np.array([], dtype=np.int64), capacity=8)
  assert len(chunks) == 1 and not chunks[0][1].any()


# ------------------------------------------------------------------ the events
def _reference(selection, sigma, steps):
  """The dp-accounting event of ``steps`` steps, written out from the definitions (not
  from the code under test)."""
  n, b = selection.dataset_size, selection.expected_batch_size
  if isinstance(selection, bs.FixedSizeSampling):
    return dp_accounting.SelfComposedDpEvent(dp_accounting.SampledWithoutReplacementDpEvent(
        n, b, dp_accounting.GaussianDpEvent(sigma / 2)), steps)
  if isinstance(selection, bs.CyclicPoissonSampling):
    return jp_accounting.amplified_bandmf_event(
        sigma, steps, num_bands=selection.num_bands,
        sampling_prob=selection.num_bands * b / n)
  return dp_accounting.SelfComposedDpEvent(dp_accounting.PoissonSampledDpEvent(
      b / n, dp_accounting.GaussianDpEvent(sigma)), steps)


SELECTIONS = [bs.PoissonSampling(50000, 4096), bs.PoissonSampling(1437, 256),
              bs.FixedSizeSampling(10000, 500), bs.FixedSizeSampling(60, 30),
              bs.CyclicPoissonSampling(60000, 250, 8), bs.CyclicPoissonSampling(1437, 64, 1)]


@pytest.mark.parametrize('selection', SELECTIONS, ids=repr)
@pytest.mark.parametrize('sigma,steps', [(0.8, 1), (2.0, 40), (10.0, 875)])
def test_each_event_is_the_dp_accounting_reference(selection, sigma, steps):
  assert selection.dp_event(sigma, steps) == _reference(selection, sigma, steps)
  relation = {bs.PoissonSampling: 'add_or_remove_one', bs.FixedSizeSampling: 'replace_one',
              bs.CyclicPoissonSampling: 'add_or_remove_one'}[type(selection)]
  assert selection.neighboring_relation == relation
  # And its epsilon is the reference accountant's for that event and relation.
  acc = rdp.RdpAccountant(neighboring_relation=dp_accounting.NeighboringRelation[
      relation.upper()])
  acc.compose(_reference(selection, sigma, steps))
  assert accounting.epsilon(selection.dp_event(sigma, steps), 1e-5, 'rdp',
                            relation) == acc.get_epsilon(1e-5)


def test_cyclic_with_one_band_accounts_as_poisson():
  """b = 1 is DP-SGD's event exactly (jax-privacy composes ceil(T / b) rounds)."""
  assert (bs.CyclicPoissonSampling(1437, 64, 1).dp_event(2.0, 30)
          == bs.PoissonSampling(1437, 64).dp_event(2.0, 30))


def test_the_registry_holds_the_config_choices():
  assert bs.SAMPLERS == {'poisson': bs.PoissonSampling, 'fixed': bs.FixedSizeSampling}
  for cls in bs.SAMPLERS.values():
    selection = cls(1000, 100, seed=1)
    assert selection.sampling_rate == 0.1
    assert 'N = 1000' in selection.describe()
