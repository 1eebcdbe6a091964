"""The one canary pipeline (audit/canaries.py): which examples become canaries, their
wrong labels and membership bits, and the audited training split built from them."""
import jax
import numpy as np
import pytest
import scipy.stats

from configs import quickstart_audit
from image_classification.audit import canaries
from image_classification.audit import statistics
from image_classification.data import base
from image_classification.data import catalog
from image_classification.privacy import batch_selection
from tests.audit.canary_helpers import ids
from tests.audit.canary_helpers import indexed_splits
from tests.audit.canary_helpers import NUM_CLASSES


# ---------------------------------------------------------------- the draws
def test_canary_draws_pick_distinct_examples_and_wrong_labels_reproducibly():
  n, m = 500, 300
  source, shifts, included = canaries.canary_draws(n, m, NUM_CLASSES, seed=1)
  assert source.shape == shifts.shape == included.shape == (m,)
  assert len(np.unique(source)) == m and source.min() >= 0 and source.max() < n
  # The shift to the wrong label is never 0 and uniform over the 9 other classes.
  counts = np.bincount(shifts, minlength=NUM_CLASSES)
  assert counts[0] == 0
  assert scipy.stats.chisquare(counts[1:]).pvalue > 1e-3
  again = canaries.canary_draws(n, m, NUM_CLASSES, seed=1)
  for a, b in zip(again, (source, shifts, included)):
    np.testing.assert_array_equal(a, b)
  assert (canaries.canary_draws(n, m, NUM_CLASSES, seed=2)[0] != source).any()
  with pytest.raises(ValueError):
    canaries.canary_draws(n, n + 1, NUM_CLASSES, seed=1)
  with pytest.raises(ValueError):
    canaries.canary_draws(n, 5, 1, seed=1)


def test_membership_is_independent_of_the_training_streams():
  """Bits agree with the sampler's and the JAX keys' coin flips about half the time
  (50 seeds x 1000 bits: the standard error of the rate is 0.0022)."""
  m, agree_sampler, agree_jax = 1000, [], []
  for seed in range(50):
    bits = canaries.canary_draws(5000, m, NUM_CLASSES, seed)[2]
    np.testing.assert_array_equal(bits, statistics.make_canary_membership(m, seed))
    for step in (0, 1):
      drawn = np.zeros(m, bool)
      drawn[batch_selection.PoissonSampling(
          dataset_size=m, expected_batch_size=m // 2, seed=seed).indices(step)] = True
      agree_sampler.append(np.mean(bits == drawn))
    coins = np.asarray(jax.random.bernoulli(jax.random.PRNGKey(seed), 0.5, (m,)))
    agree_jax.append(np.mean(bits == coins))
  assert abs(np.mean(agree_sampler) - 0.5) < 0.01
  assert abs(np.mean(agree_jax) - 0.5) < 0.015
  assert max(agree_sampler) < 0.6 and max(agree_jax) < 0.6


# ---------------------------------------------------------------- the split
def test_train_split_holds_clean_examples_and_exactly_the_included_canaries():
  data = indexed_splits(n=200)
  out, canary_set = canaries.prepare(data, 60, seed=0)
  m, k = canary_set.num_canaries, canary_set.num_included
  assert m == 60 and 0 < k < m
  assert out.test is data.test and out.num_classes == data.num_classes
  # N counts the included canaries and only them.
  assert out.train.num_examples == canary_set.train_size == 200 - m + k
  assert canary_set.num_clean_train == 200 - m

  images, labels = out.train.get(np.arange(out.train.num_examples))
  got = ids(images)
  assert len(set(got.tolist())) == got.size  # nothing appears twice
  canary_ids = canary_set.source_indices
  assert len(set(canary_ids.tolist())) == m
  in_ids, out_ids = canary_ids[canary_set.included], canary_ids[~canary_set.included]
  assert set(got.tolist()) == (set(range(200)) - set(canary_ids.tolist())) | set(
      in_ids.tolist())
  assert not set(got.tolist()) & set(out_ids.tolist())  # excluded: never trained on

  canary_images, canary_labels, true_labels = canary_set.canaries()
  np.testing.assert_array_equal(canary_images, data.train.images[canary_ids])
  np.testing.assert_array_equal(true_labels, data.train.labels[canary_ids])
  assert np.all(canary_labels != true_labels) and canary_labels.dtype == np.int32
  assert canary_labels.min() >= 0 and canary_labels.max() < NUM_CLASSES
  wrong = dict(zip(canary_ids.tolist(), canary_labels.tolist()))
  for i, y in zip(got.tolist(), labels.tolist()):
    assert y == (wrong[i] if i in wrong else data.train.labels[i])
  # Reads are consistent: the same index gives the same (image, label) each time.
  idx = np.array([5, out.train.num_examples - 1, 0, 5])
  a, b = out.train.get(idx), out.train.get(idx)
  np.testing.assert_array_equal(a[0], b[0])
  np.testing.assert_array_equal(a[1], b[1])
  np.testing.assert_array_equal(a[1][0], a[1][3])
  with pytest.raises(IndexError):
    out.train.get(np.array([out.train.num_examples]))


def test_wrong_labels_are_spread_over_the_other_classes():
  data = indexed_splits(n=3000)
  _, canary_set = canaries.prepare(data, 2000, seed=0)
  _, canary_labels, true_labels = canary_set.canaries()
  shifts = (canary_labels - true_labels) % NUM_CLASSES
  counts = np.bincount(shifts, minlength=NUM_CLASSES)
  assert counts[0] == 0
  assert counts[1:].min() > 2000 / 9 * 0.7  # about uniform over the 9 others
  assert 0.45 < canary_set.included.mean() < 0.55


def test_prepare_reads_no_pixels_so_dry_runs_work():
  config = quickstart_audit.get_config()
  config.data.name = 'cifar10'
  data = catalog.shape_only_splits(config.data)  # get() raises: no pixels
  out, canary_set = canaries.prepare(data, 1000, seed=0)
  assert out.train.num_examples == 50_000 - 1000 + canary_set.num_included
  assert out.train.image_shape == (32, 32, 3)


def test_bad_inputs_are_refused():
  data = indexed_splits(n=200)
  for m in (1, 200, 500):
    with pytest.raises(ValueError, match='num_canaries'):
      canaries.prepare(data, m, seed=0)
  # A canary's true label outside the classes cannot be mislabelled reliably.
  bad = base.DatasetSplits(
      name='bad', train=base.ArraySource(data.train.images, data.train.labels + 10),
      test=data.test, num_classes=NUM_CLASSES, mean=(0.5,), std=(0.5,))
  with pytest.raises(ValueError, match='labels'):
    canaries.prepare(bad, 20, seed=0)[1].canaries()
  # The view's positions and label shifts must match one to one.
  with pytest.raises(ValueError, match='shifts'):
    canaries.RelabelledSource(data.train, np.arange(5), np.zeros(4, np.int32),
                              NUM_CLASSES)
