"""Config validation: every bad field is named, with what would fix it, before any data
is loaded or anything compiles.

``validate(config, num_devices)`` checks the config alone, calling each section's
own checks (next to the code that owns the section) in a fixed order;
``validate_with_data`` checks what needs the dataset size (batch vs dataset, delta vs
1/N); ``check_workdir`` checks the output folder.
"""
import os

import ml_collections

from image_classification import errors
from image_classification import plan as plan_lib
from image_classification.audit import config_checks as audit_checks
from image_classification.data import datasets
from image_classification.models import features
from image_classification.models import registry
from image_classification.reporting import wandb_logger
from image_classification.training import config_checks as training_checks

# A config field is invalid (errors.py); plan.PlanError is one too.
ConfigError = errors.ConfigError


def validate(config: ml_collections.ConfigDict, num_devices: int,
             dry_run: bool = False) -> None:
  """Checks every section with its owner's checks, in this order; raises ConfigError
  naming the first bad field. ``dry_run``: a missing pretrained checkpoint is not
  refused."""
  registry.validate_config(config, dry_run)       # config.model
  features.validate_config(config)                # config.model.features
  datasets.validate_config(config.data)           # config.data
  plan_lib.validate_privacy(config)               # config.privacy
  training_checks.validate_config(config, num_devices)  # config.training
  wandb_logger.validate_config(config)            # config.wandb
  audit_checks.validate_config(config)            # config.audit


def validate_with_data(config: ml_collections.ConfigDict, dataset_size: int) -> None:
  """What needs the training set's size N (the privacy plan's checks)."""
  plan_lib.validate_with_data(config, dataset_size)


def check_workdir(workdir: str) -> None:
  """Refuses a --workdir that cannot hold run files, before anything is loaded.

  Nothing is created: a workdir that does not exist yet must lie under a writable
  folder.
  """
  if not workdir:
    raise ConfigError('--workdir is required: the folder where the run writes its files')
  path = os.path.abspath(workdir)
  if os.path.exists(path) and not os.path.isdir(path):
    raise ConfigError(f'--workdir={workdir} is a file, not a folder; give a folder '
                      '(it is created if missing)')
  existing = path
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise ConfigError(f'--workdir={workdir} lies under {existing}, which is a file; '
                      'give a folder path')
  if not os.access(existing, os.W_OK | os.X_OK):
    raise ConfigError(f'--workdir={workdir}: {existing} is not writable by this user; '
                      'choose a folder you can write to')
