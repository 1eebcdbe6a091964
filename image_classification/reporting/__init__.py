"""Console progress, run files, wandb, sweep and report tables and plots."""
