"""The checkpoint store: round trip, keeping the last two, fallback past a corrupt latest
checkpoint, and a clear error when none is usable."""
import json
import os

import jax
import numpy as np
import optax
import pytest

from image_classification.workdir import checkpoint_store
from image_classification.workdir import resume
from tests.training import helpers


def _save(ckpt, step):
  state = helpers.train_state(step, seed=step)
  ckpt.save(state, resume.make_metadata(0, step, 0.1 * step, helpers.privacy_plan()))
  return state


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def _assert_same(a, b):
  assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
  for x, y in zip(_leaves(a), _leaves(b)):
    np.testing.assert_array_equal(x, y)


def _data_files(ckpt, step):
  folder = os.path.join(ckpt.directory, str(step), 'state')
  return [os.path.join(root, f) for root, _, files in os.walk(folder) for f in files
          if os.sep + 'd' + os.sep in os.path.join(root, f) + os.sep]


def test_round_trip_with_momentum_state(tmp_path):
  ckpt = checkpoint_store.Checkpoints(str(tmp_path))
  state = _save(ckpt, 3)
  restored = ckpt.restore_latest(helpers.train_state(0))
  assert restored.step == 3 and int(restored.state.step) == 3
  assert isinstance(restored.state.opt_state[0], optax.TraceState)
  _assert_same(restored.state, state)
  assert restored.metadata['seed'] == 0
  assert restored.metadata['epsilon'] == pytest.approx(0.3)
  assert restored.metadata['noise_multiplier'] == 1.5
  assert restored.metadata['plan']['steps'] == 12
  # Without a target (tools, tests): nested dicts, same bytes, same checksum.
  raw = ckpt.restore(3)
  np.testing.assert_array_equal(raw.state['params']['head']['kernel'],
                                state.params['head']['kernel'])
  assert checkpoint_store.state_checksum(raw.state) == checkpoint_store.state_checksum(state)
  ckpt.close()


def test_keeps_the_last_two_and_ignores_an_unfinished_one(tmp_path, capsys):
  ckpt = checkpoint_store.Checkpoints(str(tmp_path))
  for step in (3, 6, 9):
    _save(ckpt, step)
  assert ckpt.steps() == [6, 9]
  ckpt.close()
  # A run killed while writing step 12 leaves orbax's temporary folder behind.
  os.makedirs(os.path.join(ckpt.directory, '12.orbax-checkpoint-tmp-123', 'state'))
  ckpt = checkpoint_store.Checkpoints(str(tmp_path))
  assert 'removing' in capsys.readouterr().out
  assert ckpt.restore_latest(helpers.train_state(0)).step == 9
  assert sorted(os.listdir(ckpt.directory)) == ['6', '9']
  ckpt.close()


@pytest.mark.parametrize('damage', ['truncate', 'checksum', 'step'])
def test_corrupt_latest_falls_back_to_previous_and_says_so(tmp_path, capsys, damage):
  ckpt = checkpoint_store.Checkpoints(str(tmp_path))
  state6 = _save(ckpt, 6)
  _save(ckpt, 9)
  meta_path = os.path.join(ckpt.directory, '9', 'metadata', 'metadata')
  if damage == 'truncate':
    files = _data_files(ckpt, 9)
    assert files
    for f in files:
      with open(f, 'r+b') as fh:
        fh.truncate(os.path.getsize(f) // 2)
  else:  # bytes that read back fine but are not what was saved
    with open(meta_path) as f:
      meta = json.load(f)
    if damage == 'checksum':
      meta['sha256'] = '0' * 64
    else:
      meta['step'] = 8
    with open(meta_path, 'w') as f:
      json.dump(meta, f)
  ckpt.close()

  ckpt = checkpoint_store.Checkpoints(str(tmp_path))
  restored = ckpt.restore_latest(helpers.train_state(0))
  out = capsys.readouterr().out
  assert restored.step == 6
  _assert_same(restored.state, state6)
  assert f'skipping {os.path.join(ckpt.directory, "9")}' in out
  assert {'truncate': 'OUT_OF_RANGE', 'checksum': 'checksum mismatch',
          'step': 'step mismatch'}[damage] in out
  assert 'falling back to step 6' in out
  # The bad one is kept for inspection, out of the way, and step 9 can be written again.
  skipped = os.listdir(os.path.join(str(tmp_path), checkpoint_store.SKIPPED))
  assert len(skipped) == 1 and skipped[0].startswith('9-')
  assert ckpt.steps() == [6]
  _save(ckpt, 9)
  assert ckpt.steps() == [6, 9]
  ckpt.close()


def test_no_usable_checkpoint_is_a_clear_error(tmp_path):
  ckpt = checkpoint_store.Checkpoints(str(tmp_path))
  _save(ckpt, 6)
  _save(ckpt, 9)
  for step in (6, 9):
    for f in _data_files(ckpt, step):
      with open(f, 'wb') as fh:
        fh.write(b'\0' * 16)
  ckpt.close()
  ckpt = checkpoint_store.Checkpoints(str(tmp_path))
  with pytest.raises(checkpoint_store.CheckpointError) as e:
    ckpt.restore_latest(helpers.train_state(0))
  message = str(e.value)
  assert ckpt.directory in message
  assert 'step 6' in message and 'step 9' in message
  assert 'delete' in message and 'another --workdir' in message
  assert ckpt.steps() == [6, 9]  # nothing moved or deleted: the user decides
  ckpt.close()


def test_empty_workdir_has_nothing_to_restore(tmp_path):
  ckpt = checkpoint_store.Checkpoints(str(tmp_path))
  assert ckpt.restore_latest(helpers.train_state(0)) is None
  ckpt.close()
