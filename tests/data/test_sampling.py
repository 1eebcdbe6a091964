"""Samplers: the batch distribution the accountant assumes is the one we draw."""
import numpy as np
import pytest

from image_classification.data import sampling


def test_poisson_sizes_follow_the_binomial():
  s = sampling.Sampler(dataset_size=2000, expected_batch_size=200, kind='poisson', seed=3)
  sizes = np.array([len(s.indices(t)) for t in range(400)])
  assert sizes.mean() == pytest.approx(200, rel=0.03)
  # Binomial(2000, 0.1) has std sqrt(180) ~ 13.4.
  assert sizes.std() == pytest.approx(np.sqrt(2000 * 0.1 * 0.9), rel=0.15)


def test_poisson_membership_is_independent_per_example():
  s = sampling.Sampler(dataset_size=50, expected_batch_size=10, kind='poisson', seed=0)
  counts = np.zeros(50)
  for t in range(2000):
    idx = s.indices(t)
    assert len(np.unique(idx)) == len(idx)
    counts[idx] += 1
  # Every example is included with probability q = 0.2 at every step.
  assert np.all(np.abs(counts / 2000 - 0.2) < 0.05)


def test_draws_depend_only_on_seed_and_step():
  a = sampling.Sampler(1000, 100, 'poisson', seed=1)
  b = sampling.Sampler(1000, 100, 'poisson', seed=1)
  c = sampling.Sampler(1000, 100, 'poisson', seed=2)
  np.testing.assert_array_equal(a.indices(17), b.indices(17))
  assert not np.array_equal(a.indices(17), c.indices(17))
  assert not np.array_equal(a.indices(17), a.indices(18))


def test_fixed_batches_are_exactly_b_distinct_uniform():
  s = sampling.Sampler(dataset_size=30, expected_batch_size=6, kind='fixed', seed=0)
  counts = np.zeros(30)
  for t in range(3000):
    idx = s.indices(t)
    assert len(idx) == 6 and len(np.unique(idx)) == 6
    counts[idx] += 1
  np.testing.assert_allclose(counts / 3000, 0.2, atol=0.04)


def test_capacity_and_padding():
  cap = sampling.batch_capacity(512, 1437, 'poisson', multiple_of=4)
  assert cap % 4 == 0 and cap >= 512 + 6 * np.sqrt(1437 * (512 / 1437) * (1 - 512 / 1437))
  assert sampling.batch_capacity(512, 60000, 'fixed', multiple_of=8) == 512
  assert sampling.batch_capacity(510, 60000, 'fixed', multiple_of=4) == 512
  chunks = sampling.pad_chunks(np.array([3, 5, 9]), capacity=4)
  assert len(chunks) == 1
  idx, mask = chunks[0]
  np.testing.assert_array_equal(mask, [True, True, True, False])
  np.testing.assert_array_equal(idx[:3], [3, 5, 9])


def test_overflow_is_split_never_truncated():
  indices = np.arange(10)
  chunks = sampling.pad_chunks(indices, capacity=4)
  assert len(chunks) == 3
  kept = np.concatenate([idx[mask] for idx, mask in chunks])
  np.testing.assert_array_equal(kept, indices)


def test_empty_batch_is_one_all_padding_chunk():
  chunks = sampling.pad_chunks(np.array([], dtype=np.int64), capacity=8)
  assert len(chunks) == 1 and not chunks[0][1].any()
