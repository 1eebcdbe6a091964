"""Console progress: a live bar on a terminal, periodic lines elsewhere, and the
library chatter that is kept off the console."""
import io
import logging

from absl import logging as absl_logging
import numpy as np

from image_classification.reporting import progress


class FakeTerminal(io.StringIO):
  def isatty(self):
    return True


def _stats(loss_sum, n):
  return {'loss_sum': np.float32(loss_sum), 'num_examples': np.float32(n)}


def test_live_bar_updates_every_step_with_the_figures(monkeypatch):
  monkeypatch.setattr(progress.Progress, 'REFRESH_SEC', 0.0)
  stream = FakeTerminal()
  with progress.Progress(10, stream=stream, images_per_step=100) as bar:
    assert bar.live
    bar.start(1)
    pending = [_stats(20.0, 10)]
    for step in range(2, 6):
      pending.append(_stats(10.0 * step, 10))
      bar.step(step, lambda s: 0.1 * s, pending)
    text = stream.getvalue()
    assert 'step 5/10' in text
    assert 'eps 0.500' in text          # the epsilon of the step shown
    assert 'train loss 4.0000 (no noise)' in text  # the newest finished step's
    assert 'img/s' in text and 'ETA' in text
    # A plain log row only updates the bar; an evaluation row is kept as a line.
    bar.log(6, 0.6, 1.5, 1000.0)
    assert 'step  6/10 |' not in stream.getvalue()
    bar.log(7, 0.7, 1.25, 1000.0, test_accuracy=0.5)
    assert 'step  7/10 | eps 0.700' in stream.getvalue()
    assert 'test acc 0.5000' in stream.getvalue()


def test_without_a_terminal_only_periodic_lines():
  stream = io.StringIO()
  bar = progress.Progress(10, stream=stream)
  assert not bar.live
  bar.start(1)
  bar.step(2, lambda s: 1.0, [_stats(1, 1), _stats(1, 1)])
  assert stream.getvalue() == ''
  bar.log(2, 0.25, 0.5, 1234.0, test_accuracy=0.75, validation_accuracy=0.7)
  line = stream.getvalue().strip()
  assert line.startswith('step  2/10 | eps 0.250 | train loss 0.5000 (no noise) | '
                         '1,234 img/s | ETA')
  assert 'validation acc 0.7000 (no noise)' in line and 'test acc 0.7500' in line
  assert list(progress.iterate(range(3), 3, 'x', stream=stream)) == [0, 1, 2]


def test_the_epoch_is_shown_beside_the_step():
  """B / N per step: 512 of 1438 examples per step is epoch 7.12 at step 20."""
  stream = io.StringIO()
  bar = progress.Progress(200, stream=stream, epochs_per_step=512 / 1438)
  bar.start(0)
  bar.log(20, 1.234, 0.8719, 38731.0)
  assert stream.getvalue().startswith('step  20/200 | epoch 7.12 | eps 1.234 | ')
  live = FakeTerminal()
  with progress.Progress(200, stream=live, epochs_per_step=0.5) as bar:
    bar.start(0)
    bar.log(20, 1.0, 0.5, 100.0)
    assert 'epoch 10.00 | eps 1.000' in live.getvalue()


def test_library_chatter_is_hidden_and_other_warnings_are_not():
  stream = io.StringIO()
  handler = logging.StreamHandler(stream)
  root = logging.getLogger()
  root.addHandler(handler)
  try:
    progress.quiet_library_logs()
    absl_logging.warning(
        '_compute_log_a_frac failed to converge after 1000 iterations with q=0.35, '
        'sigma=2.1, alpha=1.1. Excluding this order from the epsilon computation.')
    logging.getLogger('jax._src.xla_bridge').warning(
        "Unable to initialize backend 'tpu': INTERNAL: Failed to open libtpu.so")
    absl_logging.warning('config.privacy.delta=0.1 is >= 1/N')
  finally:
    root.removeHandler(handler)
  text = stream.getvalue()
  assert 'failed to converge' not in text and 'libtpu' not in text
  assert 'config.privacy.delta=0.1 is >= 1/N' in text


def test_an_expensive_epsilon_is_not_recomputed_at_every_refresh(monkeypatch):
  monkeypatch.setattr(progress.Progress, 'REFRESH_SEC', 0.0)
  now = [1000.0]
  monkeypatch.setattr(progress.time, 'time', lambda: now[0])
  calls = []

  def slow_epsilon(step):  # a PLD ledger: one second per call
    calls.append(step)
    now[0] += 1.0
    return 0.1 * step

  bar = progress.Progress(1000, stream=FakeTerminal(), images_per_step=1)
  bar.start(1)
  for step in range(2, 52):
    now[0] += 0.5
    bar.step(step, slow_epsilon, [_stats(1, 1), _stats(1, 1)])
  assert calls == [2]  # next one due 100 s later
  now[0] += 100
  bar.step(52, slow_epsilon, [_stats(1, 1), _stats(1, 1)])
  assert calls == [2, 52]
  bar.close()
