"""The generator's shape (GeneratorConfig) and the JSON round-trip of model configs, without torch.

The inference path reads a weights file's config with this module alone (progsr/models/io.py), so an
install without torch can plan, blend and run the ONNX graphs.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from progsr.config import check_types, replace_checked
from progsr.errors import UserError
from progsr.scales import scale_of, scales_up_to

UPSAMPLER_NAMES = ("pixelshuffle", "nearest_conv")
ACTIVATIONS = ("relu", "lrelu", "silu")


class ConfigMixin:
    """JSON round-trip for the model config dataclasses; types are checked by progsr.config (one checker)."""

    def _check_types(self, what: str) -> None:
        check_types(self, what)

    def to_dict(self) -> dict:
        """Plain dict for JSON (tuples become lists; from_dict turns them back)."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """The config as a compact JSON string (the safetensors header value)."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict):
        """Rebuild a config from a dict (e.g. parsed JSON), type-checked; unknown keys are an error."""
        if not isinstance(data, dict):
            raise UserError(f"{cls.__name__}: expected a mapping, got {type(data).__name__}")
        return replace_checked(cls(), data, cls.__name__)

    @classmethod
    def from_json(cls, text: str):
        """Rebuild a config from its JSON string."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise UserError(f"{cls.__name__}: not valid JSON ({err})") from None
        return cls.from_dict(data)


@dataclass(frozen=True)
class GeneratorConfig(ConfigMixin):
    """Shape of a ProgressiveGenerator; stored in the weights file so a checkpoint rebuilds its own model."""

    # Feature width at each resolution: 1x (the LR), 2x, 4x, 8x. Stage k's block runs at resolution k - 1
    # and its upsampler outputs resolution k. Most width where pixels are few (asymmetric pyramid).
    channels: tuple[int, ...] = (64, 16, 16, 16)
    blocks: tuple[int, ...] = (6, 2, 2)  # residual blocks in each stage's feature block (x2, x4, x8)
    upsampler: str = "pixelshuffle"  # "pixelshuffle" (sub-pixel conv) or "nearest_conv"
    activation: str = "relu"  # "relu", "lrelu" or "silu"
    res_scale: float = 1.0  # residual-branch scale inside the residual blocks (EDSR uses 0.1 for wide nets)

    def __post_init__(self):
        self._check_types("generator")
        if not 1 <= len(self.blocks) <= 3:
            raise UserError(f"generator config: 1 to 3 stages (x2, x4, x8), got {len(self.blocks)} blocks entries")
        if len(self.channels) != len(self.blocks) + 1:
            raise UserError(f"generator config: channels {list(self.channels)} needs one width per resolution, "
                            f"i.e. len(blocks) + 1 = {len(self.blocks) + 1} entries")
        if min(self.channels) < 1 or min(self.blocks) < 0:
            raise UserError("generator config: channels must be >= 1 and blocks >= 0")
        if self.upsampler not in UPSAMPLER_NAMES:
            raise UserError(f"generator config: upsampler {self.upsampler!r} is not one of {sorted(UPSAMPLER_NAMES)}")
        if self.activation not in ACTIVATIONS:
            raise UserError(f"generator config: activation {self.activation!r} is not one of {list(ACTIVATIONS)}")

    @property
    def num_stages(self) -> int:
        """How many 2x stages the model has (3 for an x8 model)."""
        return len(self.blocks)

    @property
    def max_scale(self) -> int:
        """The largest scale the model produces."""
        return scale_of(self.num_stages)

    @property
    def scales(self) -> tuple[int, ...]:
        """Every scale the model produces: (2, 4, 8) for an x8 model."""
        return scales_up_to(self.num_stages)

    def activation_bytes_per_pixel(self, scale: int) -> int:
        """CPU float32 inference memory per LR pixel at x`scale`: four times the largest activation, the most
        alive at once (equal to the torch probe's hook measurement for every upsampler; tested)."""
        c = self.channels
        largest = max(max(c[j], 4 * c[j + 1], 12) * 4**j for j in range(scale.bit_length() - 1))
        return 16 * largest

    def grows_into(self, other: "GeneratorConfig") -> bool:
        """True when `other` is this config with as many or more residual blocks in each stage that has any."""
        return (dataclasses.replace(other, blocks=self.blocks) == self
                and all(b == a or (a > 0 and b > a) for a, b in zip(self.blocks, other.blocks)))

    @classmethod
    def tiny(cls) -> "GeneratorConfig":
        """A very small x8 generator (a few thousand parameters) for tests and smoke runs."""
        return cls(channels=(8, 4, 4, 4), blocks=(1, 1, 0))


def tiny_config() -> GeneratorConfig:
    """Shorthand for GeneratorConfig.tiny()."""
    return GeneratorConfig.tiny()
