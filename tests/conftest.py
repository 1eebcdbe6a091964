"""Tests run on the CPU, offline: no wandb network, no downloads."""
import os

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('WANDB_MODE', 'disabled')
os.environ.setdefault('WANDB_SILENT', 'true')
