"""Memory and disk (training/resources.py): the dry run's memory estimate and its
warning; running out of device or host memory, or of disk while checkpointing, ends
in one `error:` line naming the fix, leaves no temporary files, and the same command
(with a smaller micro-batch) resumes."""
import errno
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from image_classification import api
from image_classification.workdir import run_files
from image_classification.training import dp_step
from image_classification.training import resources

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHORT = {'training.num_steps': 4, 'training.batch_size': 32, 'training.log_every_steps': 2,
         'training.checkpoint_every_steps': 2, 'data.max_test_examples': 100,
         'wandb.mode': 'disabled'}


def _config(**overrides):
  return api.config('configs/quickstart.py', {**SHORT, **overrides})


def _leftovers(workdir):
  """Temporary files or folders anywhere under the workdir."""
  found = []
  for root, dirs, files in os.walk(workdir):
    for name in dirs + files:
      if ('.orbax-checkpoint-tmp' in name or name.endswith('.tmp')
          or (name.startswith('.') and '.json.' in name)):
        found.append(os.path.join(root, name))
  return found


@pytest.mark.parametrize('optimizer, multiplicity', [('sgd', 1), ('adam', 2)])
def test_the_estimate_sizes_parameters_and_optimizer_state(tmp_path, optimizer,
                                                           multiplicity):
  plan = api.train(_config(**{'training.optimizer.name': optimizer,
                              'training.micro_batch_size': 8,
                              'training.per_example_grads': 'fast'}),
                   str(tmp_path), dry_run=True)
  memory = plan['memory_estimate']
  parts, param_bytes = memory['parts'], 4 * plan['num_params']
  assert parts['parameters'] == parts['EMA'] == param_bytes
  # Parameters, EMA and the optimizer's moments (sgd momentum: 1, adam: 2).
  state = parts['parameters'] + parts['EMA'] + parts['optimizer state']
  assert 1 <= state / (param_bytes * (2 + multiplicity)) < 1.01
  assert parts['per-example gradients'] == 8 * param_bytes  # 'fast' keeps them all
  assert memory['micro_batch'] == 8 and memory['bytes_per_device'] > state
  assert memory['available_bytes'] > 0 and not memory['exceeds']


def test_the_dry_run_warns_when_the_estimate_exceeds_memory(tmp_path, monkeypatch,
                                                            capsys):
  """The issue's large images without image_size: 8 images of 700x700 make the
  quickstart CNN's flattened head 15.7M parameters; on a host with 1 GiB free the
  dry run says so and names the fix."""
  rng = np.random.default_rng(0)
  path = str(tmp_path / 'big.npz')
  np.savez(path, x_train=rng.integers(0, 255, (8, 700, 700, 1), np.uint8),
           y_train=np.arange(8) % 2, x_test=np.zeros((2, 700, 700, 1), np.uint8),
           y_test=np.arange(2))
  monkeypatch.setattr(resources, '_host_available', lambda: 2 ** 30)
  plan = api.train(_config(**{'data.name': 'npz', 'data.path': path,
                              'data.num_classes': 2, 'training.batch_size': 4,
                              'training.per_example_grads': 'fast',
                              'privacy.allow_large_delta': True}),
                   str(tmp_path / 'run'), dry_run=True)
  assert plan['num_params'] > 15_000_000 and plan['memory_estimate']['exceeds']
  out = capsys.readouterr().out
  assert 'warning: the run may not fit in memory: memory estimate per device' in out
  assert 'available: 1.0 GiB host memory available now' in out
  assert '--config.training.micro_batch_size (now 0, i.e. the whole per-device batch' in out
  assert "per_example_grads='ghost' (least memory)" in out
  assert 'memory estimate per device' in out.splitlines()[-1]


def _huge_allocation():
  """A real XLA out-of-memory error: a 4 TiB buffer."""
  jax.jit(lambda: jnp.ones((2 ** 40,), jnp.float32))().block_until_ready()


def test_out_of_device_memory_is_one_line_and_a_smaller_micro_batch_resumes(
    tmp_path, monkeypatch):
  real_run = dp_step.DPStep.run

  def run_out_of_memory_at_step_2(self, state, chunks):
    if int(state.step) == 2:
      _huge_allocation()
    return real_run(self, state, chunks)

  monkeypatch.setattr(dp_step.DPStep, 'run', run_out_of_memory_at_step_2)
  workdir = str(tmp_path / 'run')
  with pytest.raises(api.Error) as raised:
    api.train(_config(), workdir)
  message = str(raised.value)
  assert message.startswith('out of device memory (JaxRuntimeError: RESOURCE_EXHAUSTED')
  assert ('lower --config.training.micro_batch_size (now 0, the whole per-device '
          'batch;' in message)
  assert 'it resumes from the checkpoint of step 2' in message
  assert isinstance(raised.value.__cause__, resources.ResourceError)
  assert not _leftovers(workdir)
  monkeypatch.setattr(dp_step.DPStep, 'run', real_run)
  summary = api.train(_config(**{'training.micro_batch_size': 8}), workdir)
  assert summary['resumed_from_step'] == 2 and summary['steps'] == 4


def test_out_of_host_memory_names_host_memory(tmp_path, monkeypatch):
  def no_memory(self, state, chunks):
    raise MemoryError()
  monkeypatch.setattr(dp_step.DPStep, 'run', no_memory)
  with pytest.raises(api.Error, match=r'^out of host memory \(if it ran out while '
                     r'loading the data.*config.data.image_size.*\(MemoryError: '
                     r'MemoryError\).*starts again from step 0'):
    api.train(_config(), str(tmp_path))


def test_out_of_host_memory_in_a_dry_run_names_the_data_not_a_resume(tmp_path,
                                                                     monkeypatch):
  from image_classification.data import sources  # pylint: disable=g-import-not-at-top
  def no_memory(splits, image_size):
    raise MemoryError()
  monkeypatch.setattr(sources, 'resize_in_memory', no_memory)
  config = _config()
  with pytest.raises(api.Error, match=r'^out of host memory during the dry run .*'
                     r'config.data.image_size=.*Nothing was written') as raised:
    api.train(config, str(tmp_path / 'run'), dry_run=True)
  assert 'micro_batch_size' not in str(raised.value)
  assert 'step 0' not in str(raised.value)


# Runs launch.py with orbax's metadata writer failing for step 4's checkpoint as a
# full disk does (the state's arrays are being written beside it, in a temporary
# folder), after step 2's checkpoint was saved.
_DISK_FULL_DRIVER = textwrap.dedent('''
    import errno, runpy, sys
    from orbax.checkpoint._src.handlers import json_checkpoint_handler as handler
    real = handler.JsonCheckpointHandler._save_fn
    async def full(self, x, directory):
      if '4.orbax-checkpoint-tmp' in str(directory):
        raise OSError(errno.ENOSPC, 'No space left on device', str(directory))
      return await real(self, x, directory)
    handler.JsonCheckpointHandler._save_fn = full
    sys.argv = ['launch.py'] + sys.argv[1:]
    runpy.run_path('launch.py', run_name='__main__')
''')


def test_a_full_disk_while_checkpointing_is_one_line_and_the_run_resumes(tmp_path):
  workdir = str(tmp_path / 'run')
  args = ['--config=configs/quickstart.py', f'--workdir={workdir}'] + [
      f'--config.{k}={v}' for k, v in SHORT.items()]
  proc = subprocess.run([sys.executable, '-c', _DISK_FULL_DRIVER] + args, cwd=ROOT,
                        capture_output=True, text=True, timeout=300, check=False,
                        env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert proc.stderr.strip().splitlines() == [
      f'error: no space left on the disk of --workdir={workdir} ([Errno 28] No space '
      f"left on device: '{workdir}/checkpoints/4.orbax-checkpoint-tmp/metadata.orbax-"
      "checkpoint-tmp'): free space there and run the same command again: it resumes "
      'from the checkpoint of step 2 (unfinished files were removed, the complete '
      'checkpoints kept)'], proc.stderr[-3000:]
  assert not _leftovers(workdir)
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['2']
  summary = api.train(_config(), workdir)  # space freed: the same run resumes
  assert summary['resumed_from_step'] == 2 and summary['status'] == 'complete'


def test_what_counts_as_out_of_memory_or_disk():
  disk = OSError(errno.ENOSPC, 'No space left on device')
  wrapped = ValueError('tensorstore write failed')
  wrapped.__cause__ = disk
  assert resources.kind_of(wrapped) == 'disk'
  assert resources.kind_of(ValueError('NOT_FOUND: ... No space left on device')) == 'disk'
  assert resources.kind_of(OSError(errno.EDQUOT, 'Disk quota exceeded')) == 'disk'
  assert resources.kind_of(MemoryError()) == 'memory'
  assert resources.kind_of(OSError(errno.ENOENT, 'missing')) is None
  assert resources.kind_of(ValueError('RESOURCE_EXHAUSTED in a message')) is None
  with pytest.raises(Exception) as raised:
    _huge_allocation()
  assert resources.kind_of(raised.value) == 'memory'


def test_stray_files_are_removed_and_complete_files_kept(tmp_path):
  workdir = str(tmp_path)
  run_files.write_json(workdir, run_files.SUMMARY, {'status': 'x'})
  os.makedirs(tmp_path / 'checkpoints' / '2')
  os.makedirs(tmp_path / 'checkpoints' / '4.orbax-checkpoint-tmp' / 'state')
  os.makedirs(tmp_path / 'export')
  (tmp_path / '.privacy.json.ab12cd34').write_text('{')
  (tmp_path / 'export' / 'params.msgpack.tmp').write_bytes(b'')
  removed = resources.remove_stray_files(workdir)
  assert len(removed) == 3 and not _leftovers(workdir)
  assert sorted(os.listdir(tmp_path)) == ['checkpoints', 'export', 'summary.json']
  assert os.listdir(tmp_path / 'checkpoints') == ['2']
