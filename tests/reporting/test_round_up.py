"""Printed epsilons and deltas are rounded UP, never to nearest (reporting/round_up.py):
as a property over many values, at the issue's example, and on every surface that
prints them (console lines, report and sweep tables)."""
import decimal
import math

import numpy as np
import pytest

from image_classification.reporting import progress
from image_classification.reporting import report
from image_classification.reporting import round_up


def test_the_issues_example_prints_the_next_value_up():
  # sigma 6.0 on the quickstart spends 3.96043...: to nearest it printed 3.960.
  assert round_up.round_up(3.96043, decimals=3) == '3.961'
  assert round_up.round_up(3.96043) == '3.961'
  assert round_up.round_up(3.96043, 3) == '3.97'
  assert round_up.round_up(3.99986, decimals=3) == '4.000'
  assert round_up.round_up(11.99958, decimals=3) == '12.000'


def test_exact_values_and_float_noise_are_not_pushed_up():
  assert round_up.round_up(4.0, decimals=3) == '4.000'
  assert round_up.round_up(1e-5, 3) == '1e-05'
  assert round_up.round_up(1e-5 + 1e-5 + 1e-5, 3) == '3e-05'  # 3.0000000000000004e-05
  assert round_up.round_up(0.1 + 0.2, decimals=2) == '0.30'
  assert round_up.round_up(8e-7, 3) == '8e-07'
  assert round_up.round_up(1.0000001e-5, 3) == '1.01e-05'  # a real excess is kept


def test_special_values():
  assert round_up.round_up(None) == 'n/a'
  assert round_up.round_up(math.inf) == 'inf'
  assert round_up.round_up(math.nan) == 'n/a'
  assert round_up.round_up(0.0, decimals=3) == '0.000'
  assert round_up.round_up(0.0) == '0'


@pytest.mark.parametrize('decimals', [0, 1, 2, 3, 4])
def test_fixed_decimals_are_the_smallest_value_not_below(decimals):
  rng = np.random.default_rng(decimals)
  for value in np.concatenate([rng.uniform(0, 20, 2000), rng.uniform(0, 1e-2, 200)]):
    text = round_up.round_up(value, decimals=decimals)
    printed = decimal.Decimal(text)
    exact = decimal.Decimal(float(value))
    step = decimal.Decimal(1).scaleb(-decimals)
    assert printed.as_tuple().exponent == -decimals, text
    # Not below the value (up to the 1e-12 relative float noise it ignores) ...
    assert printed >= exact * (1 - decimal.Decimal('1e-12')), (value, text)
    # ... and the smallest such: one step less would be below it.
    assert printed - step < exact, (value, text)


@pytest.mark.parametrize('digits', [1, 2, 3, 4, 6])
def test_significant_digits_are_the_smallest_value_not_below(digits):
  rng = np.random.default_rng(10 + digits)
  for value in 10.0 ** rng.uniform(-9, 3, 2000):
    text = round_up.round_up(value, digits)
    printed = decimal.Decimal(text)
    exact = decimal.Decimal(float(value))
    assert len(printed.normalize().as_tuple().digits) <= digits, text
    assert printed >= exact * (1 - decimal.Decimal('1e-12')), (value, text)
    step = decimal.Decimal(1).scaleb(exact.adjusted() - digits + 1)
    assert printed - step < exact, (value, text)


def test_console_lines_and_tables_round_up():
  bar = progress.Progress(100, images_per_step=10, live=False)
  line = bar.line(5, 3.96043, 0.5, 100.0)
  assert 'eps 3.961 |' in line
  assert report.format_epsilon(3.96043) == '3.97'
  assert report.format_epsilon(0.0123456) == '0.0124'
  assert report.format_delta(1.00001e-5) == '1.1e-05'
  assert report.format_delta(1e-5) == '1e-05'
  assert report.format_epsilon(None, non_private=True) == 'inf (non-private)'


def test_the_dry_run_line_prints_the_plans_epsilon_rounded_up(tmp_path, capsys):
  """The issue's case: the quickstart with sigma 6.0 (no calibration)."""
  from configs import quickstart  # pylint: disable=g-import-not-at-top
  from image_classification.training import loop  # pylint: disable=g-import-not-at-top
  config = quickstart.get_config()
  config.privacy.noise_multiplier = 6.0
  plan = loop.train(config, str(tmp_path), dry_run=True)
  out = capsys.readouterr().out
  printed = out.split('epsilon=')[1].split(' ')[0]
  assert printed == round_up.round_up(plan['epsilon'], decimals=4)
  assert float(printed) >= plan['epsilon'] and float(printed) - 1e-4 < plan['epsilon']
  assert 'at delta=1e-05;' in out
