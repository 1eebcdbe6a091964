"""The privacy calculator: epsilon, sigma or steps of a DP-SGD (or BandMF) plan from a
few numbers, with no config file, dataset or workdir (like TF Privacy's
compute_dp_sgd_privacy).

Give the training-set size N, the expected batch size B, the length (steps or epochs)
and either the noise multiplier sigma (-> epsilon) or a target epsilon (-> the
smallest sigma that stays within it); with sigma AND a target epsilon but no length,
it gives the most steps the budget allows. ``sampling``, ``accountant`` and
``num_bands`` mean what they mean in a config (privacy.sampling, privacy.accountant,
privacy.num_bands; num_bands > 1 is BandMF).

Nothing is accounted here: every figure comes from ``plan.make_plan`` on the config
fields a run with these numbers would have (``privacy_config``), so it is exactly the
epsilon / sigma that run's plan.json and privacy.json report. Errors are one line
(``CalculatorError``) that names the argument as its command-line flag
(--dataset_size, --batch_size, --steps, --epochs, --noise_multiplier,
--target_epsilon, --delta, --accountant, --sampling, --num_bands) and what fixes it.

Usage::

  privacy_calculator.epsilon(dataset_size=50_000, batch_size=4096, steps=875,
                             noise_multiplier=10.0, delta=1e-5)        # 0.98771
  privacy_calculator.main(['--dataset_size=50000', '--batch_size=4096',
                           '--steps=875', '--noise_multiplier=10', '--delta=1e-5'])
"""
import dataclasses
import decimal
import difflib
import math
import sys

from absl import logging
import ml_collections

from image_classification import plan as plan_lib
from image_classification.privacy import accounting
from image_classification.privacy import batch_selection
from image_classification import errors

# The arguments, as the flags that will carry them (launch.py --privacy_calculator).
FLAGS = ('dataset_size', 'batch_size', 'steps', 'epochs', 'noise_multiplier',
         'target_epsilon', 'delta', 'accountant', 'sampling', 'num_bands')
_INTEGER_FLAGS = ('dataset_size', 'batch_size', 'steps', 'num_bands')
_FLOAT_FLAGS = ('epochs', 'noise_multiplier', 'target_epsilon', 'delta')
DEFAULTS = dict(delta=1e-5, accountant='rdp', sampling='poisson', num_bands=1)

# The most steps the budget search looks at; beyond it, "at least this many".
MAX_STEPS_SEARCHED = 10**6

# Config field (as the plan's messages name it) -> the calculator's flag.
_FIELD_TO_FLAG = (
    ('config.training.num_steps', '--steps'), ('training.num_steps', '--steps'),
    ('config.training.batch_size', '--batch_size'),
    ('training.batch_size', '--batch_size'),
    ('config.privacy.target_epsilon', '--target_epsilon'),
    ('config.privacy.noise_multiplier', '--noise_multiplier'),
    ('config.privacy.delta', '--delta'), ('config.privacy.accountant', '--accountant'),
    ('config.privacy.sampling', '--sampling'),
    ('config.privacy.num_bands', '--num_bands'),
    ("accountant='rdp'", '--accountant=rdp'), ("sampling='poisson'", '--sampling=poisson'),
    ('unset noise_multiplier to calibrate it', 'give --target_epsilon alone to calibrate'),
)

USAGE = """\
usage: python launch.py --privacy_calculator --dataset_size=N --batch_size=B
         (--steps=T | --epochs=E) (--noise_multiplier=SIGMA | --target_epsilon=EPS)
         [--delta=1e-5] [--accountant=rdp|pld] [--sampling=poisson|fixed]
         [--num_bands=1]
       or --noise_multiplier and --target_epsilon without --steps/--epochs: the most
       steps that budget allows.
e.g. (De et al. 2022, CIFAR-10 at epsilon 1; prints epsilon 0.9878 under RDP):
  python launch.py --privacy_calculator --dataset_size=50000 --batch_size=4096 \\
      --steps=875 --noise_multiplier=10 --delta=1e-5"""


class CalculatorError(errors.UserError):
  """A bad argument; the message names its flag and the fix (one line)."""


@dataclasses.dataclass(frozen=True)
class Calculation:
  """What the calculator found. ``plan``: the plan a run with these numbers would
  have (its epsilon, noise_multiplier, steps, sampling_rate are plan.json's);
  ``solved_for``: 'epsilon', 'noise_multiplier' or 'steps'; ``steps_capped``: the
  budget allows at least MAX_STEPS_SEARCHED steps (not searched further)."""
  plan: plan_lib.PrivacyPlan
  solved_for: str
  target_epsilon: float | None = None
  steps_capped: bool = False
  warnings: tuple[str, ...] = ()

  @property
  def epochs(self) -> float:
    """Steps x B / N: passes over the data, in expectation."""
    return self.plan.steps * self.plan.expected_batch_size / self.plan.dataset_size


# ------------------------------------------------------------------ validation
def _fail(flag: str, value, why: str):
  raise CalculatorError(f'--{flag}={value}: {why}')


def _whole(flag: str, value, minimum: int = 1) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, float)) or (
      isinstance(value, float) and not (math.isfinite(value) and value.is_integer())):
    _fail(flag, value, f'must be a whole number >= {minimum}')
  if value < minimum:
    _fail(flag, value, f'must be a whole number >= {minimum}')
  return int(value)


def _positive(flag: str, value) -> float:
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
      math.isfinite(value) and value > 0):
    _fail(flag, value, 'must be a finite number > 0')
  return float(value)


def privacy_config(*, dataset_size: int, batch_size: int, steps: int | None = None,
                   epochs: float | None = None, noise_multiplier: float | None = None,
                   target_epsilon: float | None = None, delta: float = 1e-5,
                   accountant: str = 'rdp', sampling: str = 'poisson',
                   num_bands: int = 1) -> ml_collections.ConfigDict:
  """The privacy and training fields of a config whose run has this plan, after
  checking every argument (CalculatorError naming its flag). Exactly one of
  ``steps`` / ``epochs``; ``noise_multiplier`` and/or ``target_epsilon``."""
  n = _whole('dataset_size', dataset_size)
  b = _whole('batch_size', batch_size)
  if b > n:
    _fail('batch_size', batch_size, f'is larger than --dataset_size={n}: the expected '
          'batch is at most the whole training set; lower it')
  if steps is not None and epochs is not None:
    _fail('epochs', epochs, f'and --steps={steps} are both given; give one of them')
  if steps is None and epochs is None:
    raise CalculatorError('--steps / --epochs: give the length of training, e.g. '
                          '--steps=875 or --epochs=70')
  if steps is not None:
    steps = _whole('steps', steps)
  else:
    epochs = _positive('epochs', epochs)
  if noise_multiplier is None and target_epsilon is None:
    raise CalculatorError('--noise_multiplier / --target_epsilon: give the noise '
                          'multiplier (to get epsilon) or a target epsilon (to get the '
                          'noise multiplier)')
  if noise_multiplier is not None:
    if noise_multiplier == 0:
      _fail('noise_multiplier', noise_multiplier, 'zero noise gives no privacy '
            '(epsilon is infinite); give a noise multiplier > 0')
    noise_multiplier = _positive('noise_multiplier', noise_multiplier)
  if target_epsilon is not None:
    target_epsilon = _positive('target_epsilon', target_epsilon)
  if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not 0 < delta < 1:
    _fail('delta', delta, f'must be in (0, 1); usually well below 1/N = {1 / n:.3g}')
  if accountant not in accounting.ACCOUNTANTS:
    _fail('accountant', accountant, f'choose one of {", ".join(accounting.ACCOUNTANTS)}')
  if sampling not in batch_selection.SAMPLERS:
    _fail('sampling', sampling,
          f'choose one of {", ".join(batch_selection.SAMPLERS)}')
  bands = _whole('num_bands', num_bands)
  if bands > 1 and sampling != 'poisson':
    _fail('num_bands', bands, 'BandMF (--num_bands > 1) needs --sampling=poisson '
          '(cyclic Poisson sampling; its accounting has no fixed-size form)')

  config = ml_collections.ConfigDict()
  config.training = ml_collections.ConfigDict(dict(
      batch_size=b, num_steps=steps or 0, num_epochs=float(epochs or 0.0)))
  config.privacy = ml_collections.ConfigDict(dict(
      # No target: the plan checks nothing against it (sigma -> epsilon).
      target_epsilon=target_epsilon if target_epsilon is not None else sys.float_info.max,
      noise_multiplier=noise_multiplier, delta=float(delta), clipping_norm=1.0,
      accountant=accountant, sampling=sampling,
      mechanism='bandmf' if bands > 1 else 'dpsgd', num_bands=bands,
      allow_non_private=False, allow_large_delta=True, insecure_seeded_noise=False,
      compose_with_pretrained_run=False))
  return config


def _as_flags(message: str) -> str:
  for field, flag in _FIELD_TO_FLAG:
    message = message.replace(field, flag)
  return message


def _plan(config: ml_collections.ConfigDict, dataset_size: int) -> plan_lib.PrivacyPlan:
  """plan.make_plan after the plan's own checks, their messages in flag names."""
  level = logging.get_verbosity()
  logging.set_verbosity(logging.ERROR)  # delta >= 1/N: said in the result instead
  try:
    plan_lib.validate_privacy(config)
    plan_lib.validate_with_data(config, dataset_size)
    return plan_lib.make_plan(config, dataset_size)
  except plan_lib.PlanError as e:
    raise CalculatorError(_as_flags(str(e))) from e
  finally:
    logging.set_verbosity(level)


def _warnings(plan: plan_lib.PrivacyPlan) -> tuple[str, ...]:
  if plan.large_delta:
    return (f'--delta={plan.delta:g} is >= 1/N = {1 / plan.dataset_size:.3g}: such a '
            'delta permits releasing a few examples outright (a run refuses it unless '
            'privacy.allow_large_delta=True)',)
  return ()


# ------------------------------------------------------------------ the calculator
def calculate(*, dataset_size: int, batch_size: int, steps: int | None = None,
              epochs: float | None = None, noise_multiplier: float | None = None,
              target_epsilon: float | None = None, delta: float = 1e-5,
              accountant: str = 'rdp', sampling: str = 'poisson',
              num_bands: int = 1) -> Calculation:
  """Epsilon (sigma given), sigma (target given) or, with both and no length, the
  most steps the budget allows. With sigma, a target and a length: epsilon, refused
  like a run's plan when it passes the target."""
  if steps is None and epochs is None and None not in (noise_multiplier, target_epsilon):
    return _max_steps(dataset_size=dataset_size, batch_size=batch_size,
                      noise_multiplier=noise_multiplier, target_epsilon=target_epsilon,
                      delta=delta, accountant=accountant, sampling=sampling,
                      num_bands=num_bands)
  config = privacy_config(
      dataset_size=dataset_size, batch_size=batch_size, steps=steps, epochs=epochs,
      noise_multiplier=noise_multiplier, target_epsilon=target_epsilon, delta=delta,
      accountant=accountant, sampling=sampling, num_bands=num_bands)
  plan = _plan(config, int(dataset_size))
  return Calculation(plan=plan, target_epsilon=target_epsilon,
                     solved_for='epsilon' if noise_multiplier else 'noise_multiplier',
                     warnings=_warnings(plan))


def _max_steps(*, dataset_size, batch_size, noise_multiplier, target_epsilon, delta,
               accountant, sampling, num_bands) -> Calculation:
  """The most steps T (a multiple of num_bands, as a run needs) whose epsilon at
  ``noise_multiplier`` stays within ``target_epsilon``: the plan's own ledger,
  searched by doubling then bisection (epsilon grows with T)."""
  common = dict(dataset_size=dataset_size, batch_size=batch_size,
                noise_multiplier=noise_multiplier, delta=delta, accountant=accountant,
                sampling=sampling, num_bands=num_bands)
  bands = _whole('num_bands', num_bands)
  target_epsilon = _positive('target_epsilon', target_epsilon)
  first = _plan(privacy_config(steps=bands, **common), int(dataset_size))
  target = target_epsilon * (1 + 1e-9)  # the tolerance make_plan allows
  if first.epsilon > target:
    _fail('noise_multiplier', noise_multiplier,
          f'even {bands} step(s) spend epsilon={round_up(first.epsilon):.4g}, more than '
          f'--target_epsilon={target_epsilon:g}; raise --noise_multiplier or '
          '--target_epsilon, or lower --batch_size')
  ledger = first.ledger()

  def fits(rounds: int) -> bool:
    return ledger.epsilon(rounds * bands) <= target

  low, high = 1, 2  # fits(low); find a high that does not
  max_rounds = MAX_STEPS_SEARCHED // bands
  while high <= max_rounds and fits(high):
    low, high = high, high * 2
  capped = high > max_rounds and fits(max_rounds)
  if capped:
    low = max_rounds
  else:
    high = min(high, max_rounds)
    while high - low > 1:
      mid = (low + high) // 2
      low, high = (mid, high) if fits(mid) else (low, mid)
  plan = _plan(privacy_config(steps=low * bands, target_epsilon=target_epsilon,
                              **common), int(dataset_size))
  return Calculation(plan=plan, solved_for='steps', target_epsilon=target_epsilon,
                     steps_capped=capped, warnings=_warnings(plan))


def epsilon(**kwargs) -> float:
  """Epsilon after the steps (or epochs) at ``noise_multiplier``; see calculate."""
  if kwargs.get('noise_multiplier') is None:
    raise CalculatorError('--noise_multiplier: give it to compute epsilon')
  return calculate(**kwargs).plan.epsilon


def noise_multiplier(**kwargs) -> float:
  """The smallest sigma whose run stays within ``target_epsilon``; see calculate."""
  if kwargs.get('noise_multiplier') is not None:
    raise CalculatorError('--noise_multiplier: leave it out to calibrate it to '
                          '--target_epsilon')
  return calculate(**kwargs).plan.noise_multiplier


def max_steps(**kwargs) -> int:
  """The most steps ``noise_multiplier`` allows within ``target_epsilon``."""
  for flag in ('steps', 'epochs'):
    if kwargs.get(flag) is not None:
      raise CalculatorError(f'--{flag}: leave it out to get the steps a budget allows')
  for flag in ('noise_multiplier', 'target_epsilon'):
    if kwargs.get(flag) is None:
      raise CalculatorError(f'--{flag}: the steps a budget allows need '
                            '--noise_multiplier and --target_epsilon')
  return calculate(**kwargs).plan.steps


# ------------------------------------------------------------------ printing
def round_up(x: float, digits: int = 4) -> float:
  """``x`` rounded UP to ``digits`` significant digits (printed epsilons never
  understate the loss; printed sigmas never undercut the calibration)."""
  if x == 0 or not math.isfinite(x):
    return x
  exact = decimal.Decimal(x)  # the float's exact value
  step = decimal.Decimal(1).scaleb(exact.adjusted() - digits + 1)
  # Nearest-float of a value >= x is >= x: the result is never below x.
  return float(exact.quantize(step, rounding=decimal.ROUND_CEILING))


_RELATIONS = {'add_or_remove_one': 'add/remove-one', 'replace_one': 'replace-one'}


def format_calculation(calc: Calculation) -> str:
  """One readable block: the plan's numbers, what was solved for, the mechanism."""
  p = calc.plan
  mechanism = (f'BandMF, b = {p.num_bands} bands' if p.mechanism_name == 'bandmf'
               else 'DP-SGD')
  rows = [
      ('training examples N', f'{p.dataset_size}'),
      ('expected batch size B', f'{p.expected_batch_size}'),
      ('sampling', f'{p.sampling} (q = {p.sampling_rate:.6g}'
                   + (' within a group)' if p.num_bands > 1 else ')')),
      ('steps', f'{p.steps}' + (' (at least: not searched further)'
                                if calc.steps_capped else '')
                + f' = {calc.epochs:.4g} epochs'),
      ('noise multiplier sigma', f'{round_up(p.noise_multiplier, 6):.6g}'
                                 if calc.solved_for == 'noise_multiplier'
                                 else f'{p.noise_multiplier:.10g}'),
      ('delta', f'{p.delta:g}'),
      ('accountant', f'{p.accountant} ({_RELATIONS[p.neighboring_relation]} '
                     'adjacency)'),
      ('epsilon', f'{round_up(p.epsilon):.4g}'),
  ]
  marks = {'epsilon': 'epsilon', 'noise_multiplier': 'noise multiplier sigma',
           'steps': 'steps'}
  target = ('' if calc.target_epsilon is None
            else f'; target epsilon {calc.target_epsilon:g}')
  width = max(len(k) for k, _ in rows)
  lines = [f'Privacy of {mechanism} training (solved for '
           f'{marks[calc.solved_for]}{target})']
  for key, value in rows:
    arrow = '  <-' if key == marks[calc.solved_for] else ''
    lines.append(f'  {key:<{width}}  {value}{arrow}')
  lines.append('  (epsilon and a calibrated sigma are rounded up: the safe side)')
  lines += [f'  warning: {w}' for w in calc.warnings]
  return '\n'.join(lines)


def parse_args(argv: list[str]) -> dict:
  """``--flag=value`` arguments -> keyword arguments of calculate. A leading program
  name and --privacy_calculator are ignored; anything else unknown is refused with
  the closest flag."""
  kwargs = {}
  if argv and not argv[0].startswith('-'):
    argv = argv[1:]  # the program name
  for arg in argv:
    if arg in ('--privacy_calculator', '--privacy_calculator=true'):
      continue
    name, eq, text = arg.lstrip('-').partition('=')
    if not arg.startswith('--') or name not in FLAGS:
      close = difflib.get_close_matches(name, FLAGS, n=1)
      hint = f'did you mean --{close[0]}? ' if close else ''
      raise CalculatorError(f'{arg}: not a calculator flag; {hint}flags: '
                            + ', '.join('--' + f for f in FLAGS))
    if not eq or not text:
      raise CalculatorError(f'--{name}: give a value, as --{name}=VALUE')
    if name in _INTEGER_FLAGS or name in _FLOAT_FLAGS:
      try:
        value = float(text)
      except ValueError:
        raise CalculatorError(f'--{name}={text}: not a number') from None
      if name in _INTEGER_FLAGS and value.is_integer():
        value = int(value)
    else:
      value = text
    kwargs[name] = value
  return kwargs


def main(argv: list[str], out=None, err=None) -> int:
  """Prints the calculation of ``argv``'s flags as one block; returns the exit code
  (0; 2 with one ``error:`` line for a bad argument). --help prints the usage."""
  out = out or sys.stdout
  err = err or sys.stderr
  if any(a in ('--help', '-h', '--helpfull') for a in argv):
    print(USAGE, file=out)
    return 0
  try:
    kwargs = parse_args(list(argv))
    for flag, what in (('dataset_size', 'the training-set size N, e.g. 50000'),
                       ('batch_size', 'the expected batch size B, e.g. 4096')):
      if flag not in kwargs:
        raise CalculatorError(f'--{flag}: give {what} (python launch.py '
                              '--privacy_calculator --help shows the usage)')
    calc = calculate(**{**DEFAULTS, **kwargs})
  except CalculatorError as e:
    print(f'error: {e}', file=err)
    return 2
  print(format_calculation(calc), file=out)
  return 0
