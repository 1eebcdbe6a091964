"""Fixed stratified splits of labelled data, by index.

``TEST_SEED`` / ``TEST_FRACTION``: the evaluation split carved out of data that comes
without one (digits, an image folder without test/). ``split`` is also what
validation.py holds out with its own seed.

The seeds are fixed constants, never config.seed: the examples a split holds do not
change between runs or resumes, so a resumed run trains on the same N examples the
privacy plan counted.
"""
import numpy as np

TEST_SEED = 0
TEST_FRACTION = 0.2


def split(labels: np.ndarray, fraction: float, seed: int, *,
          keep_one_each: bool = False) -> tuple[np.ndarray, np.ndarray]:
  """(kept indices, held-out indices), each sorted: ``fraction`` of every class held.

  Every class's members are permuted (one generator seeded with ``seed``, classes in
  label order) and the first round(fraction * count) held out. With
  ``keep_one_each``, a class of two or more examples has at least one held out and
  one kept; a class of one is kept.
  """
  rng = np.random.default_rng(seed)
  kept, held = [], []
  for label in np.unique(labels):
    members = rng.permutation(np.flatnonzero(labels == label))
    n_held = int(round(fraction * len(members)))
    if keep_one_each:
      n_held = min(max(n_held, 1), len(members) - 1) if len(members) >= 2 else 0
    held.extend(members[:n_held])
    kept.extend(members[n_held:])
  return np.sort(np.array(kept, np.int64)), np.sort(np.array(held, np.int64))


def sklearn_split(labels: np.ndarray, fraction: float = TEST_FRACTION,
                  seed: int = TEST_SEED) -> tuple[np.ndarray, np.ndarray]:
  """(train indices, test indices) of scikit-learn's stratified train_test_split.

  The digits split: kept because every digits run so far (the quickstart's results)
  trained on it; it orders indices by sklearn's own permutation, not sorted.
  """
  from sklearn import model_selection  # pylint: disable=g-import-not-at-top
  train, test = model_selection.train_test_split(
      np.arange(len(labels)), test_size=fraction, stratify=labels, random_state=seed)
  return train, test
