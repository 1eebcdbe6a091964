"""Train state, the jitted DP-SGD step, the loop, evaluation, mesh and checkpoints."""
