"""Membership scores (audit/scoring.py): log p(canary label), computed from the model
as evaluation computes it, and fed to the statistics."""
import jax
import numpy as np
import pytest
import scipy.special

from image_classification.audit import canaries
from image_classification.audit import scoring
from image_classification.audit import statistics
from image_classification.input import augmentation
from image_classification.models import registry
from tests.audit.canary_helpers import indexed_splits
from tests.audit.canary_helpers import NUM_CLASSES


def test_score_is_log_probability_of_the_canary_label():
  rng = np.random.default_rng(2)
  logits = rng.normal(size=(50, 10)) * 3
  labels = rng.integers(0, 10, size=50)
  expected = scipy.special.log_softmax(logits, axis=1)[np.arange(50), labels]
  np.testing.assert_allclose(scoring.score_canaries(logits, labels), expected,
                             rtol=1e-12)
  # Stable for huge logits; higher probability of the label, higher score.
  big = np.array([[1e4, 0.0, -1e4], [0.0, 1e4, -1e4]])
  scores = scoring.score_canaries(big, np.array([0, 0]))
  assert np.all(np.isfinite(scores))
  assert scores[0] == pytest.approx(0.0) and scores[1] == pytest.approx(-1e4)
  with pytest.raises(ValueError):
    scoring.score_canaries(logits, labels[:10])
  with pytest.raises(ValueError):
    scoring.score_canaries(logits, labels + 10)


def test_nonfinite_scores_are_ranked_lowest():
  scores, nonfinite = scoring.rankable(np.array([0.5, np.nan, -2.0, np.inf]))
  np.testing.assert_array_equal(nonfinite, [False, True, False, True])
  np.testing.assert_array_equal(scores, [0.5, -np.inf, -2.0, -np.inf])
  guesses = statistics.guess_membership(scores, num_positive=1, num_negative=2)
  np.testing.assert_array_equal(guesses, [1, -1, 0, -1])


def test_canary_logits_are_the_evaluation_forward_pass_in_padded_batches():
  rng = np.random.default_rng(3)
  model = registry.build('cnn', 10, channels=(4,), flatten=True)
  params = model.init(jax.random.PRNGKey(0), np.zeros((1, 4, 4, 1)))['params']
  images = rng.integers(0, 256, (7, 4, 4, 1), dtype=np.uint8)
  mean, std = (0.5,), (0.25,)
  expected = model.apply({'params': params},
                         augmentation.standardise(images, mean, std), is_training=False)
  got = scoring.canary_logits(model.apply, params, images, mean, std, batch_size=3)
  assert got.shape == (7, 10)
  np.testing.assert_allclose(got, np.asarray(expected), rtol=1e-5, atol=1e-6)


def test_simulated_memorising_model_is_caught():
  # A stand-in "model" that memorises included canaries: it adds a noisy boost to the
  # logit of the canary's (wrong) label when the canary was trained on.
  rng = np.random.default_rng(9)
  data = indexed_splits(n=2000)
  _, canary_set = canaries.prepare(data, 500, seed=4)
  _, canary_labels, _ = canary_set.canaries()
  m = canary_set.num_canaries
  logits = rng.normal(size=(m, NUM_CLASSES))
  logits[np.arange(m), canary_labels] += 3.0 * canary_set.included
  result = statistics.audit_from_scores(
      scoring.score_canaries(logits, canary_labels), canary_set.included, 1e-5, 0.95)
  assert result['epsilon_lower_bound'] > 1.0
  assert result['num_canaries'] == m
