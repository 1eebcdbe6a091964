"""Model families behind a registry: see registry.build."""
from image_classification.models.registry import available, build, register
