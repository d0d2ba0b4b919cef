"""Named building blocks shared by the generator and the discriminator."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def make_activation(name: str) -> nn.Module:
    """The activation module for a config name: "relu", "lrelu" (slope 0.2) or "silu"."""
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "lrelu":
        return nn.LeakyReLU(0.2, inplace=True)
    if name == "silu":
        return nn.SiLU(inplace=True)
    raise ValueError(f"unknown activation {name!r} (expected relu, lrelu or silu)")


class Conv2dLayer(nn.Module):
    """A same-padded conv, then an optional activation: the generator's plain building block."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, activation: str | None = None):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.act = make_activation(activation) if activation else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))


class ResidualBlock(nn.Module):
    """EDSR-style residual block: conv-act-conv plus identity, no normalisation, scaled residual."""

    def __init__(self, channels: int, activation: str = "relu", res_scale: float = 1.0):
        super().__init__()
        self.conv1 = Conv2dLayer(channels, channels, 3, activation)
        self.conv2 = Conv2dLayer(channels, channels, 3)
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(self.conv1(x))
        return x + (y if self.res_scale == 1.0 else self.res_scale * y)


class FeatureBlock(nn.Module):
    """A stage's feature block: residual blocks and a closing conv, wrapped in a long skip."""

    def __init__(self, channels: int, num_blocks: int, activation: str = "relu", res_scale: float = 1.0):
        super().__init__()
        self.blocks = nn.Sequential(*[ResidualBlock(channels, activation, res_scale) for _ in range(num_blocks)])
        self.conv = Conv2dLayer(channels, channels, 3) if num_blocks > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.conv, nn.Identity):
            return x
        return x + self.conv(self.blocks(x))


class SubPixelUpsample(nn.Module):
    """Learned 2x feature upsampler: conv to 4x the channels, then PixelShuffle (no checkerboard).

    The conv weights start ICNR-initialised (each group of 4 sub-pixel outputs shares one kernel), so at
    initialisation the upsampler equals nearest-neighbour upsampling of a conv: no checkerboard from step 0.
    """

    def __init__(self, in_channels: int, out_channels: int, activation: str | None = "relu"):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels * 4, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)
        self.act = make_activation(activation) if activation else nn.Identity()
        _icnr_(self.conv, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.shuffle(self.conv(x)))


class NearestConvUpsample(nn.Module):
    """Learned 2x feature upsampler: nearest-neighbour resize, then a conv (the ESRGAN choice)."""

    def __init__(self, in_channels: int, out_channels: int, activation: str | None = "relu"):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.act = make_activation(activation) if activation else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(F.interpolate(x, scale_factor=2, mode="nearest")))


def _icnr_(conv: nn.Conv2d, scale: int) -> None:
    """ICNR init (Aitken et al. 2017): copy one kaiming kernel to all scale**2 sub-pixel outputs."""
    out_ch, in_ch, kh, kw = conv.weight.shape
    sub = torch.empty(out_ch // scale**2, in_ch, kh, kw)
    nn.init.kaiming_normal_(sub, a=0, mode="fan_in", nonlinearity="relu")
    with torch.no_grad():
        conv.weight.copy_(sub.repeat_interleave(scale**2, dim=0))
        if conv.bias is not None:
            conv.bias.zero_()


# ---------------------------------------------------------------------------------------------
# Discriminator layers (ProGAN stabilisers)


class EqualizedConv2d(nn.Module):
    """Conv with equalized learning rate (ProGAN): weights stored N(0, 1), scaled by gain/sqrt(fan_in) at run time.

    With `equalized=False` it is a plain conv with the same interface, so the stabiliser is a config switch.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, gain: float = math.sqrt(2),
                 equalized: bool = True, bias: bool = True):
        super().__init__()
        self.padding = kernel_size // 2
        self.equalized = equalized
        fan_in = in_channels * kernel_size * kernel_size
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        if equalized:
            self.scale = gain / math.sqrt(fan_in)
        else:
            self.scale = 1.0
            with torch.no_grad():
                self.weight.mul_(gain / math.sqrt(fan_in))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight * self.scale if self.scale != 1.0 else self.weight
        return F.conv2d(x, w, self.bias, padding=self.padding)


class EqualizedLinear(nn.Module):
    """Linear layer with equalized learning rate (or plain, with `equalized=False`)."""

    def __init__(self, in_features: int, out_features: int, gain: float = math.sqrt(2), equalized: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        if equalized:
            self.scale = gain / math.sqrt(in_features)
        else:
            self.scale = 1.0
            with torch.no_grad():
                self.weight.mul_(gain / math.sqrt(in_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight * self.scale if self.scale != 1.0 else self.weight
        return F.linear(x, w, self.bias)


class MinibatchStdLayer(nn.Module):
    """Appends the mean per-group standard deviation of the features as extra channels (ProGAN).

    Lets D see the variety within a minibatch, which discourages mode collapse. Groups are the largest
    divisor of the batch size up to `group_size`, so any batch size works (a batch of 1 gives zeros).
    """

    def __init__(self, group_size: int = 4, num_channels: int = 1):
        super().__init__()
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = max(d for d in range(1, min(self.group_size, n) + 1) if n % d == 0)
        f = self.num_channels
        y = x.reshape(g, n // g, f, c // f, h, w).float()
        y = (y.var(dim=0, unbiased=False) + 1e-8).sqrt()  # [n/g, f, c/f, h, w]
        y = y.mean(dim=(2, 3, 4)).reshape(n // g, f, 1, 1)
        y = y.repeat(g, 1, h, w).to(x.dtype)  # sample i belongs to group i % (n/g)
        return torch.cat([x, y], dim=1)


class DiscriminatorBlock(nn.Module):
    """Two 3x3 convs then 2x average-pool downsampling, with an optional 1x1 residual skip (StyleGAN2)."""

    def __init__(self, in_channels: int, out_channels: int, equalized: bool = True, residual: bool = True,
                 ceil_mode: bool = False):
        super().__init__()
        self.conv1 = EqualizedConv2d(in_channels, in_channels, 3, equalized=equalized)
        self.conv2 = EqualizedConv2d(in_channels, out_channels, 3, equalized=equalized)
        self.skip = EqualizedConv2d(in_channels, out_channels, 1, gain=1.0, equalized=equalized, bias=False) if residual else None
        self.act = nn.LeakyReLU(0.2)
        self.ceil_mode = ceil_mode

    def _down(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, 2, ceil_mode=self.ceil_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.conv1(x))
        y = self._down(self.act(self.conv2(y)))
        if self.skip is not None:
            y = (y + self.skip(self._down(x))) * (1 / math.sqrt(2))
        return y
