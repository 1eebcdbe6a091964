"""The front door of a training run: what launch.py, sweeps and the Python API call.

  runs.train(config, workdir)          train (or resume, or report a finished run)
  runs.train(config, workdir, dry_run=True)   check everything, write plan.json
  runs.check(config)                   check everything, write nothing (sweeps check
                                       every point before the first trains)

A run's optional parts plug in here: the audit the config asks for
(``config.audit``, audit/hook.py) is handed to the loop as a plug-in with calls on
each side of training; with the audit off there is none. The loop itself
(training/loop.py: start -> fit -> finish) knows nothing of the audit package.
"""
import ml_collections

from image_classification.audit import hook as audit_hook
from image_classification.training import experiment as experiment_lib
from image_classification.training import loop


def train(config: ml_collections.ConfigDict, workdir: str, dry_run: bool = False,
          dataset=None) -> dict:
  """Trains ``config`` in ``workdir``; returns summary.json's content (plan.json's
  for a dry run). ``dataset``: splits to use instead of config.data's (tests)."""
  return loop.train(config, workdir, dry_run=dry_run, dataset=dataset,
                    audit=audit_hook.for_config(config))


def check(config: ml_collections.ConfigDict,
          dataset=None) -> experiment_lib.Experiment:
  """Everything a dry run checks (config, data, privacy plan, model), writing
  nothing; needs model.pretrained_path to exist but does not read it."""
  return experiment_lib.check(config, dataset, audit=audit_hook.for_config(config))
