"""One training step: the generator's losses (pixel, LPIPS, triplet, adversarial), the discriminator's, both updates.

A batch is a list of groups (scale, LR, [stage targets]), one per scale of the batch mix. Each group runs
through G up to its own scale; the group at the curriculum's top stage is faded in with alpha, the
others run at alpha 1. Every term is a mean over the group's samples, weighted by its share of the batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from progsr.losses import (charbonnier, feature_distance, gradient_penalty, grid_loss,
                           high_frequency_excess_loss, l1_distance, ragan_d_loss, ragan_g_loss, triplet_loss,
                           wgan_d_loss, wgan_g_loss)
from progsr.scales import stage_of

# LPIPS terms skip stage images smaller than this: AlexNet's strided convs and pools need about 32 px.
LPIPS_MIN_SIZE = 32


def _add(terms: dict, key: str, value: torch.Tensor, weight: float) -> None:
    terms[key] = terms.get(key, 0.0) + weight * value


def _picked(cfg_value: str, n_stages: int) -> list[int]:
    """Stage indices (0-based) a term applies to: every active stage ("all") or the group's top one ("top")."""
    return list(range(n_stages)) if cfg_value == "all" else [n_stages - 1]


def generator_losses(G, D, lpips_loss, groups, stage: int, alpha: float, cfg, amp):
    """(total loss, {term: value}) for G on this batch; `outs` per group are returned for the D step."""
    batch = sum(lr.shape[0] for _, lr, _ in groups)
    terms: dict = {}
    outputs = []
    for scale, lr, targets in groups:
        n_stages, share = stage_of(scale), lr.shape[0] / batch
        g_alpha = alpha if n_stages == stage else 1.0
        alphas = [1.0] * (n_stages - 1) + [g_alpha]
        with amp:
            outs = G(lr, scale=scale, alpha=g_alpha, return_stages=True)
        outs = [o.float() for o in outs]
        outputs.append(outs)
        if cfg.pixel_weight > 0:
            pixel_fn = charbonnier if cfg.pixel_loss == "charbonnier" else F.mse_loss
            pixel = sum(pixel_fn(o, t) for o, t in zip(outs, targets))
            terms[f"pixel_x{scale}"] = pixel.detach()
            _add(terms, "pixel", pixel, share)
        if cfg.grid_weight > 0:  # on the group's output, where every stage's grid shows (period = its scale)
            _add(terms, "grid", grid_loss(outs[-1], targets[-1], scale), share)
        if cfg.high_frequency_weight > 0 and (not cfg.high_frequency_scales or scale in cfg.high_frequency_scales):
            _add(terms, "high_frequency", high_frequency_excess_loss(outs[-1], targets[-1]), share)
        # Computed once per stage and shared by the terms that need them: the target's LPIPS features (no
        # grad), per-sample LPIPS(target, output), and D's logits and features for the target and the output.
        lpips_t, lpips_d, judged = {}, {}, {}
        adv_stages = [k + 1 for k in _picked(cfg.adversarial_stages, n_stages)]
        with amp:
            top = n_stages - 1  # perceptual loss on the output stage only: every stage lost its A/B (HISTORY.md)
            if lpips_loss is not None and min(outs[top].shape[-2:]) >= LPIPS_MIN_SIZE:
                with torch.no_grad():
                    lpips_t[top] = lpips_loss.features(targets[top])
                lpips_d[top] = lpips_loss.distance(lpips_t[top], lpips_loss.features(outs[top])).float()
            # D judges the adversarial stages; the dfeat triplet reuses those features (and only those stages).
            dfeat = cfg.triplet_weight > 0 and cfg.triplet_distance == "dfeat"
            d_stages = [s - 1 for s in adv_stages] if cfg.adversarial_weight > 0 or dfeat else []
            for k in d_stages:
                with torch.no_grad():
                    real, f_real = D(targets[k], lr, k + 1, alphas[k], return_features=True)
                fake, f_fake = D(outs[k], lr, k + 1, alphas[k], return_features=True)
                judged[k] = (real.float(), [f.float() for f in f_real], fake.float(), [f.float() for f in f_fake])
        if cfg.perceptual_weight > 0:  # logged even when every stage is too small for LPIPS (then 0)
            _add(terms, "perceptual", sum((d.mean() for d in lpips_d.values()), torch.zeros((), device=lr.device)),
                 share)
        if cfg.triplet_weight > 0:
            losses, active = _triplet(D, lpips_loss, lr, outs, targets, alphas, lpips_t, lpips_d, judged, cfg, amp)
            if losses:
                _add(terms, "triplet", sum(losses), share)
                _add(terms, "triplet_active", torch.stack(active).mean(), share)
        if cfg.adversarial_weight > 0:
            if cfg.adversarial_loss == "wgan_gp":
                adv = sum(wgan_g_loss(judged[s - 1][2]) for s in adv_stages)
            else:
                adv = sum(ragan_g_loss(judged[s - 1][0], judged[s - 1][2]) for s in adv_stages)
            _add(terms, "adversarial", adv, share)
    total = sum(cfg_weight(cfg, key) * value for key, value in terms.items() if cfg_weight(cfg, key))
    if not torch.is_tensor(total):  # every weighted term skipped (e.g. LPIPS only, every stage too small)
        total = torch.zeros((), device=groups[0][1].device)
    terms["total"] = total
    return total, terms, outputs


def build_perceptual_loss(cfg, device):
    """The perceptual loss the config's terms need (perceptual, or the LPIPS triplet), or None: LPIPS on
    `perceptual_net` vgg or alex."""
    from progsr.losses import LPIPSLoss

    if cfg.perceptual_weight > 0 or (cfg.triplet_weight > 0 and cfg.triplet_distance == "lpips"):
        return LPIPSLoss(cfg.perceptual_net, cfg.backbones or None, device=device, layers=cfg.perceptual_layers)
    return None


def cfg_weight(cfg, key: str) -> float:
    """The config's weight of a loss term (0 for logged-only values)."""
    return {"pixel": cfg.pixel_weight, "perceptual": cfg.perceptual_weight, "triplet": cfg.triplet_weight,
            "adversarial": cfg.adversarial_weight, "grid": cfg.grid_weight,
            "high_frequency": cfg.high_frequency_weight}.get(key, 0.0)


def _triplet(D, lpips_loss, lr, outs, targets, alphas, lpips_t, lpips_d, judged, cfg, amp):
    """Per stage k: anchor = target, positive = stage-k output, negative = the interpolated stage k-1 image."""
    from progsr.models.generator import upsample_image

    losses, active = [], []
    previous = [lr] + outs[:-1]
    for k in range(len(outs)):
        anchor, positive = targets[k], outs[k]
        negative = upsample_image(previous[k].detach()).float()
        if cfg.triplet_distance == "l1":
            d_ap, d_an = l1_distance(anchor, positive), l1_distance(anchor, negative)
        elif cfg.triplet_distance == "lpips":
            if k not in lpips_d:
                continue  # no LPIPS at this stage (it runs on the output stage only, at least LPIPS_MIN_SIZE)
            d_ap = lpips_d[k]
            with amp, torch.no_grad():  # the anchor's features are reused from the perceptual term
                d_an = lpips_loss.distance(lpips_t[k], lpips_loss.features(negative)).float()
        else:  # dfeat: distances between D's feature maps, on the stages D judges
            if k not in judged:
                continue
            _, f_anchor, _, f_positive = judged[k]
            with amp, torch.no_grad():
                f_negative = D(negative, lr, k + 1, alphas[k], return_features=True)[1]
            d_ap = feature_distance(f_anchor, f_positive)
            d_an = feature_distance(f_anchor, [f.float() for f in f_negative])
        loss_k, active_k = triplet_loss(d_ap, d_an, cfg.triplet_margin)
        losses.append(loss_k)
        active.append(active_k)
    return losses, active


def discriminator_loss(D, groups, outputs, stage: int, alpha: float, cfg, amp) -> torch.Tensor:
    """D's loss: real targets against the detached outputs, every judged stage of every group.

    Relativistic average by default; with adversarial_loss = "wgan_gp" ProGAN's critic loss (drift term
    and gradient penalty, the penalty computed in full precision).
    """
    batch = sum(lr.shape[0] for _, lr, _ in groups)
    total = 0.0
    for (scale, lr, targets), outs in zip(groups, outputs):
        n_stages = stage_of(scale)
        alphas = [1.0] * (n_stages - 1) + [alpha if n_stages == stage else 1.0]
        for k in [k + 1 for k in _picked(cfg.adversarial_stages, n_stages)]:
            with amp:
                real = D(targets[k - 1], lr, k, alphas[k - 1]).float()
                fake = D(outs[k - 1].detach(), lr, k, alphas[k - 1]).float()
            if cfg.adversarial_loss == "wgan_gp":
                critic = lambda x, k=k: D(x, lr, k, alphas[k - 1])  # noqa: E731
                loss = wgan_d_loss(real, fake, cfg.wgan_drift) + cfg.wgan_gp_weight * gradient_penalty(
                    critic, targets[k - 1], outs[k - 1])
            else:
                loss = ragan_d_loss(real, fake)
            total = total + lr.shape[0] / batch * loss
    return total


def train_step(G, D, opt_G, opt_D, lpips_loss, groups, stage: int, alpha: float, cfg, amp, lr_now: float,
               sync_grads=lambda params: None, update_g: bool = True) -> dict:
    """One iteration: G's update with D frozen (unless `update_g` is False: D's warm-up), then `d_steps` D
    updates on the same batch; returns the terms."""
    for group in opt_G.param_groups:
        group["lr"] = lr_now
    if D is not None:  # no gradients for D's weights in G's step
        D.requires_grad_(False)
    if update_g:
        total, terms, outputs = generator_losses(G, D, lpips_loss, groups, stage, alpha, cfg, amp)
        opt_G.zero_grad(set_to_none=True)
        total.backward()
        sync_grads(G.parameters())
        opt_G.step()
    else:  # G's outputs and terms (for the log) without a graph or an update
        with torch.no_grad():
            total, terms, outputs = generator_losses(G, D, lpips_loss, groups, stage, alpha, cfg, amp)
    if D is not None and cfg.adversarial_weight > 0:
        D.requires_grad_(True)
        for group in opt_D.param_groups:
            group["lr"] = lr_now * cfg.d_lr / cfg.lr
        for _ in range(cfg.d_steps):
            d_loss = discriminator_loss(D, groups, outputs, stage, alpha, cfg, amp)
            opt_D.zero_grad(set_to_none=True)
            d_loss.backward()
            sync_grads(D.parameters())
            opt_D.step()
        terms["d_loss"] = d_loss.detach()
    return terms
