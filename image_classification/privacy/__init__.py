"""DP-SGD's privacy path: per-example clipping, Gaussian noise, accounting."""
