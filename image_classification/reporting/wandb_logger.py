"""Optional Weights & Biases logging that can never stop training.

The mode comes from ``config.wandb.mode`` ('disabled' by default in configs/base.py;
wandb's own switch, the environment variable WANDB_MODE=disabled, overrides it):
'disabled' imports nothing; 'offline' writes the run under WORKDIR/wandb (upload later with
``wandb sync``); 'online' streams it. Any wandb failure (not installed, init,
log, finish) is logged once as a warning and turns the logger into a no-op.

Only the host that writes the reports should log: pass ``active=False`` on the
others (e.g. ``active=jax.process_index() == 0``).
"""
import math
import numbers
import os
from typing import Any, Callable, Mapping, Optional

from absl import logging
import ml_collections

from image_classification import errors

MODES = ('disabled', 'offline', 'online')


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks config.wandb.mode; raises ConfigError."""
  if config.wandb.mode not in MODES:
    errors.config_fail('wandb.mode', config.wandb.mode, f'choose one of {MODES}')


def _get(config: Any, path: str, default: Any) -> Any:
  node = config
  for key in path.split('.'):
    try:
      node = node[key]
    except (KeyError, TypeError, AttributeError):
      return default
  return default if node is None else node


def _scalars(row: Mapping[str, Any]) -> dict[str, Any]:
  """Keeps finite numbers (numpy and jax scalars as Python ones) and strings."""
  out = {}
  for key, value in row.items():
    if getattr(value, 'shape', None) == () and hasattr(value, 'item'):
      try:  # numpy / jax scalars and 0-d arrays
        value = value.item()
      except Exception:  # pylint: disable=broad-except
        continue
    if isinstance(value, (bool, str)):
      out[key] = value
    elif isinstance(value, numbers.Real) and math.isfinite(value):
      out[key] = value
  return out


class WandbLogger:
  """Logs metrics, the privacy ledger and the summary of one run to wandb.

  Attributes:
    mode: 'disabled', 'offline' or 'online' (as configured).
    active: False once disabled or after any wandb failure.
  """

  def __init__(self, config: Any, workdir: str, active: bool = True,
               name: Optional[str] = None):
    """Starts the wandb run (or nothing, when disabled).

    Args:
      config: the run's ConfigDict; reads config.wandb.{mode, project, entity}
        and logs the whole config as the wandb run config.
      workdir: the run's folder; offline runs are written under it.
      active: False makes this logger a no-op (e.g. on non-zero hosts).
      name: the wandb run name; default the workdir's base name.
    """
    self.mode = str(_get(config, 'wandb.mode', 'disabled'))
    if os.environ.get('WANDB_MODE') == 'disabled':
      self.mode = 'disabled'
    self._run = None
    self._warned = False
    self.active = bool(active) and self.mode != 'disabled'
    if not self.active:
      return
    if self.mode not in MODES:
      self._fail(f'unknown config.wandb.mode {self.mode!r}, expected one of '
                 f'{MODES}')
      return
    try:
      import wandb  # pylint: disable=g-import-not-at-top
      os.makedirs(workdir, exist_ok=True)
      to_dict = getattr(config, 'to_dict', None)
      self._run = wandb.init(
          project=str(_get(config, 'wandb.project', '')) or None,
          entity=str(_get(config, 'wandb.entity', '')) or None,
          name=name or os.path.basename(os.path.normpath(
              os.path.abspath(workdir))),
          dir=workdir,
          mode=self.mode,
          config=to_dict() if to_dict else dict(config),
          reinit='finish_previous',
          settings=wandb.Settings(silent=True, console='off'),
      )
      if self._run is None:
        raise RuntimeError('wandb.init returned no run')
    except Exception as e:  # pylint: disable=broad-except
      self._fail(f'wandb.init failed ({type(e).__name__}: {e})')

  def _fail(self, message: str) -> None:
    """Warns once and turns the logger into a no-op."""
    if not self._warned:
      logging.warning('wandb logging is off for this run: %s. Training goes '
                      'on; metrics are still in metrics.jsonl.', message)
      self._warned = True
    self.active = False
    run, self._run = self._run, None
    if run is not None:
      try:
        run.finish(exit_code=1)
      except Exception:  # pylint: disable=broad-except
        pass

  def _call(self, what: str, fn: Callable[[], Any]) -> None:
    """Runs ``fn`` if the logger is on; a failure warns once and turns it off."""
    if not self.active:
      return
    try:
      fn()
    except Exception as e:  # pylint: disable=broad-except
      self._fail(f'wandb {what} failed ({type(e).__name__}: {e})')

  def log_metrics(self, row: Mapping[str, Any], step: int) -> None:
    """Logs one metrics row (numbers and strings; other values are dropped)."""
    def log():
      data = _scalars(row)
      data.pop('step', None)
      self._run.log(data, step=int(step))
    self._call('log', log)

  def log_privacy(self, privacy: Mapping[str, Any]) -> None:
    """Records the privacy ledger in the run config, under 'privacy_ledger'."""
    self._call('config update', lambda: self._run.config.update(
        {'privacy_ledger': _scalars(privacy)}, allow_val_change=True))

  def log_summary(self, summary: Mapping[str, Any]) -> None:
    """Sets the run summary (final accuracy, epsilon, delta, ...)."""
    self._call('summary update', lambda: self._run.summary.update(_scalars(summary)))

  def close(self) -> None:
    """Finishes the wandb run; safe to call twice."""
    run, self._run = self._run, None
    self.active = False
    if run is None:
      return
    try:
      run.finish()
    except Exception as e:  # pylint: disable=broad-except
      self._fail(f'wandb finish failed ({type(e).__name__}: {e})')

  def __enter__(self) -> 'WandbLogger':
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()
