"""--distributed on a (faked) Slurm cluster, and without any scheduler.

The 2-process test runs examples/slurm_2_nodes_8_gpus.sbatch itself with bash, with
tests/training/fake_srun.py as `srun`: two local processes get the variables of a job
step of 2 nodes x 1 task (SLURM_JOB_ID, SLURM_NTASKS, SLURM_PROCID, SLURM_LOCALID,
SLURM_NODEID, SLURM_STEP_NODELIST=localhost, SLURM_STEP_TASKS_PER_NODE=1(x2), ...), and
jax.distributed finds the coordinator (port from the job id), the process count and
ids there; nothing else tells them. They must train exactly like one process with
two devices (seeded noise: same metrics rows, epsilon and exported parameters).
"""
import os
import socket
import stat
import subprocess
import sys

import pytest

from image_classification.hosts import schedulers
from tests.training import test_multiprocess as multiprocess

ROOT = multiprocess.ROOT
SCRIPT = os.path.join(ROOT, 'examples', 'slurm_2_nodes_8_gpus.sbatch')


# Fewer steps than test_multiprocess.py: this test is about who joins, not the step.
SHORT = {'training.num_steps': 8, 'training.log_every_steps': 4,
         'training.eval_every_steps': 4}


def slurm_job_id_with_a_free_port() -> int:
  """A job id whose coordinator port (jax: 61440 + id % 4096) is free here."""
  for offset in range(4096):
    with socket.socket() as s:
      try:
        s.bind(('127.0.0.1', 61440 + offset))
      except OSError:
        continue
    return 4096 * 7 + offset
  raise RuntimeError('no free port in 61440..65535')


def fake_srun_on_path(tmp_path) -> str:
  folder = tmp_path / 'bin'
  folder.mkdir()
  srun = folder / 'srun'
  srun.write_text(f'#!/bin/sh\nexec {sys.executable} '
                  f'{os.path.join(ROOT, "tests", "training", "fake_srun.py")} "$@"\n')
  srun.chmod(srun.stat().st_mode | stat.S_IEXEC)
  return str(folder)


# Slow (about 25 s; two processes training like one is also test_multiprocess.py).
# `python -m pytest -q -m slow` runs it.
@pytest.mark.slow
def test_sbatch_script_on_fake_slurm_trains_like_one_process_with_two_devices(tmp_path):
  env = dict(os.environ)
  env.update(JAX_COMPILATION_CACHE_DIR=str(tmp_path / 'jax_cache'),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0', PYTHONPATH=ROOT,
             JAX_PLATFORMS='cpu', XLA_FLAGS='')
  one, two = str(tmp_path / 'one'), str(tmp_path / 'two')
  multiprocess.run_one(one, env, SHORT, devices=2)

  slurm = dict(env)
  for name in list(slurm):
    if name.startswith(('SLURM_', 'SRUN_')) or name in ('JAX_COORDINATOR_PORT',
                                                       'JAX_COORDINATOR_ADDRESS'):
      del slurm[name]
  # What sbatch gives the batch script of --nodes=2 --ntasks-per-node=1.
  slurm.update(PATH=fake_srun_on_path(tmp_path) + os.pathsep + env['PATH'],
               SLURM_JOB_ID=str(slurm_job_id_with_a_free_port()), SLURM_JOB_NUM_NODES='2',
               SLURM_NTASKS_PER_NODE='1', SLURM_NTASKS='2', SLURM_NODELIST='localhost',
               SLURM_CPUS_PER_TASK='1', CONFIG='configs/quickstart.py', WORKDIR=two,
               PYTHON=sys.executable)
  overrides = [f'--config.{k}={v}'
               for k, v in {**multiprocess.OVERRIDES, **SHORT}.items()]
  result = subprocess.run(['bash', SCRIPT, *overrides, '--host_devices=1'], cwd=ROOT,
                          env=slurm, capture_output=True, text=True, timeout=400,
                          check=False)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  assert ('joined a job of 2 processes (detected from slurm), every GPU of each node '
          'visible to its one process') in result.stdout
  multiprocess.assert_same_run(one, two)
  assert multiprocess.files(two) == multiprocess.files(one)
  summary = multiprocess.run_files.read_json(two, multiprocess.run_files.SUMMARY)
  assert summary['device'] == 'cpu x2'


def test_distributed_without_a_scheduler_is_one_error_line(tmp_path):
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(('SLURM_', 'OMPI_', 'KUBERNETES_', 'TPU_', 'MEGASCALE_'))}
  env.update(PYTHONPATH=ROOT, JAX_PLATFORMS='cpu')
  result = subprocess.run(
      [sys.executable, 'launch.py', '--config=configs/quickstart.py',
       f'--workdir={tmp_path / "w"}', '--distributed', '--compilation_cache_dir=none'],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == 2
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1, result.stderr
  assert lines[0].startswith('error: --distributed found no cluster scheduler')
  assert 'drop --distributed' in lines[0]
  assert not os.path.exists(tmp_path / 'w')


SLURM_STEP = {'SLURM_JOB_ID': '12', 'SLURM_STEP_NODELIST': 'n[01-02]', 'SLURM_NTASKS': '2',
              'SLURM_PROCID': '1', 'SLURM_LOCALID': '0'}


@pytest.mark.parametrize('environ, expected', [
    (SLURM_STEP, 'slurm'),
    ({'OMPI_MCA_orte_hnp_uri': '1.0;tcp://10.0.0.1:1'}, 'open mpi'),
    ({'TPU_WORKER_HOSTNAMES': 'a,b'}, 'cloud tpu'),
])
def test_detect_scheduler_reads_what_jax_reads(environ, expected):
  assert schedulers.detect_scheduler(environ) == expected


@pytest.mark.parametrize('environ, match', [
    ({}, 'found no cluster scheduler'),
    ({'SLURM_JOB_ID': '12', 'SLURM_NTASKS': '2'},
     r'outside a job step \(SLURM_STEP_NODELIST, SLURM_PROCID, SLURM_LOCALID unset\).*srun'),
])
def test_detect_scheduler_says_what_is_missing(environ, match):
  with pytest.raises(schedulers.DistributedError, match=match):
    schedulers.detect_scheduler(environ)


def test_kubernetes_needs_the_kubernetes_package():
  try:
    import kubernetes  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    with pytest.raises(schedulers.DistributedError, match='pip install kubernetes'):
      schedulers.detect_scheduler({'KUBERNETES_SERVICE_HOST': '10.0.0.1'})
  else:
    assert schedulers.detect_scheduler(
        {'KUBERNETES_SERVICE_HOST': '10.0.0.1'}) == 'kubernetes'


@pytest.mark.parametrize('spec, node, tasks', [
    ('1(x2)', '1', 1), ('8(x2)', '0', 8), ('2(x3),1', '3', 1), ('2(x3),1', '2', 2),
    ('4', None, 4), ('garbage', '0', None)])
def test_slurm_tasks_on_this_node(spec, node, tasks):
  environ = {'SLURM_STEP_TASKS_PER_NODE': spec}
  if node is not None:
    environ['SLURM_NODEID'] = node
  assert schedulers.slurm_tasks_on_this_node(environ) == tasks


def test_one_task_per_node_keeps_every_gpu_and_one_per_gpu_does_not():
  one_per_node = {**SLURM_STEP, 'SLURM_STEP_TASKS_PER_NODE': '1(x2)', 'SLURM_NODEID': '1'}
  one_per_gpu = {**SLURM_STEP, 'SLURM_STEP_TASKS_PER_NODE': '8(x2)', 'SLURM_NODEID': '1'}
  assert schedulers.keeps_every_local_gpu('slurm', one_per_node)
  assert not schedulers.keeps_every_local_gpu('slurm', one_per_gpu)
  assert not schedulers.keeps_every_local_gpu(
      'slurm', {**one_per_node, 'JAX_LOCAL_DEVICE_IDS': '0'})
  assert not schedulers.keeps_every_local_gpu('kubernetes', one_per_node)


def test_the_sbatch_script_asks_for_two_nodes_of_eight_gpus_one_process_each():
  with open(SCRIPT) as f:
    lines = f.read().splitlines()
  for line in ('#SBATCH --nodes=2', '#SBATCH --ntasks-per-node=1',
               '#SBATCH --gpus-per-node=8'):
    assert line in lines
  [srun] = [l for l in lines if l.startswith('srun ')]
  assert '--distributed' in srun or '--distributed' in lines[lines.index(srun) + 1]
  assert subprocess.run(['bash', '-n', SCRIPT], check=False).returncode == 0
