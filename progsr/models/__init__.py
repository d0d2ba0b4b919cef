"""The progressive SR models: generator, discriminator, and their weights files.

Names are imported on first use, so `progsr.models.config` and `progsr.models.io` load without torch.
"""

import importlib

_HOMES = {
    "DiscriminatorConfig": "discriminator", "ProgressiveDiscriminator": "discriminator",
    "GeneratorConfig": "config", "tiny_config": "config", "ProgressiveGenerator": "generator",
    "load_generator": "io", "save_generator": "io",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    """Import `name` from its module on first use (PEP 562)."""
    if name not in _HOMES:
        raise AttributeError(f"module 'progsr.models' has no attribute {name!r}")
    return getattr(importlib.import_module(f"progsr.models.{_HOMES[name]}"), name)
