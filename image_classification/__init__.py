"""Differentially private image classification on JAX: configs, data, models, DP-SGD."""
