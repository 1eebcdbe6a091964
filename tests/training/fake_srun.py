"""A stand-in for Slurm's ``srun`` on one machine, for tests: starts the job step's
tasks as local processes with the variables a real job step gives each task.

  python tests/training/fake_srun.py [--srun-options ...] COMMAND ARGS...

The allocation comes from the environment a batch script would see (set by the
test): SLURM_JOB_ID, SLURM_JOB_NUM_NODES (N) and SLURM_NTASKS_PER_NODE (T). The step
has N x T tasks; task i gets SLURM_PROCID=i, SLURM_NODEID=i // T, SLURM_LOCALID=i % T,
SLURM_NTASKS, SLURM_STEP_NUM_NODES, SLURM_STEP_TASKS_PER_NODE='T(xN)' and, every
"node" being this machine, SLURM_STEP_NODELIST=SLURM_NODELIST=localhost. Exits with
the first non-zero status of the tasks (0 when all succeed), like srun.
"""
import os
import subprocess
import sys


def main(argv: list[str]) -> int:
  args = argv[1:]
  while args and args[0].startswith('-'):  # srun's own options (--kill-on-bad-exit=1)
    args = args[1:]
  nodes = int(os.environ.get('SLURM_JOB_NUM_NODES', '1'))
  per_node = int(os.environ.get('SLURM_NTASKS_PER_NODE', '1'))
  count = nodes * per_node
  procs = []
  for i in range(count):
    env = dict(os.environ)
    env.update(SLURM_NTASKS=str(count), SLURM_PROCID=str(i), SLURM_NODEID=str(i // per_node),
               SLURM_LOCALID=str(i % per_node), SLURM_STEP_ID='0',
               SLURM_STEP_NUM_NODES=str(nodes),
               SLURM_STEP_TASKS_PER_NODE=f'{per_node}(x{nodes})',
               SLURM_STEP_NODELIST='localhost', SLURM_NODELIST='localhost')
    procs.append(subprocess.Popen(args, env=env))
  codes = [p.wait() for p in procs]
  return next((c for c in codes if c), 0)


if __name__ == '__main__':
  sys.exit(main(sys.argv))
