"""The progressive discriminator: conditional on the LR input, growing with the generator's stages."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from progsr.errors import UserError
from progsr.models.config import ConfigMixin
from progsr.models.generator import check_alpha
from progsr.models.layers import DiscriminatorBlock, EqualizedConv2d, EqualizedLinear, MinibatchStdLayer


@dataclass(frozen=True)
class DiscriminatorConfig(ConfigMixin):
    """Shape and stabilisers of a ProgressiveDiscriminator."""

    channels: tuple[int, ...] = (256, 128, 64, 32)  # feature width at 1x, 2x, 4x, 8x the LR resolution
    head_blocks: int = 2  # extra downsampling blocks at LR resolution (ceil-mode, so any LR size works)
    conditional: bool = True  # also show D the LR input (bicubic-upsampled, concatenated as 3 channels)
    equalized_lr: bool = True  # ProGAN weight-scaled convs and linears
    minibatch_std: bool = True  # ProGAN minibatch standard-deviation channel before the head
    mbstd_group_size: int = 4
    spectral_norm: bool = False  # spectral normalisation on every conv and linear
    residual: bool = True  # 1x1 residual skips in the blocks (StyleGAN2 "resnet" D)

    def __post_init__(self):
        self._check_types("discriminator")
        if not 2 <= len(self.channels) <= 4:
            raise UserError(f"discriminator config: channels must be a tuple of 2 to 4 widths, got {self.channels!r}")
        if min(self.channels) < 1 or self.head_blocks < 0 or self.mbstd_group_size < 1:
            raise UserError("discriminator config: channels and mbstd_group_size must be >= 1, head_blocks >= 0")
        if self.spectral_norm and self.equalized_lr:
            # spectral norm divides by the weight's largest singular value, equalized lr then scales by
            # sqrt(2 / fan_in) again: every layer shrinks to a few percent of its scale and D's output vanishes
            raise UserError("discriminator config: spectral_norm and equalized_lr cannot be combined "
                            "(set equalized_lr false to use spectral_norm)")

    @property
    def num_stages(self) -> int:
        """Stages of generator output this D can judge (3 for x8)."""
        return len(self.channels) - 1

    @classmethod
    def tiny(cls) -> "DiscriminatorConfig":
        """A very small discriminator for tests and smoke runs."""
        return cls(channels=(16, 8, 8, 4), head_blocks=1)


class ProgressiveDiscriminator(nn.Module):
    """Judges a stage-k image (2^k x the LR size) given the LR input; grows and fades in with G.

    Resolution r (0 = LR, 1 = 2x, ...) has a 1x1 from_rgb[r] and, for r >= 1, a DiscriminatorBlock
    blocks[r - 1] that halves the resolution to r - 1. At stage s the image enters through from_rgb[s] and
    blocks[s - 1]; while fading in (alpha < 1) that path is blended with from_rgb[s - 1](avg_pool(image)),
    as in ProGAN.
    The head works at LR resolution and ends in global average pooling, so patch sizes can vary.
    """

    def __init__(self, config: DiscriminatorConfig | None = None):
        super().__init__()
        self.config = config = config or DiscriminatorConfig()
        eq = config.equalized_lr
        ch = config.channels
        in_ch = 6 if config.conditional else 3
        self.from_rgb = nn.ModuleList(EqualizedConv2d(in_ch, c, 1, equalized=eq) for c in ch)
        # blocks[r - 1] takes resolution r down to r - 1.
        self.blocks = nn.ModuleList(
            DiscriminatorBlock(ch[r], ch[r - 1], equalized=eq, residual=config.residual) for r in range(1, len(ch))
        )
        self.head_blocks = nn.Sequential(
            *[DiscriminatorBlock(ch[0], ch[0], equalized=eq, residual=config.residual, ceil_mode=True)
              for _ in range(config.head_blocks)]
        )
        self.mbstd = MinibatchStdLayer(config.mbstd_group_size) if config.minibatch_std else None
        self.head_conv = EqualizedConv2d(ch[0] + (1 if self.mbstd else 0), ch[0], 3, equalized=eq)
        self.head_fc = EqualizedLinear(ch[0], ch[0], equalized=eq)
        self.out = EqualizedLinear(ch[0], 1, gain=1.0, equalized=eq)
        self.act = nn.LeakyReLU(0.2)
        if config.spectral_norm:
            for module in list(self.modules()):
                if isinstance(module, (EqualizedConv2d, EqualizedLinear)):
                    _spectral_norm(module, name="weight")

    def forward(self, img: torch.Tensor, lr: torch.Tensor, stage: int, alpha: float = 1.0,
                return_features: bool = False):
        """Logits (N,) for img at `stage` (its size is 2^stage times lr's); with return_features also the
        list of intermediate feature maps (after the entry/fade, after each block, after the head conv)."""
        self._check(img, lr, stage)
        blend = check_alpha(alpha)
        features = []
        x = self.blocks[stage - 1](self._from_rgb(stage, img, lr))
        if blend:
            # The old path: the image pooled to the previous resolution enters there, exactly as the
            # stage - 1 discriminator would see it, so alpha = 0 reproduces the smaller D.
            x = alpha * x + (1 - alpha) * self._from_rgb(stage - 1, F.avg_pool2d(img, 2), lr)
        features.append(x)
        for r in range(stage - 1, 0, -1):
            x = self.blocks[r - 1](x)
            features.append(x)
        x = self.head_blocks(x)
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.act(self.head_conv(x))
        features.append(x)
        x = self.act(self.head_fc(x.mean(dim=(2, 3))))
        logits = self.out(x).squeeze(1)
        return (logits, features) if return_features else logits

    def _from_rgb(self, r: int, img: torch.Tensor, lr: torch.Tensor) -> torch.Tensor:
        """Features of an image at resolution r, with the LR input upsampled to its size as condition."""
        x = img * 2 - 1
        if self.config.conditional:
            cond = lr if img.shape[-2:] == lr.shape[-2:] else F.interpolate(
                lr, size=img.shape[-2:], mode="bicubic", align_corners=False)
            x = torch.cat([x, cond * 2 - 1], dim=1)
        return self.act(self.from_rgb[r](x))

    def _check(self, img: torch.Tensor, lr: torch.Tensor, stage: int) -> None:
        if not 1 <= stage <= self.config.num_stages:
            raise ValueError(f"stage must be in 1..{self.config.num_stages}, got {stage}")
        f = 2**stage
        if img.shape[0] != lr.shape[0] or tuple(img.shape[-2:]) != (lr.shape[-2] * f, lr.shape[-1] * f):
            raise ValueError(f"stage {stage} needs img of size {f}x the lr size; got img {tuple(img.shape)}, "
                             f"lr {tuple(lr.shape)}")
