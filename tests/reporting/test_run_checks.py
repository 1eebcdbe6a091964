"""summary.json's `warnings` (issue 28): a train loss that grows or turns non-finite,
and a test accuracy below chance, are said; a run that learnt gets none."""
import math

from image_classification.reporting import run_checks

# metrics.jsonl's train_loss of configs/quickstart.py trained for 1000 steps (sigma
# calibrated to epsilon 4 over 1000 steps; one row every 20 steps), measured on this
# machine: 1.16 -> 3.52, test accuracy 0.81. Its first and last 10% differ by 3.6x
# only: the "worse than a uniform guess after learning" rule catches it.
QUICKSTART_1000_STEPS = [
    1.16, 0.61, 0.86, 1.02, 1.09, 1.45, 1.82, 2.1, 1.91, 1.75, 1.78, 2.15, 2.76, 2.96,
    3.12, 3.25, 3.0, 3.3, 3.34, 4.18, 3.81, 3.46, 3.67, 4.37, 4.08, 4.16, 4.35, 4.15,
    3.75, 3.91, 3.79, 3.85, 4.44, 4.53, 4.51, 3.92, 4.07, 3.88, 4.29, 4.57, 4.74, 3.96,
    3.82, 3.69, 3.52, 4.01, 4.09, 4.3, 4.23, 4.37, 4.57, 5.06, 4.8, 4.85, 4.31, 3.84,
    3.28, 3.64, 3.47, 3.52]
# The default quickstart (200 steps), which learns: test accuracy 0.919 (measured
# the same way; three more runs: 0.94 -> 0.34, 0.92 -> 0.33, 0.94 -> 0.32).
QUICKSTART_200_STEPS = [0.99, 0.27, 0.27, 0.21, 0.25, 0.29, 0.26, 0.28, 0.27, 0.28,
                        0.25, 0.29]


def test_a_run_that_learnt_gets_no_warning():
  assert run_checks.run_warnings(QUICKSTART_200_STEPS, 0.919, 10) == []
  assert run_checks.run_warnings([], None, 10) == []  # nothing logged, no accuracy
  assert run_checks.run_warnings([2.3], 0.1, 10) == []  # one row; chance is not below


def test_the_quickstart_at_1000_steps_is_warned_about():
  warnings = run_checks.run_warnings(QUICKSTART_1000_STEPS, 0.81, 10)
  assert len(warnings) == 1
  assert warnings[0].startswith('the train loss (no noise) grew from 1.03 (first 6 '
                                'logged rows) to 3.68 (last 6): 3.6x its lowest')
  assert 'above ln(10) = 2.3, the loss of a uniform guess' in warnings[0]


def test_fivefold_growth_from_the_start():
  losses = [0.2, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]  # below ln(10) throughout
  assert '5.0x its start' in run_checks.loss_growth(losses, 10)
  assert run_checks.loss_growth(losses[:-1], 10) is None  # 4.5x: not yet


def test_a_non_finite_loss_and_an_accuracy_below_chance():
  warnings = run_checks.run_warnings([1.0, math.nan, 2.0], 0.05, 10)
  assert len(warnings) == 2
  assert 'not finite in 1 of 3 logged rows' in warnings[0]
  assert warnings[1] == ('the test accuracy 0.0500 is below chance (1/10 = 0.1000): '
                         'the model learnt nothing useful')
  assert run_checks.below_chance(0.1, 10) is None  # chance itself is not below it
  assert run_checks.below_chance(0.49, 2) is not None
