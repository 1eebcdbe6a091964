"""workdir/selection.py: the best evaluation's parameters so far, across resumes and
checkpoint pruning (the end-to-end run is in tests/test_api.py)."""
import os

import numpy as np

from image_classification.workdir import selection


def _params(value):
  return {'dense': {'kernel': np.full((2, 3), value, np.float32)}}


def _offer(chooser, step, validation):
  return chooser.offer(step, _params(step), {'validation_accuracy': validation,
                                             'test_accuracy': validation / 2})


def test_keeps_the_first_best_validation_accuracy(tmp_path):
  chooser = selection.Selection(str(tmp_path), resumed_step=None)
  assert _offer(chooser, 5, 0.5) and _offer(chooser, 10, 0.7)
  assert not _offer(chooser, 15, 0.7)  # a tie keeps the earlier step
  assert not _offer(chooser, 20, 0.6)
  assert chooser.best == {'step': 10, 'validation_accuracy': 0.7, 'test_accuracy': 0.35}
  np.testing.assert_array_equal(chooser.params()['dense']['kernel'], _params(10)['dense']['kernel'])
  chooser.discard()
  assert not (tmp_path / 'selection').exists()


def test_a_resume_forgets_the_steps_it_redoes(tmp_path):
  chooser = selection.Selection(str(tmp_path), resumed_step=None)
  _offer(chooser, 5, 0.5)
  _offer(chooser, 10, 0.7)  # after the checkpoint of step 5: redone on resume
  again = selection.Selection(str(tmp_path), resumed_step=5)
  assert again.best['step'] == 5
  assert not (tmp_path / 'selection' / 'step_10.msgpack').exists()
  assert _offer(again, 10, 0.6) and again.best['step'] == 10
  # A fresh start (no checkpoint) forgets an earlier attempt entirely.
  assert selection.Selection(str(tmp_path), resumed_step=None).best is None


def test_pruning_keeps_what_any_restorable_checkpoint_needs(tmp_path):
  chooser = selection.Selection(str(tmp_path), resumed_step=None)
  for step, validation in ((5, 0.5), (10, 0.6), (15, 0.7), (20, 0.8)):
    _offer(chooser, step, validation)
  chooser.prune([15, 20])  # a resume restores step 15 or 20: needs 15's and 20's
  kept = sorted(os.listdir(tmp_path / 'selection'))
  assert kept == ['selection.json', 'step_15.msgpack', 'step_20.msgpack']
  assert selection.Selection(str(tmp_path), resumed_step=15).best['step'] == 15
