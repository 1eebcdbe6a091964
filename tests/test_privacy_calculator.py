"""The privacy calculator (image_classification/privacy_calculator.py): a run's numbers
without a config, dataset or workdir. Its figures are those of the plan a run with the
same numbers has (a dry run's plan.json, plan.make_plan on a configs/ file); sigma from
a target round-trips; the steps a budget allows are the most that stay within it; every
bad argument is one line naming its flag."""
import io
import json
import os

import pytest

from configs import quickstart
from configs import quickstart_bandmf
from image_classification import plan as plan_lib
from image_classification import privacy_calculator as calculator
from image_classification.data.readers import digits
from image_classification.training import loop

PAPER = dict(dataset_size=50_000, batch_size=4096, steps=875, noise_multiplier=10.0,
             delta=1e-5)  # De et al. 2022, CIFAR-10 WRN-16-4 at epsilon 1


def _main(args):
  out, err = io.StringIO(), io.StringIO()
  code = calculator.main(args, out=out, err=err)
  return code, out.getvalue(), err.getvalue()


def test_the_papers_cifar10_epsilon_1_plan_gives_0_988_under_rdp():
  assert calculator.epsilon(**PAPER) == pytest.approx(0.9877, abs=1e-3)
  code, out, err = _main(['launch.py', '--privacy_calculator', '--dataset_size=50000',
                          '--batch_size=4096', '--steps=875', '--noise_multiplier=10',
                          '--delta=1e-5'])
  assert code == 0 and not err
  lines = out.splitlines()
  assert lines[0] == 'Privacy of DP-SGD training (solved for epsilon)'
  assert any(l.split() == ['epsilon', '0.9878', '<-'] for l in lines), out  # rounded up
  assert any(l.split()[:2] == ['steps', '875'] and '71.68 epochs' in l for l in lines)
  assert 'q = 0.08192' in out and 'add/remove-one' in out


@pytest.fixture(scope='module')
def quickstart_dry_run(tmp_path_factory):
  """plan.json of `launch.py --config=configs/quickstart.py --dry_run` (the plan the
  run's privacy.json reports), and the digits training-set size."""
  config = quickstart.get_config()
  config.wandb.mode = 'disabled'
  workdir = str(tmp_path_factory.mktemp('dry_run'))
  loop.train(config, workdir, dry_run=True)
  with open(os.path.join(workdir, 'plan.json')) as f:
    return json.load(f), digits.load().train.num_examples, config


def test_numbers_equal_a_dry_runs_plan_json(quickstart_dry_run):
  plan_json, n, config = quickstart_dry_run
  common = dict(dataset_size=n, batch_size=config.training.batch_size,
                delta=config.privacy.delta)
  # Calibrated: the same sigma and epsilon as the run's plan, to the last bit.
  calc = calculator.calculate(steps=config.training.num_steps,
                              target_epsilon=config.privacy.target_epsilon, **common)
  for field in ('noise_multiplier', 'epsilon', 'steps', 'sampling_rate', 'dataset_size',
                'expected_batch_size', 'neighboring_relation', 'accountant', 'sampling'):
    assert getattr(calc.plan, field) == plan_json[field], field
  # The other way: that sigma gives the run's epsilon; epochs give the same steps.
  epochs = plan_json['steps'] * common['batch_size'] / n
  assert calculator.epsilon(epochs=epochs, noise_multiplier=plan_json['noise_multiplier'],
                            **common) == plan_json['epsilon']
  code, out, _ = _main([f'--dataset_size={n}', '--batch_size=512', '--steps=200',
                        '--target_epsilon=4'])
  assert code == 0
  printed = float(next(l for l in out.splitlines()
                       if l.startswith('  noise multiplier sigma')).split()[3])
  assert printed >= plan_json['noise_multiplier']  # rounded up: still within the target
  assert printed == pytest.approx(plan_json['noise_multiplier'], rel=1e-5)


@pytest.mark.parametrize('privacy', [dict(sampling='fixed'), dict(accountant='pld'),
                                     dict(num_bands=2)], ids=str)
def test_numbers_equal_make_plan_on_the_same_config(privacy):
  config = (quickstart_bandmf if 'num_bands' in privacy else quickstart).get_config()
  config.training.num_steps = 40
  config.privacy.noise_multiplier = 3.0
  config.privacy.target_epsilon = 100.0
  for k, v in privacy.items():
    config.privacy[k] = v
  n = 1437
  expected = plan_lib.make_plan(config, n)
  calc = calculator.calculate(
      dataset_size=n, batch_size=config.training.batch_size, steps=40,
      noise_multiplier=3.0, delta=config.privacy.delta,
      accountant=config.privacy.accountant, sampling=config.privacy.sampling,
      num_bands=privacy.get('num_bands', 1))
  assert calc.plan.epsilon == expected.epsilon
  assert calc.plan.sampling_rate == expected.sampling_rate
  assert calc.plan.mechanism_name == expected.mechanism_name


@pytest.mark.parametrize('target', [0.5, 1.0, 8.0])
def test_sigma_from_a_target_round_trips(target):
  common = {k: v for k, v in PAPER.items() if k != 'noise_multiplier'}
  sigma = calculator.noise_multiplier(target_epsilon=target, **common)
  eps = calculator.epsilon(noise_multiplier=sigma, **common)
  assert eps <= target and eps == pytest.approx(target, rel=2e-3)
  assert calculator.epsilon(noise_multiplier=sigma * 0.995, **common) > target
  # The printed sigma (rounded up to 6 digits) stays within the target too.
  assert calculator.epsilon(noise_multiplier=calculator.round_up(sigma, 6),
                            **common) <= target
  if target == 1.0:
    assert sigma == pytest.approx(10.0, rel=0.02)  # the paper's sigma for epsilon 1


@pytest.mark.parametrize('bands', [1, 4])
def test_steps_a_budget_allows_are_the_most_within_it(bands):
  common = dict(dataset_size=50_000, batch_size=1024, noise_multiplier=3.0,
                delta=1e-5, num_bands=bands)
  steps = calculator.max_steps(target_epsilon=2.0, **common)
  assert steps % bands == 0
  assert calculator.epsilon(steps=steps, **common) <= 2.0
  assert calculator.epsilon(steps=steps + bands, **common) > 2.0
  code, out, _ = _main(['--dataset_size=50000', '--batch_size=1024',
                        '--noise_multiplier=3', '--target_epsilon=2',
                        f'--num_bands={bands}'])
  assert code == 0 and 'solved for steps' in out
  assert f'steps                   {steps} = ' in out


def test_epsilon_and_rounding_up():
  assert calculator.round_up(0.98770876) == 0.9878
  assert calculator.round_up(4.0) == 4.0
  assert calculator.round_up(1.00001) == 1.001
  assert calculator.round_up(123456.1, 4) == 123500.0


@pytest.mark.parametrize('args, flag, fix', [
    (['--dataset_size=0'], '--dataset_size=0', 'whole number >= 1'),
    (['--batch_size=60000'], '--batch_size=60000', 'larger than --dataset_size'),
    (['--steps=10', '--epochs=3'], '--epochs=3', 'give one of them'),
    (['--steps=0'], '--steps=0', 'whole number >= 1'),
    (['--steps=2.5'], '--steps=2.5', 'whole number'),
    (['--epochs=-1'], '--epochs=-1', '> 0'),
    (['--noise_multiplier=0'], '--noise_multiplier=0', 'no privacy'),
    (['--target_epsilon=inf'], '--target_epsilon=inf', 'finite number > 0'),
    (['--delta=1'], '--delta=1', 'must be in (0, 1)'),
    (['--accountant=moments'], '--accountant=moments', 'rdp, pld'),
    (['--sampling=shuffle'], '--sampling=shuffle', 'poisson, fixed'),
    (['--num_bands=3', '--sampling=fixed'], '--num_bands=3', '--sampling=poisson'),
    (['--num_bands=3'], '--num_bands=3', 'set --steps to 99'),
    (['--sampling=fixed', '--accountant=pld'], '--accountant', '--accountant=rdp'),
    (['--noise_multiplier=0.5', '--target_epsilon=1'], '--noise_multiplier=0.5',
     'train fewer steps'),
    (['--batch_sise=10'], '--batch_sise=10', 'did you mean --batch_size?'),
    (['--steps'], '--steps', '--steps=VALUE'),
    (['--steps=many'], '--steps=many', 'not a number'),
])
def test_bad_arguments_are_one_line_naming_the_flag_and_the_fix(args, flag, fix):
  base = {'--dataset_size': '50000', '--batch_size': '4096', '--steps': '100',
          '--noise_multiplier': '10'}
  given = {a.partition('=')[0] for a in args}
  if '--epochs' in given or '--steps' in given:
    base.pop('--steps')
  if '--target_epsilon' in given and '--noise_multiplier' not in given:
    base.pop('--noise_multiplier')
  code, out, err = _main([f'{k}={v}' for k, v in base.items() if k not in given] + args)
  assert code == 2 and not out
  assert err.count('\n') == 1 and err.startswith('error: '), err
  assert flag in err and fix in err, err


def test_missing_arguments_and_help():
  code, _, err = _main(['--dataset_size=100', '--batch_size=10', '--steps=5'])
  assert code == 2 and '--noise_multiplier / --target_epsilon' in err
  code, _, err = _main(['--dataset_size=100', '--batch_size=10', '--noise_multiplier=2'])
  assert code == 2 and '--steps / --epochs' in err
  code, out, _ = _main(['--help'])
  assert code == 0 and '--privacy_calculator --dataset_size=N' in out
  for flag in calculator.FLAGS:
    assert f'--{flag}' in out
  with pytest.raises(calculator.CalculatorError, match='--noise_multiplier: leave it'):
    calculator.noise_multiplier(noise_multiplier=2.0, target_epsilon=1.0, **{
        k: v for k, v in PAPER.items() if k != 'noise_multiplier'})


def test_a_large_delta_is_computed_with_a_warning():
  calc = calculator.calculate(dataset_size=100, batch_size=10, steps=10,
                              noise_multiplier=1.0, delta=0.1)
  assert calc.warnings and '1/N' in calc.warnings[0]
  assert 'warning: --delta=0.1 is >= 1/N' in calculator.format_calculation(calc)
