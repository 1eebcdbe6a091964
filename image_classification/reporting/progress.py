"""One console line per logged step: step/total, epsilon spent, loss, images/s, ETA."""
import sys
import time


def _duration(seconds: float) -> str:
  seconds = int(max(0, seconds))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f'{h}:{m:02d}:{s:02d}' if h else f'{m}:{s:02d}'


class Progress:
  def __init__(self, total_steps: int, stream=None):
    self.total = total_steps
    self.stream = stream or sys.stdout
    self._start_time = None
    self._start_step = 0

  def start(self, step: int) -> None:
    self._start_time = time.time()
    self._start_step = step

  def line(self, step: int, epsilon: float, loss: float, images_per_sec: float,
           test_accuracy: float | None = None) -> str:
    elapsed = time.time() - (self._start_time or time.time())
    done = step - self._start_step
    eta = elapsed / done * (self.total - step) if done > 0 else float('nan')
    width = len(str(self.total))
    text = (f'step {step:>{width}}/{self.total} | eps {epsilon:.3f} | '
            f'train loss {loss:.4f} (no noise) | {images_per_sec:,.0f} img/s | '
            f'ETA {_duration(eta) if eta == eta else "?"}')
    if test_accuracy is not None:
      text += f' | test acc {test_accuracy:.4f}'
    return text

  def log(self, *args, **kwargs) -> None:
    print(self.line(*args, **kwargs), file=self.stream, flush=True)
