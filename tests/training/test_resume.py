"""Exact resume, for real: launch.py killed with SIGKILL after its first checkpoint and
run again with the same command ends where an uninterrupted run ends (same parameters,
same accuracy, same epsilon), and the ledger continues rather than restarting."""
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from configs import quickstart
from image_classification.privacy import mechanism_secret
from image_classification import run_files
from image_classification.training import checkpoint
from image_classification.training import loop

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The quickstart shrunk to a few seconds: a tiny model, a fixed noise multiplier (no
# calibration), 24 steps with a checkpoint every 3, evaluation only at the end.
OVERRIDES = {
    'training.num_steps': 24,
    'training.checkpoint_every_steps': 3,
    'training.log_every_steps': 4,
    'training.eval_every_steps': 0,
    'training.batch_size': 64,
    'privacy.noise_multiplier': 2.0,
    'model.kwargs.channels': (4,),
}


def _command(workdir):
  flags = [f'--config.{k}={v}'.replace(' ', '') for k, v in OVERRIDES.items()]
  return [sys.executable, 'launch.py', '--config=configs/quickstart.py', *flags,
          f'--workdir={workdir}']


def _config():
  config = quickstart.get_config()
  for key, value in OVERRIDES.items():
    node = config
    *parents, leaf = key.split('.')
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


@pytest.fixture(scope='module')
def env(tmp_path_factory):
  env = dict(os.environ)
  # Share compiled programs between the three launches (compilation dominates here).
  env.update(JAX_COMPILATION_CACHE_DIR=str(tmp_path_factory.mktemp('jax_cache')),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0',
             PYTHONPATH=ROOT, JAX_PLATFORMS='cpu')
  return env


def _run(workdir, env):
  result = subprocess.run(_command(workdir), cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  return result.stdout


def _checkpoint_steps(workdir):
  folder = os.path.join(workdir, checkpoint.CHECKPOINTS)
  if not os.path.isdir(folder):
    return []
  return sorted(int(n) for n in os.listdir(folder) if n.isdigit())


def _metrics(workdir):
  with open(os.path.join(workdir, run_files.METRICS)) as f:
    return [json.loads(line) for line in f]


def _final_state(workdir):
  ckpt = checkpoint.Checkpoints(workdir)
  try:
    restored = ckpt.restore_latest()  # verified: checksum and step
  finally:
    ckpt.close()
  return restored


def test_killed_run_resumes_to_the_same_result(tmp_path, env):
  reference, resumed = str(tmp_path / 'reference'), str(tmp_path / 'resumed')
  # Both runs get the same secret noise/batch randomness (as if one workdir had been
  # copied), so that the resumed run can be compared with the uninterrupted one.
  secret = bytes(range(32))
  for workdir in (reference, resumed):
    mechanism_secret.write(workdir, secret)
  _run(reference, env)
  assert not os.path.exists(mechanism_secret.path(reference))  # deleted when complete

  # Start the same run elsewhere and SIGKILL it as soon as a checkpoint exists.
  proc = subprocess.Popen(_command(resumed), cwd=ROOT, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    deadline = time.time() + 120
    while not _checkpoint_steps(resumed) and proc.poll() is None:
      assert time.time() < deadline, 'no checkpoint appeared'
      time.sleep(0.01)
    proc.kill()
  finally:
    proc.wait()
  assert proc.returncode == -9, 'the run ended before it could be killed'
  killed_at = _checkpoint_steps(resumed)
  assert killed_at and killed_at[-1] < 24
  assert not os.path.exists(os.path.join(resumed, run_files.SUMMARY))
  assert os.path.exists(mechanism_secret.path(resumed))  # kept for the resume

  out = _run(resumed, env)
  assert 'resuming from the checkpoint of step' in out

  # Same final parameters (the whole state: params, EMA, momentum, step).
  a, b = _final_state(reference), _final_state(resumed)
  assert a.step == b.step == 24
  flat_a = {k: v for k, v in _flatten(a.state)}
  flat_b = {k: v for k, v in _flatten(b.state)}
  assert flat_a.keys() == flat_b.keys()
  for k in flat_a:
    np.testing.assert_allclose(flat_b[k], flat_a[k], rtol=1e-6, atol=1e-7, err_msg=k)
  assert b.metadata['epsilon'] == a.metadata['epsilon']

  # Same summary: accuracy and epsilon; the ledger was continued, not reset.
  sa = run_files.read_json(reference, run_files.SUMMARY)
  sb = run_files.read_json(resumed, run_files.SUMMARY)
  assert sb['status'] == 'complete'
  assert sb['test_accuracy'] == sa['test_accuracy']
  assert sb['epsilon'] == sa['epsilon']
  assert sb['steps'] == 24 and 0 < sb['resumed_from_step'] < 24
  privacy = run_files.read_json(resumed, run_files.PRIVACY)
  assert privacy['steps_taken'] == 24 and privacy['epsilon'] == sa['epsilon']

  # metrics.jsonl: rows after the restored step were dropped and redone, once each.
  rows_a, rows_b = _metrics(reference), _metrics(resumed)
  assert [r['step'] for r in rows_b] == [r['step'] for r in rows_a]
  for ra, rb in zip(rows_a, rows_b):
    assert rb['epsilon'] == ra['epsilon']
  assert rows_b[-1]['test_accuracy'] == rows_a[-1]['test_accuracy']

  # A finished run is reported, not retrained; a different config is refused.
  config = _config()
  before = os.path.getmtime(os.path.join(resumed, run_files.SUMMARY))
  assert loop.train(config, resumed)['test_accuracy'] == sb['test_accuracy']
  assert os.path.getmtime(os.path.join(resumed, run_files.SUMMARY)) == before
  config.training.num_steps = 30
  with pytest.raises(checkpoint.CheckpointError, match='config.training.num_steps'):
    loop.train(config, resumed)


def _flatten(tree, prefix=''):
  if isinstance(tree, dict):
    for k, v in tree.items():
      yield from _flatten(v, f'{prefix}/{k}')
  elif isinstance(tree, (list, tuple)):
    for i, v in enumerate(tree):
      yield from _flatten(v, f'{prefix}/{i}')
  elif tree is not None:
    yield prefix, np.asarray(tree)
