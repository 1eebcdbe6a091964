"""The runs behind results/audit.md: audit lower bounds against the accountant's epsilon
(both audit modes, eps 1/2/4/8) and the planted-bug table of the gradient audit.

  python results/audit_gradient.py power --eps=1,2,4,8 --runs=3 --out=/tmp/audit_power
  python results/audit_gradient.py detection --runs=5 --bug_runs=2 --out=/tmp/audit_bugs
  python results/audit_gradient.py statistics --out=/tmp/audit_stats

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

`statistics` trains nothing: on scores simulated in numpy (fixed seeds) it compares
the bounds the audits could use on the same scores: our input-audit statistic
(statistics.audit_from_scores: 14 guess counts fixed in advance, both ends, union
bound) with jax-privacy's epsilon_one_run / epsilon_one_run_fdp (every threshold,
Bonferroni); and, for idealised gradient canaries of the quickstart's audited plan,
the gradient audit's k fixed in advance against jax-privacy's Bonferroni search.

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


def statistics_comparison(args):
  """Same scores, several statistics (mean +- sd over trials)."""
  del args
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jax_privacy import auditing  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, ROOT)
  from image_classification.audit import fdp  # pylint: disable=g-import-not-at-top
  from image_classification.audit import gradient_hook  # pylint: disable=g-import-not-at-top
  from image_classification.audit import gradient_scoring  # pylint: disable=g-import-not-at-top
  from image_classification.audit import statistics  # pylint: disable=g-import-not-at-top
  delta, trials = 1e-5, 10

  def fmt(values):
    return f'{np.mean(values):.2f} +- {np.std(values):.2f}'

  print('Input-audit-like scores: score = mu * included + N(0, 1).\n')
  print('| m | mu | ours: 14 fixed guess counts, both ends | jax-privacy epsilon_one_run '
        '(Bonferroni) | jax-privacy epsilon_one_run_fdp (Bonferroni) |\n|---|---|---|---|---|')
  for m in (500, 1000, 5000):
    for mu in (1.0, 2.0, 4.0):
      rng = np.random.default_rng([m, int(mu * 10)])
      ours, steinke, gdp = [], [], []
      for _ in range(trials):
        included = rng.random(m) < 0.5
        scores = mu * included + rng.standard_normal(m)
        ours.append(statistics.audit_from_scores(scores, included, delta, 0.95)
                    ['epsilon_lower_bound'])
        auditor = auditing.CanaryScoreAuditor(scores[included], scores[~included])
        steinke.append(auditor.epsilon_one_run(0.05, delta))
        gdp.append(auditor.epsilon_one_run_fdp(0.05, delta))
      print(f'| {m} | {mu:g} | {fmt(ours)} | {fmt(steinke)} | {fmt(gdp)} |', flush=True)

  print('\nIdealised gradient canaries of configs/quickstart_audit_gradient.py (m = 5000, '
        'T = 200, the plan\'s q and sigma, llr scores).\n')
  print('| eps | q | sigma | k (fixed in advance) | fdp at k (Gaussian curves) | '
        'one_run at k | jax-privacy epsilon_one_run_fdp (Bonferroni) | '
        'jax-privacy epsilon_one_run (Bonferroni) |\n|---|---|---|---|---|---|---|---|')
  from configs import quickstart_audit_gradient  # pylint: disable=g-import-not-at-top
  from image_classification import plan as plan_lib  # pylint: disable=g-import-not-at-top
  for eps in (1.0, 2.0, 4.0, 8.0):
    plan = plan_lib.make_plan(quickstart_audit_gradient.get_config(f'eps={eps:g}'),
                              1437 + 2500)  # N with m / 2 canaries included
    q, sigma, m, steps = plan.sampling_rate, plan.noise_multiplier, 5000, plan.steps
    k = gradient_hook.choose_num_guesses(m, q, sigma, 1.0, steps, delta, 0.95, eps)
    rng = np.random.default_rng([int(eps), 2026])
    at_k, steinke_k, bonf_gdp, bonf_steinke = [], [], [], []
    for _ in range(trials):
      included = rng.random(m) < 0.5
      x = ((rng.random((steps, m)) < q) & included) + sigma * rng.standard_normal((steps, m))
      scores = gradient_scoring.llr_scores(x, q, sigma, 1.0)
      c = gradient_scoring.top_k_correct(scores, included, k)
      at_k.append(fdp.gaussian_epsilon(fdp.gaussian_mu_bound(m, k, c, 0.95), delta))
      steinke_k.append(statistics.epsilon_lower_bound(c, k, m, delta, 0.95))
      auditor = auditing.CanaryScoreAuditor(scores[included], scores[~included])
      bonf_gdp.append(auditor.epsilon_one_run_fdp(0.05, delta))
      bonf_steinke.append(auditor.epsilon_one_run(0.05, delta))
    print(f'| {eps:g} | {q:.3f} | {sigma:.3f} | {k} | {fmt(at_k)} | {fmt(steinke_k)} | '
          f'{fmt(bonf_gdp)} | {fmt(bonf_steinke)} |', flush=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('what', choices=('power', 'detection', 'statistics'))
  parser.add_argument('--eps', default='1,2,4,8')
  parser.add_argument('--modes', default='gradient,input')
  parser.add_argument('--runs', type=int, default=3)
  parser.add_argument('--bug_runs', type=int, default=2)
  parser.add_argument('--out', required=True)
  args = parser.parse_args()
  os.makedirs(args.out, exist_ok=True)
  {'power': power, 'detection': detection,
   'statistics': statistics_comparison}[args.what](args)


if __name__ == '__main__':
  main()
