"""Generator weights files: safetensors with the GeneratorConfig (JSON) and metadata in the header."""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import numpy as np

from progsr.errors import UserError
from progsr.models.config import GeneratorConfig

FORMAT = "progsr.generator.v1"
_RESERVED = ("config", "format")


def save_generator(model, path, metadata: dict | None = None) -> Path:
    """Write model's weights, config and metadata to a .safetensors file, atomically.

    Metadata values that are not strings are stored as JSON text (safetensors headers hold strings only).
    """
    from safetensors.torch import save

    from progsr.imageio import write_bytes_atomic

    path = Path(path)
    header = {"format": FORMAT, "config": model.config.to_json()}
    for key, value in (metadata or {}).items():
        if key in _RESERVED:
            raise ValueError(f"metadata key {key!r} is reserved")
        header[str(key)] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    # Serialised in memory: safetensors' own save_file creates its file 0600, ignoring the umask.
    write_bytes_atomic(path, save(tensors, metadata=header))
    return path


def read_weights(path) -> tuple[GeneratorConfig, dict[str, np.ndarray], dict]:
    """(config, weights as numpy arrays, metadata) of a progsr .safetensors file, without torch; UserError if not one."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such weights file")
    try:
        with safe_open(str(path), framework="numpy") as f:
            header = dict(f.metadata() or {})
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except Exception as err:  # safetensors raises its own error types for bad headers and truncation
        raise UserError(f"{path}: not a readable safetensors file ({err})") from None
    if header.get("format") != FORMAT or "config" not in header:
        raise UserError(f"{path}: not a progsr generator weights file (no progsr config in its header)")
    try:
        config = GeneratorConfig.from_json(header["config"])
    except (UserError, TypeError) as err:
        raise UserError(f"{path}: bad generator config in header ({err})") from None
    return config, tensors, {k: v for k, v in header.items() if k not in _RESERVED}


def load_generator(path, device="cpu"):
    """Rebuild the generator stored in a progsr .safetensors file; returns (ProgressiveGenerator in eval mode, metadata)."""
    import torch

    from progsr.models.generator import ProgressiveGenerator

    config, tensors, metadata = read_weights(path)
    model = ProgressiveGenerator(config)
    check_state(path, {k: tuple(v.shape) for k, v in model.state_dict().items()}, tensors)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()})
    return model.to(device).eval(), metadata


def check_state(path, expected: dict[str, tuple], tensors: dict[str, np.ndarray]) -> None:
    """UserError naming what differs when `tensors` do not have the `expected` names and shapes."""
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(k for k in set(expected) & set(tensors) if expected[k] != tuple(tensors[k].shape))
    if missing or unexpected or wrong:
        parts = [f"{name}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
                 for name, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if keys]
        raise UserError(f"{path}: weights do not match the config in its header ({'; '.join(parts)})")


def shipped_model_path(name: str) -> Path:
    """Path of a shipped model, or a UserError that says it is not installed and what to do instead."""
    from progsr.paths import shipped_weights

    path = shipped_weights(name)
    if not path.is_file():
        raise UserError(f"{path}: the shipped '{name}' model is not installed (no release weights yet); "
                        "pass --model PATH to a generator .safetensors file")
    return path


REALISM_MODELS = ("psnr", "gan")  # the shipped models a user names; the blend also reaches real and realgan
# (clean c, realism r) corner -> shipped model: the weights blend bilinearly between them
CORNERS = {(0, 0): "psnr", (0, 1): "gan", (1, 0): "real", (1, 1): "realgan"}


def check_realism(model: str) -> None:
    """The blend's precondition: the model is a shipped one it blends; else a one-line UserError."""
    if model not in REALISM_MODELS:
        raise UserError("--realism and --clean blend the shipped models; they cannot be used with --model PATH")


def realism_available(model: str) -> bool:
    """Whether realism can blend for `model`: a shipped name, with both shipped files installed."""
    return model in REALISM_MODELS and all(shipped_installed(name) for name in REALISM_MODELS)


def shipped_installed(name: str) -> bool:
    """Whether the shipped model `name` (a CORNERS value) is installed."""
    from progsr.paths import shipped_weights

    return shipped_weights(name).is_file()


def blend_weights(clean: float, realism: float) -> dict[str, float]:
    """{shipped model: weight} of the bilinear blend at (clean, realism), zero weights left out:
    (1-c)(1-r) psnr + (1-c) r gan + c (1-r) real + c r realgan."""
    weights = {name: (clean if c else 1 - clean) * (realism if r else 1 - realism) for (c, r), name in CORNERS.items()}
    return {name: w for name, w in weights.items() if w > 0}


class ShippedBlend:
    """The shipped weights blended by (clean, realism) (blend_weights) as numpy state dicts, each pair computed
    once (8 kept). A model with weight 0 is never loaded, so psnr alone needs no other file.

    Not locked: its caller (Upscaler) holds the Upscaler's lock.
    """

    def __init__(self, config: GeneratorConfig, cache_size: int = 8):
        self.config, self.cache_size = config, cache_size
        self.cache: OrderedDict[tuple[float, float], dict] = OrderedDict()
        self._shipped: dict[str, dict] = {}

    def state(self, clean: float, realism: float) -> dict:
        """The blended state dict at (clean, realism), both in [0, 1]."""
        key = (clean, realism)
        if key not in self.cache:
            parts = [(self._load(name), w) for name, w in blend_weights(clean, realism).items()]
            if len(parts) == 1:
                state = parts[0][0]
            else:
                first = parts[0][0]
                state = {k: sum(np.float32(w) * p[k] for p, w in parts).astype(first[k].dtype)
                         if first[k].dtype.kind == "f" else first[k] for k in first}
            self.cache[key] = state
            while len(self.cache) > self.cache_size:
                self.cache.popitem(last=False)
        self.cache.move_to_end(key)
        return self.cache[key]

    def _load(self, name: str) -> dict:
        """The weights (numpy) of a shipped model, loaded once; UserError if its architecture differs."""
        if name not in self._shipped:
            config, tensors, _ = read_weights(shipped_model_path(name))
            if config != self.config:
                raise UserError(f"the shipped {name} model's architecture differs from the psnr model's "
                                f"({config} vs {self.config}); cannot blend them")
            self._shipped[name] = tensors
        return self._shipped[name]
