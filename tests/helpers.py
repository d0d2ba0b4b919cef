"""Small builders shared by several test modules (pytest puts tests/ on sys.path)."""

import torch

from progsr.models import ProgressiveGenerator, tiny_config


def random_tiny(seed: int) -> ProgressiveGenerator:
    """A tiny generator with its zero-initialised tensors randomised (as initialised, its output is plain bicubic)."""
    torch.manual_seed(seed)
    model = ProgressiveGenerator(tiny_config())
    with torch.no_grad():
        for param in model.parameters():
            if not param.any():
                param.normal_(0, 0.05)
    return model.eval()
