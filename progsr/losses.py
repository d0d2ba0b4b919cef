"""Training losses: Charbonnier pixel loss, LPIPS perceptual loss, relativistic-average GAN or WGAN-GP, triplet stage loss,
a penalty on the pattern locked to the generator's upsampling grid, LDL's artifact loss and a penalty on
high-frequency energy beyond the target's.

Images are NxCxHxW float in [0, 1]; per-sample distances are (N,) tensors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn



def charbonnier(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Mean of sqrt((pred - target)^2 + eps^2): L1 that stays smooth at 0 (LapSRN's pixel loss)."""
    return torch.sqrt((pred - target) ** 2 + eps * eps).mean()


def grid_loss(pred: torch.Tensor, target: torch.Tensor, period: int) -> torch.Tensor:
    """Mean |difference| of the two images' patterns that repeat every `period` px, locked to the crop's corner.

    Training crops start on a multiple of the output scale, so this is the pattern locked to the generator's
    upsampling grid: perceptual losses reward a cheap one (a dot grid in flat areas), natural images carry
    almost none, and penalising only these period^2 values per channel leaves every unlocked texture free.
    """
    from progsr.metrics import grid_phase_means

    return (grid_phase_means(pred, period) - grid_phase_means(target, period)).abs().mean()


def highest_frequency_amplitude(img: torch.Tensor, window: int = 7) -> torch.Tensor:
    """Local RMS, per channel, of the image's second differences along x and y ([1, -2, 1] / 4: gain 1 at the
    2 px period, 0.5 at 4 px, 0.1 at 10 px), over window x window px; (N, C, H - 2 - window + 1, ...)."""
    dxx = (img[..., 1:-1, 2:] - 2 * img[..., 1:-1, 1:-1] + img[..., 1:-1, :-2]) / 4
    dyy = (img[..., 2:, 1:-1] - 2 * img[..., 1:-1, 1:-1] + img[..., :-2, 1:-1]) / 4
    return (F.avg_pool2d(dxx * dxx + dyy * dyy, window, stride=1) + 1e-8).sqrt()


def high_frequency_excess_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean amount by which the output's local 2-4 px amplitude (highest_frequency_amplitude) exceeds the target's.

    One-sided: texture up to the target's own level is free, so the term only removes what the target
    does not have there, such as the 2 px cross-hatch a pixel-shuffle GAN paints on smooth skin.
    """
    with torch.no_grad():
        reference = highest_frequency_amplitude(target)
    return F.relu(highest_frequency_amplitude(pred) - reference).mean()


class LPIPSLoss(nn.Module):
    """LPIPS v0.1 (alex or vgg) as a differentiable per-sample distance on [0, 1] images; its weights are frozen.

    `layers` < 5 keeps only the backbone's first slices and their learned weights (a truncated LPIPS: the
    deep VGG slices cost most of the time on small crops); 5 is exactly `lpips.LPIPS`. `features` and
    `distance` split the computation so that one image's features serve several distances.
    """

    def __init__(self, net: str = "vgg", backbone_path=None, device="cpu", layers: int = 5):
        super().__init__()
        from progsr.metrics import build_lpips

        if not 1 <= layers <= 5:
            raise ValueError(f"LPIPS layers must be 1 to 5, got {layers}")
        self.model = build_lpips(net, backbone_path, device=device)
        self.layers = layers
        self.slices = [getattr(self.model.net, f"slice{k}") for k in range(1, layers + 1)]

    def features(self, img: torch.Tensor) -> list[torch.Tensor]:
        """The unit-normalised feature maps of the kept slices for a [0, 1] image batch."""
        import lpips

        x = self.model.scaling_layer(img * 2 - 1)
        out = []
        for piece in self.slices:
            x = piece(x)
            out.append(lpips.normalize_tensor(x))
        return out

    def distance(self, feats_a: list[torch.Tensor], feats_b: list[torch.Tensor]) -> torch.Tensor:
        """Per-sample LPIPS, (N,), from two `features` lists."""
        return sum(self.model.lins[k]((fa - fb) ** 2).mean(dim=(1, 2, 3)) for k, (fa, fb) in enumerate(zip(feats_a, feats_b)))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.distance(self.features(a), self.features(b))


# Adversarial loss: relativistic average GAN (Jolicoeur-Martineau 2018; ESRGAN's choice for SR).
# D estimates whether a real image is more realistic than the average fake, and G gets gradients from
# both terms: it learns to make fakes look more real AND real images look less real relative to them,
# which ESRGAN found gives sharper, more natural texture than the standard GAN. Against non-saturating
# + R1 it needs no gradient penalty, so no double backward through D: cheaper per step, and it works
# unchanged under bf16 autocast and torch.compile.


def ragan_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator loss: real should beat the mean fake, fake should lose to the mean real."""
    real_rel = real_logits - fake_logits.mean()
    fake_rel = fake_logits - real_logits.mean()
    return 0.5 * (F.softplus(-real_rel).mean() + F.softplus(fake_rel).mean())


def ragan_g_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator loss: the same comparisons with the labels swapped (real_logits may be detached)."""
    real_rel = real_logits - fake_logits.mean()
    fake_rel = fake_logits - real_logits.mean()
    return 0.5 * (F.softplus(real_rel).mean() + F.softplus(-fake_rel).mean())


# ProGAN's own loss, for reproducing its configuration: WGAN-GP (Gulrajani et al. 2017) with ProGAN's drift
# term, which keeps the critic's real scores near 0. The gradient penalty needs a double backward through D.


def wgan_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, drift: float = 1e-3) -> torch.Tensor:
    """Critic loss without the gradient penalty: E[D(fake)] - E[D(real)] + drift * E[D(real)^2]."""
    return fake_logits.mean() - real_logits.mean() + drift * (real_logits**2).mean()


def wgan_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator loss: -E[D(fake)]."""
    return -fake_logits.mean()


def gradient_penalty(critic, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """E[(||grad critic(x)|| - 1)^2] at random points x between real and (detached) fake samples."""
    eps = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
    mixed = (eps * real + (1 - eps) * fake.detach()).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(mixed).sum(), mixed, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


def l1_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample mean absolute difference, (N,)."""
    return (a - b).abs().flatten(1).mean(dim=1)


def feature_distance(feats_a: list[torch.Tensor], feats_b: list[torch.Tensor]) -> torch.Tensor:
    """Per-sample distance between two lists of feature maps (e.g. D's): mean over layers of each layer's mean |a - b|."""
    return torch.stack([l1_distance(fa, fb) for fa, fb in zip(feats_a, feats_b)]).mean(dim=0)


def triplet_loss(d_anchor_pos: torch.Tensor, d_anchor_neg: torch.Tensor, margin: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Triplet stage loss: mean of max(0, d(a, p) - d(a, n) + margin), and the fraction of active (non-zero) triplets.

    For stage k the anchor is the HR target at that stage's size, the positive the stage-k output and
    the negative the stage-(k-1) output interpolated up and detached: stage k must beat "no stage k"
    by at least `margin`, and samples that already do cost nothing.
    """
    hinge = d_anchor_pos - d_anchor_neg + margin
    return F.relu(hinge).mean(), (hinge > 0).float().mean().detach()
