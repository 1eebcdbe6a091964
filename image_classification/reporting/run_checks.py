"""Warnings about a finished run that trained without an error but did not learn:
summary.json's ``warnings`` and the lines after the final ``done:`` line.

``run_warnings(train_losses, test_accuracy, num_classes)`` is a pure function of the
logged train losses (metrics.jsonl's ``train_loss`` column, every segment of the run,
in step order) and the final test accuracy. It warns when

* the loss grew: the mean of the last 10% of the logged losses (at least one row) is
  at least ``GROWTH_FACTOR`` (5) times the mean of the first 10%, or it is above
  ln(num_classes) -- the loss of a uniform guess, i.e. worse than knowing nothing --
  and at least ``BEST_FACTOR`` (2) times the lowest mean of any 10% window (the run
  had learnt, then lost it). The second rule catches the quickstart at 1000 steps,
  whose noisy loss climbs from 1.0 to 3.7-4.9 (3.6-4.6x its start);
* a logged loss is not finite (NaN or infinite);
* the test accuracy is below chance, 1 / num_classes.

The train loss is computed from private training data without noise (docs/privacy.md,
invariant 8): a warning built on it is a statement about private data, like the loss
itself, and is labelled so. The accuracy is on the test split.
"""
import math
from typing import Sequence

GROWTH_FACTOR = 5.0   # last 10% vs first 10% of the logged train losses
BEST_FACTOR = 2.0     # last 10% vs the best 10% window, when above ln(num_classes)
WINDOW_FRACTION = 0.1


def _mean(values: Sequence[float]) -> float:
  return sum(values) / len(values)


def loss_growth(train_losses: Sequence[float], num_classes: int) -> str | None:
  """Why the logged train losses say the run diverged, or None."""
  losses = [float(x) for x in train_losses if x is not None]
  bad = [i for i, x in enumerate(losses) if not math.isfinite(x)]
  if bad:
    return (f'the train loss (no noise) was not finite in {len(bad)} of '
            f'{len(losses)} logged rows: the training diverged; lower the learning '
            'rate')
  if len(losses) < 2:
    return None
  k = max(1, int(len(losses) * WINDOW_FRACTION))
  first, last = _mean(losses[:k]), _mean(losses[-k:])
  best = min(_mean(losses[i:i + k]) for i in range(len(losses) - k + 1))
  chance_loss = math.log(num_classes) if num_classes and num_classes > 1 else math.inf
  grew = first > 0 and last >= GROWTH_FACTOR * first
  lost = last > chance_loss and best > 0 and last >= BEST_FACTOR * best
  if not (grew or lost):
    return None
  why = (f'{last / first:.1f}x its start' if grew else
         f'{last / best:.1f}x its lowest ({best:.3g}) and above ln({num_classes}) = '
         f'{chance_loss:.3g}, the loss of a uniform guess')
  return (f'the train loss (no noise) grew from {first:.3g} (first {k} logged rows) '
          f'to {last:.3g} (last {k}): {why}; the training may be diverging (lower '
          'the learning rate, or train fewer steps)')


def below_chance(test_accuracy: float | None, num_classes: int) -> str | None:
  """Why the test accuracy is below chance, or None."""
  if test_accuracy is None or not num_classes or num_classes < 2:
    return None
  chance = 1.0 / num_classes
  if not test_accuracy < chance:
    return None
  return (f'the test accuracy {test_accuracy:.4f} is below chance (1/{num_classes} = '
          f'{chance:.4f}): the model learnt nothing useful')


def run_warnings(train_losses: Sequence[float], test_accuracy: float | None,
                 num_classes: int) -> list[str]:
  """summary.json's ``warnings``: [] for a run that learnt."""
  return [w for w in (loss_growth(train_losses, num_classes),
                      below_chance(test_accuracy, num_classes)) if w]
