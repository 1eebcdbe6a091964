"""Which cluster scheduler started this process, read from the environment.

``detect_scheduler`` names the cluster environment that ``--distributed``
(jax.distributed.initialize() with no arguments) would join (Slurm, Open MPI,
Kubernetes, Cloud TPU), read from the variables jax.distributed reads, so that a
machine without one gets one clear error instead of JAX's; on Slurm with one task per
node every GPU the node gave the task stays visible (``keeps_every_local_gpu``: jax
alone would keep only the GPU numbered SLURM_LOCALID). No JAX import.
"""
import importlib.util
import os
import re

from image_classification import errors


class DistributedError(errors.UserError):
  """A multi-process job cannot start or continue; the message names the cause."""


# What jax.distributed.initialize() reads to detect each cluster (jax/_src/clusters/).
SLURM_VARIABLES = ('SLURM_JOB_ID', 'SLURM_STEP_NODELIST', 'SLURM_NTASKS', 'SLURM_PROCID',
                   'SLURM_LOCALID')
OPEN_MPI_VARIABLE = 'OMPI_MCA_orte_hnp_uri'
KUBERNETES_VARIABLE = 'KUBERNETES_SERVICE_HOST'
TPU_VARIABLES = ('TPU_WORKER_HOSTNAMES', 'TPU_PROCESS_ADDRESSES',
                 'MEGASCALE_COORDINATOR_ADDRESS')


def detect_scheduler(environ=None) -> str:
  """The cluster environment that ``jax.distributed.initialize()`` will detect here:
  'slurm', 'open mpi', 'kubernetes' or 'cloud tpu'.

  Raises:
    DistributedError: none is present (e.g. one machine and no scheduler), or one is
      half present in a way jax would not detect (a Slurm batch script that starts
      launch.py without srun; Kubernetes without the ``kubernetes`` package); the
      message says what to do instead.
  """
  env = os.environ if environ is None else environ
  slurm = [v for v in SLURM_VARIABLES if v in env]
  if len(slurm) == len(SLURM_VARIABLES):
    return 'slurm'
  if OPEN_MPI_VARIABLE in env:
    return 'open mpi'
  if KUBERNETES_VARIABLE in env:
    if importlib.util.find_spec('kubernetes') is None:
      raise DistributedError(
          f'--distributed: this is a Kubernetes pod ({KUBERNETES_VARIABLE} is set), but '
          "jax needs the 'kubernetes' Python package to find the job's coordinator, "
          'size and index: pip install kubernetes (the jax[k8s] extra), or pass '
          '--coordinator_address, --num_processes and --process_id (docs/scale_out.md)')
    return 'kubernetes'
  if any(v in env for v in TPU_VARIABLES) or importlib.util.find_spec('libtpu'):
    return 'cloud tpu'
  if slurm:
    missing = [v for v in SLURM_VARIABLES if v not in env]
    raise DistributedError(
        f'--distributed: this process runs inside Slurm job {env.get("SLURM_JOB_ID", "?")} '
        f'but outside a job step ({", ".join(missing)} unset), so jax cannot tell the '
        'processes apart: start it with srun inside the batch script (srun python '
        'launch.py ... --distributed; see examples/slurm_2_nodes_8_gpus.sbatch)')
  raise DistributedError(
      "--distributed found no cluster scheduler in this process's environment (Slurm "
      f'job step: {", ".join(SLURM_VARIABLES)}; Open MPI: {OPEN_MPI_VARIABLE}; '
      f'Kubernetes: {KUBERNETES_VARIABLE}; Cloud TPU). On one machine drop --distributed '
      '(one process already uses every local device); to join processes by hand, give '
      '--coordinator_address, --num_processes and --process_id instead')


def _expand_tasks_per_node(spec: str) -> list[int]:
  """Slurm's compressed task counts, e.g. '2(x3),1' -> [2, 2, 2, 1]."""
  counts = []
  for part in spec.split(','):
    match = re.fullmatch(r'\s*(\d+)(?:\(x(\d+)\))?\s*', part)
    if match is None:
      raise ValueError(f'cannot read tasks per node {spec!r}')
    counts += [int(match.group(1))] * int(match.group(2) or 1)
  return counts


def slurm_tasks_on_this_node(environ=None) -> int | None:
  """How many tasks of this Slurm job step run on this node (None: unknown)."""
  env = os.environ if environ is None else environ
  spec = env.get('SLURM_STEP_TASKS_PER_NODE') or env.get('SLURM_TASKS_PER_NODE')
  if not spec:
    return None
  try:
    counts = _expand_tasks_per_node(spec)
    return counts[int(env.get('SLURM_NODEID', 0))]
  except (ValueError, IndexError):
    return None


def keeps_every_local_gpu(scheduler: str, environ=None) -> bool:
  """Whether this process must keep every GPU of its node visible.

  jax restricts a Slurm task to the one GPU numbered SLURM_LOCALID (one process per
  GPU). With one task per node (``--ntasks-per-node=1 --gpus-per-node=8``, the layout
  of examples/slurm_2_nodes_8_gpus.sbatch) that would leave 7 of 8 GPUs idle, so the
  restriction is undone there; JAX_LOCAL_DEVICE_IDS, when set, still wins.
  """
  env = os.environ if environ is None else environ
  return (scheduler == 'slurm' and 'JAX_LOCAL_DEVICE_IDS' not in env
          and slurm_tasks_on_this_node(env) == 1)
