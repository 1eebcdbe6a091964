"""The runs behind results/audit.md: audit lower bounds against the accountant's epsilon
(both audit modes, eps 1/2/4/8) and the planted-bug table of the gradient audit.

  python results/audit_gradient.py power --eps=1,2,4,8 --runs=3 --out=/tmp/audit_power
  python results/audit_gradient.py detection --runs=5 --bug_runs=2 --out=/tmp/audit_bugs

Every run is `python launch.py` in a fresh workdir, with fresh secret noise (no
seeded noise) and config.seed = the run's index (so each run draws other canaries and
membership bits). `power` runs configs/quickstart_audit_gradient.py:eps=E (mode
'gradient') and configs/quickstart_audit.py with privacy.target_epsilon=E (mode
'input'). `detection` runs the gradient config at eps 4 on the code as it is, then
with each planted bug of tests/mutation_check.py (trainer_half_sigma,
trainer_sampler_2b, clip_2c_gradient_audit) planted in the working tree and restored
afterwards, whatever happens (run it on a clean checkout: it refuses modified files).
Each prints one markdown row per run: the bound, the ceiling, the accountant's
epsilon, whether the run printed its WARNING, the wall and CPU time.

The audit.json files are not private (computed from membership bits without noise);
the workdirs hold run files only, no secret (a completed run deletes it).
"""
import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUGS = ('trainer_half_sigma', 'trainer_sampler_2b', 'clip_2c_gradient_audit')


def _mutations():
  spec = importlib.util.spec_from_file_location(
      'mutation_check', os.path.join(ROOT, 'tests', 'mutation_check.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _run(config: str, workdir: str, extra=()) -> dict:
  """One launch.py run; its audit.json, summary.json and times."""
  command = [sys.executable, 'launch.py', f'--config={config}', f'--workdir={workdir}',
             '--config.wandb.mode=disabled', *extra]
  before = resource.getrusage(resource.RUSAGE_CHILDREN)
  start = time.time()
  proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
  wall = time.time() - start
  after = resource.getrusage(resource.RUSAGE_CHILDREN)
  if proc.returncode != 0:
    raise RuntimeError(f'{" ".join(command)} failed:\n{proc.stderr[-3000:]}')
  with open(os.path.join(workdir, 'audit.json')) as f:
    audit = json.load(f)
  with open(os.path.join(workdir, 'summary.json')) as f:
    summary = json.load(f)
  return {'audit': audit, 'summary': summary, 'wall': wall,
          'cpu': (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
          'warning': 'EXCEEDS' in proc.stdout}


def _row(label: str, seed: int, r: dict) -> str:
  a = r['audit']
  eps = a['epsilon']
  detail = f'{a["num_correct"]}/{a["num_guesses"]}'
  return (f'| {label} | {seed} | {eps:.3f} | {a["epsilon_lower_bound"]:.3f} | '
          f'{a["epsilon_lower_bound"] / eps:.2f} | {a.get("epsilon_ceiling", 0):.2f} | '
          f'{detail} | {"WARNING" if r["warning"] else "-"} | '
          f'{r["summary"]["test_accuracy"]:.3f} | {r["wall"]:.0f} s | {r["cpu"]:.0f} s |')


HEADER = ('| run | seed | accountant eps | audit bound | bound / eps | ceiling | '
          'correct / guesses | warning | test acc | wall | CPU |\n'
          '|---|---|---|---|---|---|---|---|---|---|---|')


def power(args):
  print(HEADER, flush=True)
  for eps in [float(e) for e in args.eps.split(',')]:
    for mode in args.modes.split(','):
      for seed in range(args.runs):
        workdir = os.path.join(args.out, f'{mode}_eps{eps:g}_seed{seed}')
        if mode == 'gradient':
          r = _run(f'configs/quickstart_audit_gradient.py:eps={eps:g}', workdir,
                   [f'--config.seed={seed}'])
        else:
          r = _run('configs/quickstart_audit.py', workdir,
                   [f'--config.seed={seed}', f'--config.privacy.target_epsilon={eps:g}'])
        print(_row(f'{mode}, eps {eps:g}', seed, r), flush=True)


def detection(args):
  mutation_check = _mutations()
  print(HEADER, flush=True)
  config = 'configs/quickstart_audit_gradient.py:eps=4'
  for seed in range(args.runs):
    r = _run(config, os.path.join(args.out, f'correct_seed{seed}'), [f'--config.seed={seed}'])
    print(_row('correct code', seed, r), flush=True)
  for bug in BUGS:
    path = mutation_check.MUTATIONS[bug][0]
    dirty = subprocess.run(['git', 'status', '--porcelain', path], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.strip()
    if dirty:
      raise SystemExit(f'{path} has uncommitted changes; commit or stash first')
    full, original = mutation_check._plant(bug)  # pylint: disable=protected-access
    try:
      for seed in range(args.bug_runs):
        r = _run(config, os.path.join(args.out, f'{bug}_seed{seed}'),
                 [f'--config.seed={seed}'])
        print(_row(f'planted: {bug}', seed, r), flush=True)
    finally:
      with open(full, 'w') as f:
        f.write(original)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('what', choices=('power', 'detection'))
  parser.add_argument('--eps', default='1,2,4,8')
  parser.add_argument('--modes', default='gradient,input')
  parser.add_argument('--runs', type=int, default=3)
  parser.add_argument('--bug_runs', type=int, default=2)
  parser.add_argument('--out', required=True)
  args = parser.parse_args()
  os.makedirs(args.out, exist_ok=True)
  {'power': power, 'detection': detection}[args.what](args)


if __name__ == '__main__':
  main()
