"""One training step's terms: which stages each term touches, and both adversarial losses."""

import contextlib
import dataclasses

import pytest
import torch

from progsr.models.discriminator import DiscriminatorConfig, ProgressiveDiscriminator
from progsr.losses import feature_distance, triplet_loss
from progsr.models.generator import GeneratorConfig, ProgressiveGenerator, upsample_image
from progsr.training.config import TrainConfig, check_config
from progsr.training.steps import discriminator_loss, generator_losses, train_step

AMP = contextlib.nullcontext()

pytestmark = pytest.mark.usefixtures("one_thread")


class CountingLPIPS(torch.nn.Module):
    """An LPIPS stand-in: mean-pooled pixels as 'features'; records the image sizes it was asked for."""

    def __init__(self):
        super().__init__()
        self.sizes = []

    def features(self, img):
        self.sizes.append(img.shape[-1])
        return [img.mean(dim=1, keepdim=True)]

    def distance(self, fa, fb):
        return sum((a - b).abs().flatten(1).mean(dim=1) for a, b in zip(fa, fb))


class CountingD(ProgressiveDiscriminator):
    """The tiny discriminator, recording the stage of every call."""

    def __init__(self):
        super().__init__(DiscriminatorConfig.tiny())
        self.stages = []

    def forward(self, img, lr, stage, alpha=1.0, return_features=False):
        self.stages.append(stage)
        return super().forward(img, lr, stage, alpha, return_features)


def _setup(**overrides):
    cfg = TrainConfig(phase="gan", generator=GeneratorConfig.tiny().to_dict(),
                      discriminator=DiscriminatorConfig.tiny().to_dict(), **overrides)
    check_config(cfg)
    torch.manual_seed(0)
    G = ProgressiveGenerator(GeneratorConfig.tiny())
    # one x8 group: LR 8 px, so the stages are 16, 32 and 64 px (LPIPS skips the 16 px one)
    lr = torch.rand(4, 3, 8, 8)
    groups = [(8, lr, [torch.rand(4, 3, 8 * 2**k, 8 * 2**k) for k in (1, 2, 3)])]
    return cfg, G, groups


def _nonzero_heads(G):
    """Random to_rgb heads: at initialisation they are zero, and each stage output is exactly the interpolated
    previous one (the triplet's positive would equal its negative)."""
    torch.manual_seed(2)
    with torch.no_grad():
        for stage in G.stages:
            stage.to_rgb.weight.normal_(0, 0.1)
            stage.to_rgb.bias.normal_(0, 0.02)
    return G


def test_perceptual_loss_runs_on_the_output_stage_only():
    cfg, G, groups = _setup(perceptual_weight=1.0)
    lpips = CountingLPIPS()
    total, terms, _ = generator_losses(G, None, lpips, groups, 3, 1.0, cfg, AMP)
    assert lpips.sizes == [64, 64]  # target and output of the x4 group's output stage; never its x2 stage
    assert terms["perceptual"].item() > 0 and torch.isfinite(total)


def test_lpips_triplet_reuses_the_target_features():
    cfg, G, groups = _setup(perceptual_weight=1.0, triplet_weight=1.0, triplet_distance="lpips")
    _nonzero_heads(G)
    lpips = CountingLPIPS()
    _, terms, outputs = generator_losses(G, None, lpips, groups, 3, 1.0, cfg, AMP)
    assert lpips.sizes == [64, 64, 64]  # target, output, negative: the target is not run twice
    # only the output stage has LPIPS: anchor = its target, positive = its output,
    # negative = the x4 output interpolated up
    target, out = groups[0][2][2], outputs[0][2]
    d_ap = lpips.distance(lpips.features(target), lpips.features(out))
    d_an = lpips.distance(lpips.features(target), lpips.features(upsample_image(outputs[0][1])))
    loss, active = triplet_loss(d_ap, d_an, cfg.triplet_margin)
    assert terms["triplet"].item() == pytest.approx(loss.item(), rel=1e-5)
    assert terms["triplet_active"].item() == pytest.approx(active.item())


@pytest.mark.parametrize("adv_stages, expected", [("all", [1, 1, 2, 2, 3, 3]), ("top", [3, 3])])
def test_adversarial_stages_pick_what_d_judges(adv_stages, expected):
    cfg, G, groups = _setup(adversarial_weight=0.1, adversarial_stages=adv_stages)
    D = CountingD()
    generator_losses(G, D, None, groups, 3, 1.0, cfg, AMP)
    assert D.stages == expected  # real and fake per judged stage
    D.stages = []
    _, _, outputs = generator_losses(G, D, None, groups, 3, 1.0, cfg, AMP)
    D.stages = []
    discriminator_loss(D, groups, outputs, 3, 1.0, cfg, AMP)
    assert D.stages == expected


def test_dfeat_triplet_only_on_the_judged_stages():
    cfg, G, groups = _setup(adversarial_weight=0.1, adversarial_stages="top", triplet_weight=1.0,
                            triplet_distance="dfeat")
    _nonzero_heads(G)
    D = CountingD()
    _, terms, outputs = generator_losses(G, D, None, groups, 3, 1.0, cfg, AMP)
    assert D.stages == [3, 3, 3]  # real, fake and the negative, all at the top stage
    # the distances are between D's features of the target and of the output / the interpolated x4 output
    lr, target, out = groups[0][1], groups[0][2][2], outputs[0][2]
    with torch.no_grad():
        f_anchor, f_pos, f_neg = (D(img, lr, 3, return_features=True)[1]
                                  for img in (target, out, upsample_image(outputs[0][1])))
    loss, active = triplet_loss(feature_distance(f_anchor, f_pos), feature_distance(f_anchor, f_neg),
                                cfg.triplet_margin)
    assert terms["triplet"].item() == pytest.approx(loss.item(), rel=1e-5) and loss.item() > 0
    assert terms["triplet_active"].item() == pytest.approx(active.item())


def _changed(module, before):
    """The names of the parameters that differ from `before` (a {name: tensor} snapshot)."""
    return {name for name, p in module.named_parameters() if not torch.equal(p, before[name])}


@pytest.mark.parametrize("loss", ["ragan", "wgan_gp"])
def test_train_step_updates_exactly_the_active_parts_of_g_and_d(loss):
    """An x4 batch at stage 2 fading in (alpha 0.5): G's x2 and x4 stages move, its x8 stage does not; D, judging
    the x4 image only, moves exactly the layers that judge a faded-in x4 image: the x4 entry and the x2 one it is
    blended with, the blocks down to the LR, the head."""
    cfg, G, _ = _setup(adversarial_weight=0.1, adversarial_loss=loss, adversarial_stages="top", d_steps=1)
    _nonzero_heads(G)  # else only the to_rgb heads get a gradient
    lr = torch.rand(4, 3, 8, 8)
    groups = [(4, lr, [torch.rand(4, 3, 16, 16), torch.rand(4, 3, 32, 32)])]
    D = ProgressiveDiscriminator(DiscriminatorConfig.tiny())
    opt_G, opt_D = torch.optim.Adam(G.parameters(), 1e-3), torch.optim.Adam(D.parameters(), 1e-3)
    g0 = {n: p.detach().clone() for n, p in G.named_parameters()}
    d0 = {n: p.detach().clone() for n, p in D.named_parameters()}
    terms = train_step(G, D, opt_G, opt_D, None, groups, 2, 0.5, cfg, AMP, 1e-3)
    assert torch.isfinite(terms["total"]) and torch.isfinite(terms["d_loss"])
    assert _changed(G, g0) == {n for n in g0 if not n.startswith("stages.2.")}
    unused = ("from_rgb.0.", "from_rgb.3.", "blocks.2.")  # the LR entry and the x8 path
    assert _changed(D, d0) == {n for n in d0 if not n.startswith(unused)}


def test_top_stage_losses_and_gradients_use_the_faded_output():
    """At stage 3, alpha 0.5: the x8 group's x8 image is base + 0.5 * residual over the interpolated x4 image;
    an x4 group in the same batch runs at alpha 1. The loss and G's gradients match that computed by hand."""
    cfg, G, _ = _setup(pixel_weight=1.0)
    _nonzero_heads(G)
    lr4, lr8 = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    t4 = [torch.rand(2, 3, 16, 16), torch.rand(2, 3, 32, 32)]
    t8 = [torch.rand(2, 3, 16, 16), torch.rand(2, 3, 32, 32), torch.rand(2, 3, 64, 64)]
    groups = [(4, lr4, t4), (8, lr8, t8)]

    def grads(loss):
        G.zero_grad(set_to_none=True)
        loss.backward()
        return {n: p.grad.clone() for n, p in G.named_parameters()}

    total, terms, outputs = generator_losses(G, None, None, groups, 3, 0.5, cfg, AMP)
    got = grads(total)

    from progsr.losses import charbonnier

    x2, x4, x8_full = G(lr8, scale=8, alpha=1.0, return_stages=True)
    base = upsample_image(x4)
    x8 = base + 0.5 * (x8_full - base)
    faded = charbonnier(x2, t8[0]) + charbonnier(x4, t8[1]) + charbonnier(x8, t8[2])
    full = sum(charbonnier(o, t) for o, t in zip(G(lr4, scale=4, alpha=1.0, return_stages=True), t4))
    assert torch.allclose(outputs[1][2], x8, atol=1e-6) and not torch.allclose(x8, x8_full, atol=1e-3)
    assert terms["pixel_x8"].item() == pytest.approx(faded.item(), rel=1e-6)
    assert terms["pixel_x4"].item() == pytest.approx(full.item(), rel=1e-6)
    expected = grads(0.5 * full + 0.5 * faded)  # each group is half the batch
    for name, grad in expected.items():
        assert torch.allclose(got[name], grad, rtol=1e-4, atol=1e-7), name


@pytest.mark.parametrize("distance", ["l1", "lpips", "dfeat"])
def test_triplet_gradient_flows_only_through_the_positive(distance, monkeypatch):
    """The triplet loss gets d(anchor, positive) with a gradient path to G, and d(anchor, negative) without one:
    the anchor is the target and the negative the previous stage's output, interpolated and detached."""
    import progsr.training.steps as steps

    cfg, G, groups = _setup(triplet_weight=1.0, triplet_distance=distance, adversarial_weight=0.1,
                            adversarial_stages="all", perceptual_weight=1.0 if distance == "lpips" else 0.0)
    _nonzero_heads(G)
    D = ProgressiveDiscriminator(DiscriminatorConfig.tiny()).requires_grad_(False)  # frozen, as in G's step
    lpips = CountingLPIPS() if distance == "lpips" else None
    seen = []

    def recording(d_ap, d_an, margin):
        seen.append((d_ap, d_an))
        return triplet_loss(d_ap, d_an, margin)

    monkeypatch.setattr(steps, "triplet_loss", recording)
    _, terms, _ = generator_losses(G, D, lpips, groups, 3, 1.0, cfg, AMP)
    assert len(seen) == {"l1": 3, "lpips": 1, "dfeat": 3}[distance]  # LPIPS: the output stage only
    for d_ap, d_an in seen:
        assert d_ap.requires_grad and d_ap.grad_fn is not None
        assert not d_an.requires_grad and d_an.grad_fn is None
    # the positive's gradient reaches G: the triplet term alone moves the stage heads
    G.zero_grad(set_to_none=True)
    terms["triplet"].backward()
    assert all(s.to_rgb.weight.grad is not None and s.to_rgb.weight.grad.abs().sum() > 0 for s in G.stages)


def test_wgan_gp_critic_loss_includes_the_penalty_and_the_drift():
    cfg, G, groups = _setup(adversarial_weight=0.1, adversarial_loss="wgan_gp")
    D = ProgressiveDiscriminator(DiscriminatorConfig.tiny())
    with torch.no_grad():
        outputs = [[o for o in G(groups[0][1], scale=8, return_stages=True)]]
    plain = dataclasses.replace(cfg, wgan_gp_weight=0.0, wgan_drift=0.0)
    torch.manual_seed(1)
    with_gp = discriminator_loss(D, groups, outputs, 3, 1.0, cfg, AMP)
    torch.manual_seed(1)
    without = discriminator_loss(D, groups, outputs, 3, 1.0, plain, AMP)
    assert with_gp.item() > without.item()  # the penalty and drift are >= 0 and almost never exactly 0
    # with neither, the critic loss is E[D(fake)] - E[D(real)] summed over the judged stages
    expected = sum((D(o, groups[0][1], k + 1).mean() - D(t, groups[0][1], k + 1).mean())
                   for k, (o, t) in enumerate(zip(outputs[0], groups[0][2])))
    assert without.item() == pytest.approx(expected.item(), rel=1e-5)


def test_grid_term_is_on_the_group_output_and_weighted_into_the_total():
    cfg, G, groups = _setup(pixel_weight=1.0, grid_weight=0.0)
    base, terms, _ = generator_losses(G, None, None, groups, 3, 1.0, cfg, AMP)
    assert "grid" not in terms
    cfg = dataclasses.replace(cfg, grid_weight=10.0)
    total, terms, _ = generator_losses(G, None, None, groups, 3, 1.0, cfg, AMP)
    assert terms["grid"].item() > 0
    assert total.item() == pytest.approx(base.item() + 10.0 * terms["grid"].item(), rel=1e-5)


def test_high_frequency_term_is_on_the_group_output_and_weighted_into_the_total():
    from progsr.losses import high_frequency_excess_loss

    cfg, G, groups = _setup(pixel_weight=1.0)
    torch.nn.init.normal_(G.stages[-1].to_rgb.weight, std=0.5)  # a head that prints high-frequency texture
    groups = [(s, lr, [torch.full_like(t, 0.5) for t in targets]) for s, lr, targets in groups]  # flat targets
    base, terms, _ = generator_losses(G, None, None, groups, 3, 1.0, cfg, AMP)
    assert "high_frequency" not in terms
    cfg = dataclasses.replace(cfg, high_frequency_weight=10.0)
    total, terms, outputs = generator_losses(G, None, None, groups, 3, 1.0, cfg, AMP)
    expected = high_frequency_excess_loss(outputs[0][-1], groups[0][2][-1])
    assert terms["high_frequency"].item() == pytest.approx(expected.item(), rel=1e-5) and expected.item() > 0
    assert total.item() == pytest.approx(base.item() + 10.0 * terms["high_frequency"].item(), rel=1e-5)


def test_high_frequency_scales_pick_the_groups_it_penalises():
    from progsr.losses import high_frequency_excess_loss

    cfg, G, groups = _setup(pixel_weight=1.0, high_frequency_weight=10.0)
    torch.nn.init.normal_(G.stages[-1].to_rgb.weight, std=0.5)
    torch.nn.init.normal_(G.stages[0].to_rgb.weight, std=0.5)
    lr = torch.rand(4, 3, 8, 8)
    flat = [torch.full((4, 3, 8 * 2**k, 8 * 2**k), 0.5) for k in (1, 2, 3)]
    groups = [(2, lr, flat[:1]), (8, lr, flat)]
    _, terms, outputs = generator_losses(G, None, None, groups, 3, 1.0, cfg, AMP)
    each = [high_frequency_excess_loss(outs[-1], g[2][-1]).item() for outs, g in zip(outputs, groups)]
    assert min(each) > 0
    assert terms["high_frequency"].item() == pytest.approx(sum(each) / 2, rel=1e-5)  # each group is half the batch
    cfg = dataclasses.replace(cfg, high_frequency_scales=(8,))
    _, terms, _ = generator_losses(G, None, None, groups, 3, 1.0, cfg, AMP)
    assert terms["high_frequency"].item() == pytest.approx(each[1] / 2, rel=1e-5)


@pytest.mark.parametrize("kind", ["charbonnier", "mse"])
def test_pixel_loss_kind_sums_its_distance_over_the_stages(kind):
    from progsr.losses import charbonnier

    cfg, G, groups = _setup(pixel_weight=1.0, pixel_loss=kind)
    total, terms, outputs = generator_losses(G, None, None, groups, 3, 1.0, cfg, AMP)
    dist = charbonnier if kind == "charbonnier" else torch.nn.functional.mse_loss
    expected = sum(dist(o, t) for o, t in zip(outputs[0], groups[0][2]))
    assert terms["pixel_x8"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert total.item() == pytest.approx(expected.item(), rel=1e-5)


def test_unknown_pixel_loss_is_a_config_error():
    from progsr.errors import UserError

    with pytest.raises(UserError, match="pixel_loss must be one of charbonnier, mse"):
        _setup(pixel_loss="l1")
