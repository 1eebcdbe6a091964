"""Multi-process training for real: launch.py in two local processes with two CPU
devices each (jax.distributed, gloo collectives, the coordinator on localhost).

- Two processes x 2 devices end where one process x 4 devices ends: the same
  parameters (float tolerance: the cross-process sum adds in another order), the same
  metrics rows and epsilon; only process 0 writes (the workdir holds exactly the files
  of a one-process run) and prints.
- A two-process run with the default secret (not the seeded switch) whose process 1 is
  SIGKILLed stops (process 0 too, within the bounded time), and the same commands
  resume it to exactly what one process with that secret computes uninterrupted:
  process 0 alone drew and wrote the secret (one owner-only file), both processes
  used it (their noise and batches are the reference's), and the resume continued the
  same noise stream; the file is deleted once the run completes.
- A host whose copy of the data differs by one record is refused before training:
  one error line naming the process and what differs, exit status 2, nothing written.
- An unreachable coordinator and a mismatched --num_processes give one clear error
  line within the bounded time.

Privacy (docs/privacy.md, invariant 12): with sigma = 2 a second noise draw (per process) or
a missing cross-process sum would move the parameters far beyond the tolerance, and
different batch indices would change realized_batch_size and the loss; so equality
with the one-process run checks that every process drew the same batches and the same
noise key, that the clipped sums were summed across processes and that the noise was
added once. The accountant's epsilon is compared exactly.
"""
import json
import os
import socket
import stat
import subprocess
import sys
import time

import numpy as np
import pytest

from image_classification.workdir import run_files
from image_classification.data.readers import digits
from image_classification.workdir import checkpoint_store
from image_classification.workdir import secret_file

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The quickstart shrunk to seconds: a tiny model, batch 64, a fixed noise multiplier,
# seeded noise (so that two workdirs draw the same batches and noise).
OVERRIDES = {
    'model.kwargs.channels': '(4,)',
    'training.batch_size': 64,
    'training.num_steps': 24,
    'training.log_every_steps': 4,
    'training.eval_every_steps': 12,
    'privacy.noise_multiplier': 2.0,
    'privacy.insecure_seeded_noise': True,
}


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def command(workdir, devices, overrides=None, process=None, extra=()):
  """launch.py for one process; ``process``: (id, num_processes, port) or None."""
  flags = [f'--config.{k}={v}' for k, v in {**OVERRIDES, **(overrides or {})}.items()]
  cmd = [sys.executable, 'launch.py', '--config=configs/quickstart.py', *flags,
         f'--workdir={workdir}', f'--host_devices={devices}', *extra]
  if process is not None:
    pid, n, port = process
    cmd += [f'--coordinator_address=localhost:{port}', f'--num_processes={n}',
            f'--process_id={pid}']
  return cmd


@pytest.fixture(scope='module')
def env(tmp_path_factory):
  env = dict(os.environ)
  env.update(JAX_COMPILATION_CACHE_DIR=str(tmp_path_factory.mktemp('jax_cache')),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0', PYTHONPATH=ROOT,
             JAX_PLATFORMS='cpu', XLA_FLAGS='')
  return env


def start_job(workdir, env, overrides=None, num_processes=2, devices=2, extra=()):
  port = free_port()
  return [subprocess.Popen(
      command(workdir, devices, overrides, (i, num_processes, port), extra), cwd=ROOT,
      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
          for i in range(num_processes)]


def finish(procs, timeout=300):
  outs = []
  for p in procs:
    out, err = p.communicate(timeout=timeout)
    outs.append((p.returncode, out, err))
  return outs


def run_job(workdir, env, overrides=None):
  outs = finish(start_job(workdir, env, overrides))
  for i, (rc, out, err) in enumerate(outs):
    assert rc == 0, f'process {i}:\n{out[-3000:]}\n{err[-3000:]}'
  return outs


def run_one(workdir, env, overrides=None, devices=4):
  result = subprocess.run(command(workdir, devices, overrides), cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  return result.stdout


def metrics(workdir):
  with open(os.path.join(workdir, run_files.METRICS)) as f:
    return [json.loads(line) for line in f]


def files(workdir):
  """Every file under workdir, but wandb's offline folder (timestamped names) and the
  checkpoints (written by every process, the way orbax does it)."""
  out = set()
  for root, dirs, names in os.walk(workdir):
    dirs[:] = [d for d in dirs if d not in ('wandb', checkpoint_store.CHECKPOINTS)]
    out |= {os.path.relpath(os.path.join(root, n), workdir) for n in names}
  return out


def final_params(workdir):
  """export/params.msgpack: the final (EMA) parameters, which depend on every step.
  (The checkpoints hold 4-device arrays, which this 1-device process cannot restore
  without a target.)"""
  import flax.serialization  # pylint: disable=g-import-not-at-top
  with open(os.path.join(workdir, 'export', 'params.msgpack'), 'rb') as f:
    return flax.serialization.msgpack_restore(f.read())


def flatten(tree, prefix=''):
  if isinstance(tree, dict):
    for k, v in tree.items():
      yield from flatten(v, f'{prefix}/{k}')
  elif tree is not None:
    yield prefix, np.asarray(tree)


def assert_same_run(one, two, whole_rows=True):
  """Same final parameters (float tolerance), metrics rows, epsilon and accuracy.

  ``whole_rows=False``: only each row's step and epsilon (a resumed run's first row
  averages the steps since the resume, not since the previous row).
  """
  flat_a, flat_b = dict(flatten(final_params(one))), dict(flatten(final_params(two)))
  assert flat_a.keys() == flat_b.keys()
  for k in flat_a:
    np.testing.assert_allclose(flat_b[k], flat_a[k], rtol=1e-5, atol=1e-6, err_msg=k)
  rows_a, rows_b = metrics(one), metrics(two)
  assert [r['step'] for r in rows_a] == [r['step'] for r in rows_b]
  for ra, rb in zip(rows_a, rows_b):
    assert rb['epsilon'] == ra['epsilon']
    if not whole_rows:
      continue
    assert ra.keys() == rb.keys()
    for k in ra:
      if k == 'images_per_sec':
        continue
      if k in ('step', 'realized_batch_size', 'learning_rate'):
        assert rb[k] == ra[k], (k, ra, rb)
      else:
        assert rb[k] == pytest.approx(ra[k], rel=1e-5, abs=1e-6), (k, ra, rb)
  sa = run_files.read_json(one, run_files.SUMMARY)
  sb = run_files.read_json(two, run_files.SUMMARY)
  assert sb['status'] == sa['status'] == 'complete'
  assert sb['epsilon'] == sa['epsilon']
  assert sb['test_accuracy'] == pytest.approx(sa['test_accuracy'], abs=2e-3)


@pytest.mark.parametrize('overrides', [
    {},
    # augmult views and micro-batches: per device 64 / 4 = 16 slots, 2 micro-batches.
    # Slow (about 25 s; augmult and micro-batches across devices are also
    # tests/training/test_neighbouring_batches.py's four-device checks): -m slow.
    pytest.param({'data.augmult': 2, 'data.random_flip': True,
                  'training.micro_batch_size': 8}, marks=pytest.mark.slow),
], ids=['plain', 'augmult_microbatch'])
def test_two_processes_match_one_process(tmp_path, env, overrides):
  one, two = str(tmp_path / 'one'), str(tmp_path / 'two')
  run_one(one, env, overrides)
  outs = run_job(two, env, overrides)
  assert_same_run(one, two)
  # Only process 0 wrote: exactly the files of a one-process run, complete.
  assert files(two) == files(one)
  assert os.listdir(os.path.join(two, checkpoint_store.CHECKPOINTS)) == ['24']
  for name in (run_files.CONFIG, run_files.PRIVACY, run_files.PRIVACY_MD,
               run_files.SUMMARY):
    assert os.path.getsize(os.path.join(two, name)) > 0
  assert run_files.read_json(two, run_files.SUMMARY)['device'] == 'cpu x4'
  # ...and printed: process 1's stdout is empty, process 0's has the progress.
  assert 'done: test accuracy' in outs[0][1]
  # (but gloo's connection lines from the collectives that check the job's size)
  assert [l for l in outs[1][1].splitlines() if not l.startswith('[Gloo]')] == []


def test_killed_process_stops_the_job_and_the_same_commands_resume(tmp_path, env):
  """With the run's secret, drawn by process 0 (the default: no seeded noise)."""
  reference, resumed = str(tmp_path / 'reference'), str(tmp_path / 'resumed')
  overrides = {'training.checkpoint_every_steps': 3, 'training.eval_every_steps': 0,
               'privacy.insecure_seeded_noise': False}
  procs = start_job(resumed, env, overrides, extra=['--distributed_timeout=15'])
  try:
    folder = os.path.join(resumed, checkpoint_store.CHECKPOINTS)
    deadline = time.time() + 180
    while not (os.path.isdir(folder) and any(n.isdigit() for n in os.listdir(folder))):
      assert all(p.poll() is None for p in procs), finish(procs)
      assert time.time() < deadline, 'no checkpoint appeared'
      time.sleep(0.01)
    procs[1].kill()
    killed = time.time()
    rc0, _, err0 = finish(procs[:1], timeout=120)[0]
    stopped_after = time.time() - killed
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
      p.communicate()
  assert procs[1].returncode == -9
  assert rc0 != 0, 'process 0 finished although process 1 was killed'
  assert stopped_after < 60, f'process 0 took {stopped_after:.0f}s to stop'
  # The runtime aborts process 0. It usually names the cause ('stopped sending
  # heartbeats' / 'another task died'), but a collective can also fail first with a
  # plain fatal error, so only the bounded, non-zero stop is asserted.
  assert err0, 'process 0 stopped without saying why'
  assert not os.path.exists(os.path.join(resumed, run_files.SUMMARY))
  # Process 0 drew the secret and wrote it, owner-only, once; no other secret file.
  assert stat.S_IMODE(os.stat(secret_file.path(resumed)).st_mode) == 0o600
  assert [n for n in os.listdir(resumed) if 'secret' in n] == [secret_file.SECRET_FILE]
  secret = secret_file.read(resumed)
  # One process, four devices, the same secret, uninterrupted: the reference.
  secret_file.write(reference, secret)
  run_one(reference, env, overrides)
  outs = run_job(resumed, env, overrides)
  assert 'resuming from the checkpoint of step' in outs[0][1]
  # Both processes drew the noise and batches of that secret, before and after the
  # resume (sigma = 2: another secret on either process moves the parameters far).
  assert_same_run(reference, resumed, whole_rows=False)
  assert 0 < run_files.read_json(resumed, run_files.SUMMARY)['resumed_from_step'] < 24
  assert not os.path.exists(secret_file.path(resumed))  # complete: deleted


def test_unreachable_coordinator_is_a_clear_error_within_the_timeout(tmp_path, env):
  port = free_port()  # nothing listens there
  start = time.time()
  result = subprocess.run(
      command(str(tmp_path / 'w'), 1, process=(1, 2, port),
              extra=['--distributed_timeout=3']),
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == 2
  assert time.time() - start < 60
  assert f'process 1 cannot reach the coordinator at localhost:{port}' in result.stderr
  assert 'Traceback' not in result.stderr


def test_mismatched_num_processes_is_a_clear_error(tmp_path, env):
  port = free_port()
  procs = [subprocess.Popen(
      command(str(tmp_path / 'w'), 1, process=(i, n, port),
              extra=['--distributed_timeout=20']),
      cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i, n in ((0, 2), (1, 3))]
  outs = finish(procs, timeout=120)
  for rc, _, err in outs:
    assert rc == 2, err[-2000:]
    assert 'process(es) 1 (--num_processes=3) were told otherwise' in err
  assert not os.path.exists(tmp_path / 'w' / run_files.CONFIG)


def test_a_host_with_another_copy_of_the_data_is_refused_before_training(tmp_path, env):
  """Each process reads config.data.path relative to its own folder, as two hosts
  read their own copies: process 1's copy differs from process 0's in one pixel of
  one training image (same N, same labels)."""
  data = digits.load()
  overrides = {**OVERRIDES, 'data.name': 'npz', 'data.path': 'data.npz',
               'data.num_classes': 10, 'privacy.insecure_seeded_noise': False}
  workdir, port = str(tmp_path / 'w'), free_port()
  procs = []
  for i in range(2):
    host = tmp_path / f'host{i}'
    host.mkdir()
    images = data.train.images[..., 0].copy()
    if i == 1:
      images[123, 4, 4] ^= 1
    np.savez(host / 'data.npz', x_train=images, y_train=data.train.labels,
             x_test=data.test.images[..., 0], y_test=data.test.labels)
    cmd = [sys.executable, os.path.join(ROOT, 'launch.py'),
           f'--config={os.path.join(ROOT, "configs", "quickstart.py")}',
           *[f'--config.{k}={v}' for k, v in overrides.items()],
           f'--workdir={workdir}', '--host_devices=1', f'--coordinator_address=localhost:{port}',
           '--num_processes=2', f'--process_id={i}', '--distributed_timeout=60']
    procs.append(subprocess.Popen(cmd, cwd=host, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True))
  outs = finish(procs, timeout=240)
  for i, (rc, _, err) in enumerate(outs):
    assert rc == 2, f'process {i}: {err[-3000:]}'
    errors = [line for line in err.splitlines() if line.startswith('error:')]
    assert errors == [f"error: process {i} of 2: process 1's training data differs from "
                      "process 0's: the record list differs (by image content). Every "
                      'process must read the same dataset (the same files at '
                      'config.data.path, or the same tfds_data_dir, on every host): each '
                      'would otherwise calibrate its own noise and sampling rate and draw '
                      'other records'], err[-3000:]
    assert 'Traceback' not in err
  # Refused before training: nothing written, not even the secret or config.json.
  assert not os.path.exists(workdir) or os.listdir(workdir) == []
