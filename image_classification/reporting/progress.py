"""Console progress: a live bar on a terminal, one line per logged step elsewhere.

On a terminal (the stream's isatty()), training shows one tqdm line that updates at
every step: step/total, epsilon spent, train loss (computed without noise), images/s
and ETA; evaluation rows are printed above it, and evaluation passes get their own
short-lived bar. When the output is a file or a pipe (a scheduler's log, a test),
the bar is off and each logged step prints one line, as

  step  20/200 | epoch 7.12 | eps 1.234 | train loss 0.8719 (no noise) | 38,731 img/s | ...

(the epoch, steps x expected batch size / N, when the trainer gives epochs_per_step).

``quiet_library_logs()`` hides two kinds of library messages that buried the useful
lines (16 of a 20-step quickstart's 20 lines): dp-accounting's "failed to converge
... Excluding this order" warnings (harmless: the RDP accountant drops orders it
cannot evaluate and reports epsilon from the others) and JAX's "Unable to initialize
backend 'tpu'" note on machines without a TPU.
"""
import io
import logging
import os
import sys
import time

from absl import logging as absl_logging
import numpy as np

from image_classification.reporting import privacy_report
from image_classification.reporting import round_up

_HIDDEN = (
    ('failed to converge', 'Excluding this order'),  # dp-accounting, RDP orders
    ("Unable to initialize backend 'tpu'",),           # jax on machines without TPU
    ('libtpu.so',),
    # orbax's background threads log the exception that the failed save raises in the
    # main thread (reported there as one line, e.g. a full disk).
    ('_SignalingThread.run() raised an exception',),
)


def _duration(seconds: float) -> str:
  seconds = int(max(0, seconds))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f'{h}:{m:02d}:{s:02d}' if h else f'{m}:{s:02d}'


def _number(x: float, spec: str) -> str:
  return format(x, spec) if x == x else '?'


def _terminal_size(stream) -> tuple[int, int]:
  try:
    size = os.get_terminal_size(stream.fileno())
  except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
    return 0, 0
  return size.columns, size.lines


def _is_terminal(stream) -> bool:
  try:
    return bool(stream.isatty())
  except (AttributeError, ValueError):
    return False


class _QuietFilter(logging.Filter):
  def filter(self, record: logging.LogRecord) -> bool:
    try:
      message = record.getMessage()
    except Exception:  # pylint: disable=broad-except
      return True
    return not any(all(part in message for part in parts) for parts in _HIDDEN)


_FILTER = _QuietFilter()


def quiet_library_logs() -> None:
  """Drops the library messages listed in _HIDDEN from every console handler.

  Filters go on the handlers (a logger's own filter misses records propagated from
  its children): the root logger's, absl's, and the loggers that emit them.
  """
  handlers = list(logging.getLogger().handlers)
  handlers.append(absl_logging.get_absl_handler())
  for handler in handlers:
    if _FILTER not in handler.filters:
      handler.addFilter(_FILTER)
  for name in ('absl', 'jax._src.xla_bridge'):
    logger = logging.getLogger(name)
    if _FILTER not in logger.filters:
      logger.addFilter(_FILTER)


def iterate(iterable, total: int, desc: str, stream=None):
  """``iterable`` with a transient bar on a terminal; unchanged elsewhere."""
  stream = stream or sys.stdout
  if not _is_terminal(stream) or total <= 1:
    return iterable
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  return tqdm(iterable, total=total, desc=desc, file=stream, leave=False,
              dynamic_ncols=True)


class Progress:
  """Training progress; ``live=None`` picks the bar when the stream is a terminal."""

  REFRESH_SEC = 0.25

  def __init__(self, total_steps: int, stream=None, live: bool | None = None,
               images_per_step: float = 0.0, epochs_per_step: float = 0.0,
               test_on_private_data: bool = False):
    """``test_on_private_data``: the evaluation split was carved out of the private
    training data, so its accuracy is labelled as released without noise."""
    self.total = total_steps
    self.test_label = privacy_report.PRIVATE_TEST_LABEL if test_on_private_data else ''
    self.epochs_per_step = epochs_per_step
    self.stream = stream or sys.stdout
    self.live = _is_terminal(self.stream) if live is None else live
    self.images_per_step = images_per_step
    self._start_time = None
    self._start_step = 0
    self._bar = None
    self._last_refresh = 0.0
    self._epsilon = float('nan')
    self._epsilon_cost = 0.0
    self._epsilon_time = 0.0
    self._loss = float('nan')

  # ------------------------------------------------------------------ lifecycle
  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
    return False

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
      self._bar = None

  def start(self, step: int) -> None:
    self._start_time = time.time()
    self._start_step = step
    if self.live and self._bar is None:
      from tqdm import tqdm  # pylint: disable=g-import-not-at-top
      # A terminal that reports no size (some ptys) would get an empty line.
      sized = min(_terminal_size(self.stream)) > 0
      self._bar = tqdm(total=self.total, initial=step, file=self.stream,
                       dynamic_ncols=sized, ncols=None if sized else 120,
                       nrows=None if sized else 40,
                       mininterval=self.REFRESH_SEC, leave=False,
                       bar_format='step {n_fmt}/{total_fmt} |{bar:12}| {desc}')

  # ------------------------------------------------------------------ the bar
  def _eta(self, step: int) -> float:
    elapsed = time.time() - (self._start_time or time.time())
    done = step - self._start_step
    return elapsed / done * (self.total - step) if done > 0 else float('nan')

  def _images_per_sec(self, step: int) -> float:
    elapsed = time.time() - (self._start_time or time.time())
    done = step - self._start_step
    return done * self.images_per_step / elapsed if elapsed > 0 else float('nan')

  def _refresh_epsilon(self, step: int, epsilon_at) -> None:
    # Cheap for RDP (about a millisecond); a PLD ledger can take seconds per new
    # step, so one that costs over 20 ms is recomputed at most every 100 x its cost.
    now = time.time()
    if self._epsilon_cost > 0.02 and now - self._epsilon_time < 100 * self._epsilon_cost:
      return
    self._epsilon = float(epsilon_at(step))
    self._epsilon_cost = time.time() - now
    self._epsilon_time = time.time()

  def step(self, step: int, epsilon_at, pending_stats) -> None:
    """After each step (live mode only): refreshes the bar at most 4 times a second.

    ``pending_stats``: the device stats of the steps since the last log row; the
    loss shown is the newest finished step's (the one before the step just
    dispatched, so reading it does not wait for the device).
    """
    if self._bar is None:
      return
    now = time.time()
    if now - self._last_refresh < self.REFRESH_SEC and step < self.total:
      return
    self._last_refresh = now
    if len(pending_stats) >= 2:
      done = pending_stats[-2]
      n = float(np.asarray(done['num_examples']))
      self._loss = float(np.asarray(done['loss_sum'])) / max(n, 1.0)
    self._refresh_epsilon(step, epsilon_at)
    self._bar.n = step
    self._bar.set_description_str(self._status(step), refresh=False)
    self._bar.refresh()

  def _status(self, step: int, loss: float | None = None,
              images_per_sec: float | None = None) -> str:
    eta = self._eta(step)
    loss = self._loss if loss is None else loss
    ips = self._images_per_sec(step) if images_per_sec is None else images_per_sec
    return (f'{self._epoch(step)}eps {round_up.round_up(self._epsilon, decimals=3)} | '
            f'train loss {_number(loss, ".4f")} (no noise) | '
            f'{_number(ips, ",.0f")} img/s | ETA {_duration(eta) if eta == eta else "?"}')

  def _epoch(self, step: int) -> str:
    """'epoch 7.12 | ' (B / N per step), or '' when the epoch is not known."""
    if not self.epochs_per_step:
      return ''
    return f'epoch {step * self.epochs_per_step:.2f} | '

  # ------------------------------------------------------------------ lines
  def line(self, step: int, epsilon: float, loss: float, images_per_sec: float,
           test_accuracy: float | None = None,
           validation_accuracy: float | None = None) -> str:
    eta = self._eta(step)
    width = len(str(self.total))
    text = (f'step {step:>{width}}/{self.total} | {self._epoch(step)}'
            f'eps {round_up.round_up(epsilon, decimals=3)} | '
            f'train loss {loss:.4f} (no noise) | {images_per_sec:,.0f} img/s | '
            f'ETA {_duration(eta) if eta == eta else "?"}')
    if validation_accuracy is not None:
      text += f' | validation acc {validation_accuracy:.4f} (no noise)'
    if test_accuracy is not None:
      text += f' | test acc {test_accuracy:.4f}{self.test_label}'
    return text

  def log(self, step, epsilon, loss, images_per_sec, test_accuracy=None,
          validation_accuracy=None) -> None:
    """A logged step: a line of its own, except for plain rows under a live bar."""
    self._epsilon, self._epsilon_time, self._loss = float(epsilon), time.time(), loss
    text = self.line(step, epsilon, loss, images_per_sec, test_accuracy,
                     validation_accuracy)
    if self._bar is None:
      print(text, file=self.stream, flush=True)
      return
    self._bar.n = step
    self._bar.set_description_str(self._status(step, loss, images_per_sec),
                                  refresh=False)
    if test_accuracy is not None or validation_accuracy is not None:
      self._bar.write(text, file=self.stream)
    self._bar.refresh()
