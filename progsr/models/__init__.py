"""The progressive SR models: generator, discriminator, and their weights files."""

from progsr.models.discriminator import DiscriminatorConfig, ProgressiveDiscriminator
from progsr.models.generator import GeneratorConfig, ProgressiveGenerator, tiny_config
from progsr.models.io import load_generator, save_generator

__all__ = [
    "DiscriminatorConfig",
    "GeneratorConfig",
    "ProgressiveDiscriminator",
    "ProgressiveGenerator",
    "load_generator",
    "save_generator",
    "tiny_config",
]
