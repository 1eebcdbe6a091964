"""Checkpoints: round trip, fallback past a corrupt latest checkpoint, a clear error when
none is usable, and refusal of a workdir whose config or privacy plan differs."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import quickstart
from image_classification import plan as plan_lib
from image_classification import run_files
from image_classification.training import checkpoint
from image_classification.training import dp_step


def _state(step, seed=0):
  """A TrainState whose momentum trace is non-zero, at ``step``."""
  rng = np.random.default_rng(seed)
  params = {'conv0': {'kernel': jnp.asarray(rng.normal(size=(3, 3, 1, 4)), jnp.float32),
                      'bias': jnp.zeros((4,))},
            'head': {'kernel': jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)}}
  optimizer = optax.sgd(0.1, momentum=0.9)
  state = dp_step.init_state(params, optimizer, train_only_head=False)
  grads = jax.tree_util.tree_map(lambda p: p + 1.0, params)
  updates, opt_state = optimizer.update(grads, state.opt_state, params)
  params = optax.apply_updates(params, updates)
  return state.replace(step=jnp.asarray(step, jnp.int32), params=params,
                       opt_state=opt_state,
                       ema_params=jax.tree_util.tree_map(lambda p: 0.5 * p, params))


def _plan(noise_multiplier=1.5, steps=12):
  return plan_lib.PrivacyPlan(
      noise_multiplier=noise_multiplier, clipping_norm=1.0, sampling='poisson',
      sampling_rate=64 / 1437, expected_batch_size=64, steps=steps, delta=1e-5,
      epsilon=1.0, target_epsilon=4.0, accountant='rdp',
      neighboring_relation='add_or_remove_one', dataset_size=1437)


def _save(ckpt, step):
  state = _state(step, seed=step)
  ckpt.save(state, checkpoint.make_metadata(0, step, 0.1 * step, _plan()))
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
  ckpt = checkpoint.Checkpoints(str(tmp_path))
  state = _save(ckpt, 3)
  restored = ckpt.restore_latest(_state(0))
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
  assert checkpoint.state_checksum(raw.state) == checkpoint.state_checksum(state)
  ckpt.close()


def test_keeps_the_last_two_and_ignores_an_unfinished_one(tmp_path, capsys):
  ckpt = checkpoint.Checkpoints(str(tmp_path))
  for step in (3, 6, 9):
    _save(ckpt, step)
  assert ckpt.steps() == [6, 9]
  ckpt.close()
  # A run killed while writing step 12 leaves orbax's temporary folder behind.
  os.makedirs(os.path.join(ckpt.directory, '12.orbax-checkpoint-tmp-123', 'state'))
  ckpt = checkpoint.Checkpoints(str(tmp_path))
  assert 'removing' in capsys.readouterr().out
  assert ckpt.restore_latest(_state(0)).step == 9
  assert sorted(os.listdir(ckpt.directory)) == ['6', '9']
  ckpt.close()


@pytest.mark.parametrize('damage', ['truncate', 'checksum', 'step'])
def test_corrupt_latest_falls_back_to_previous_and_says_so(tmp_path, capsys, damage):
  ckpt = checkpoint.Checkpoints(str(tmp_path))
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

  ckpt = checkpoint.Checkpoints(str(tmp_path))
  restored = ckpt.restore_latest(_state(0))
  out = capsys.readouterr().out
  assert restored.step == 6
  _assert_same(restored.state, state6)
  assert f'skipping {os.path.join(ckpt.directory, "9")}' in out
  assert {'truncate': 'OUT_OF_RANGE', 'checksum': 'checksum mismatch',
          'step': 'step mismatch'}[damage] in out
  assert 'falling back to step 6' in out
  # The bad one is kept for inspection, out of the way, and step 9 can be written again.
  skipped = os.listdir(os.path.join(str(tmp_path), checkpoint.SKIPPED))
  assert len(skipped) == 1 and skipped[0].startswith('9-')
  assert ckpt.steps() == [6]
  _save(ckpt, 9)
  assert ckpt.steps() == [6, 9]
  ckpt.close()


def test_no_usable_checkpoint_is_a_clear_error(tmp_path):
  ckpt = checkpoint.Checkpoints(str(tmp_path))
  _save(ckpt, 6)
  _save(ckpt, 9)
  for step in (6, 9):
    for f in _data_files(ckpt, step):
      with open(f, 'wb') as fh:
        fh.write(b'\0' * 16)
  ckpt.close()
  ckpt = checkpoint.Checkpoints(str(tmp_path))
  with pytest.raises(checkpoint.CheckpointError) as e:
    ckpt.restore_latest(_state(0))
  message = str(e.value)
  assert ckpt.directory in message
  assert 'step 6' in message and 'step 9' in message
  assert 'delete' in message and 'another --workdir' in message
  assert ckpt.steps() == [6, 9]  # nothing moved or deleted: the user decides
  ckpt.close()


def test_empty_workdir_has_nothing_to_restore(tmp_path):
  ckpt = checkpoint.Checkpoints(str(tmp_path))
  assert ckpt.restore_latest(_state(0)) is None
  ckpt.close()


def test_different_config_is_refused_naming_the_field(tmp_path):
  config = quickstart.get_config()
  run_files.write_json(str(tmp_path), run_files.CONFIG, config.to_dict())
  checkpoint.check_config(str(tmp_path), config)  # same config: fine

  unimportant = quickstart.get_config()
  unimportant.wandb.mode = 'offline'
  unimportant.training.log_every_steps = 7
  unimportant.training.eval_every_steps = 0
  unimportant.training.checkpoint_every_steps = 5
  checkpoint.check_config(str(tmp_path), unimportant)

  changed = quickstart.get_config()
  changed.training.num_steps = config.training.num_steps + 1
  changed.model.kwargs.channels = (8,)
  with pytest.raises(checkpoint.CheckpointError) as e:
    checkpoint.check_config(str(tmp_path), changed)
  message = str(e.value)
  n = config.training.num_steps
  assert f'config.training.num_steps: {n} in the workdir, {n + 1} now' in message
  assert 'config.model.kwargs.channels' in message
  assert str(tmp_path) in message and 'another --workdir' in message
  assert 'log_every_steps' not in message


def test_different_plan_or_seed_is_refused():
  plan = _plan()
  metadata = checkpoint.make_metadata(0, 6, 0.6, plan)
  same_ledger = lambda step: 0.1 * step
  checkpoint.check_resume(metadata, 0, plan, same_ledger)
  with pytest.raises(checkpoint.CheckpointError, match='plan.noise_multiplier'):
    checkpoint.check_resume(metadata, 0, _plan(noise_multiplier=1.6), same_ledger)
  with pytest.raises(checkpoint.CheckpointError, match='plan.steps'):
    checkpoint.check_resume(metadata, 0, _plan(steps=20), same_ledger)
  with pytest.raises(checkpoint.CheckpointError, match='seed'):
    checkpoint.check_resume(metadata, 1, plan, same_ledger)
  with pytest.raises(checkpoint.CheckpointError, match='epsilon after 6 steps'):
    checkpoint.check_resume(metadata, 0, plan, lambda step: 0.2 * step)


def test_non_private_metadata_round_trips(tmp_path):
  plan = _plan(noise_multiplier=0.0)
  ckpt = checkpoint.Checkpoints(str(tmp_path))
  ckpt.save(_state(4), checkpoint.make_metadata(0, 4, float('inf'), plan))
  restored = ckpt.restore_latest(_state(0))
  ckpt.close()
  assert restored.metadata['epsilon'] == 'inf'
  checkpoint.check_resume(restored.metadata, 0, plan, lambda step: float('inf'))


def test_completed_summary(tmp_path):
  assert checkpoint.completed_summary(str(tmp_path)) is None
  run_files.write_json(str(tmp_path), run_files.SUMMARY, {'status': 'complete'})
  assert checkpoint.completed_summary(str(tmp_path)) == {'status': 'complete'}
