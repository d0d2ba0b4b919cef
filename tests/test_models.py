"""The progressive generator and discriminator: shapes, fade-in, growing, gradients, weights files."""

import json
import struct

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from progsr.errors import UserError
from progsr.models import (
    DiscriminatorConfig,
    GeneratorConfig,
    ProgressiveDiscriminator,
    ProgressiveGenerator,
    load_generator,
    save_generator,
    tiny_config,
)
from progsr.models.generator import upsample_image

SMALL = GeneratorConfig(channels=(8, 6, 4, 4), blocks=(2, 1, 1))


def trained_like(config=SMALL, seed=1) -> ProgressiveGenerator:
    """A generator whose to_rgb heads are non-zero (at init they are zero, which would hide fade-in bugs)."""
    torch.manual_seed(seed)
    g = ProgressiveGenerator(config)
    with torch.no_grad():
        for stage in g.stages:
            stage.to_rgb.weight.normal_(0, 0.1)
            stage.to_rgb.bias.normal_(0, 0.1)
    return g


def lr_batch(n=2, h=5, w=7):
    return torch.rand(n, 3, h, w)


# --------------------------------------------------------------------------------------------- generator


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_output_shape_per_scale(scale):
    g = ProgressiveGenerator(GeneratorConfig())  # the release config, on a tiny input
    lr = lr_batch(2, 6, 5)
    with torch.no_grad():
        out = g(lr, scale=scale)
        stages = g(lr, scale=scale, return_stages=True)
    assert out.shape == (2, 3, 6 * scale, 5 * scale)
    assert [tuple(s.shape) for s in stages] == [(2, 3, 6 * f, 5 * f) for f in (2, 4, 8) if f <= scale]


@pytest.mark.parametrize("size", [(1, 1), (1, 4), (3, 1), (7, 9), (2, 3)])
def test_odd_and_one_pixel_inputs_batch_of_one(size):
    g = trained_like()
    lr = torch.rand(1, 3, *size)
    with torch.no_grad():
        out = g(lr, scale=8, alpha=0.5)
    assert out.shape == (1, 3, size[0] * 8, size[1] * 8)
    assert torch.isfinite(out).all()


def test_untrained_generator_is_bicubic():
    """Zero-initialised to_rgb heads: every stage starts as interpolation of the previous one."""
    g = ProgressiveGenerator(GeneratorConfig())
    lr = lr_batch()
    with torch.no_grad():
        x2, x4, x8 = g(lr, scale=8, return_stages=True)
    assert torch.equal(x2, upsample_image(lr))
    assert torch.equal(x4, upsample_image(x2))
    assert torch.equal(x8, upsample_image(x4))


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_alpha_zero_is_the_interpolated_previous_stage(scale):
    g = trained_like()
    lr = lr_batch()
    with torch.no_grad():
        faded = g(lr, scale=scale, alpha=0.0)
        previous = lr if scale == 2 else g(lr, scale=scale // 2)
    assert torch.equal(faded, upsample_image(previous))
    assert not torch.equal(faded, g(lr, scale=scale).detach())  # the stage's residual is not zero here


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_alpha_one_is_the_new_stage_alone(scale):
    g = trained_like()
    lr = lr_batch()
    with torch.no_grad():
        out = g(lr, scale=scale, alpha=1.0)
        # The stage computed by hand from its modules: interpolation plus the to_rgb residual.
        feat, img = g.head(lr - 0.5), lr
        for stage in g.stages[: {2: 1, 4: 2, 8: 3}[scale]]:
            feat = stage.upsample(stage.block(feat))
            img = upsample_image(img) + stage.to_rgb(feat)
    assert torch.equal(out, img)


def test_upsample_image_is_torchs_bicubic():
    """The four-phase conv equals F.interpolate's bicubic (align_corners=False), borders and odd sizes included."""
    for shape in ((1, 3, 1, 1), (2, 3, 5, 7), (1, 3, 37, 29), (1, 1, 8, 8)):
        img = torch.rand(*shape, generator=torch.Generator().manual_seed(0))
        want = F.interpolate(img, scale_factor=2, mode="bicubic", align_corners=False)
        assert (upsample_image(img) - want).abs().max() < 1e-6


def test_alpha_blends_linearly_between_the_two_ends():
    g = trained_like()
    lr = lr_batch()
    with torch.no_grad():
        new, old, mid = (g(lr, scale=8, alpha=a) for a in (1.0, 0.0, 0.3))
    torch.testing.assert_close(mid, 0.3 * new + 0.7 * old, rtol=0, atol=1e-6)


def test_tensor_alpha_gives_the_same_images_as_float_alpha():
    g = trained_like()
    lr = lr_batch()
    with torch.no_grad():
        for a in (0.0, 0.3, 1.0):
            assert torch.equal(g(lr, scale=4, alpha=torch.tensor(a)), g(lr, scale=4, alpha=a))
    d = ProgressiveDiscriminator(DiscriminatorConfig.tiny())
    img = torch.rand(2, 3, 20, 28)
    with torch.no_grad():
        for a in (0.0, 0.3, 1.0):
            assert torch.equal(d(img, lr, 2, torch.tensor(a)), d(img, lr, 2, a))


def test_fade_only_touches_the_last_stage():
    g = trained_like()
    lr = lr_batch()
    with torch.no_grad():
        full = g(lr, scale=8, return_stages=True)
        faded = g(lr, scale=8, alpha=0.25, return_stages=True)
    assert torch.equal(full[0], faded[0]) and torch.equal(full[1], faded[1])
    assert not torch.equal(full[2], faded[2])


def test_scale4_matches_first_two_stages_of_scale8():
    g = trained_like()
    lr = lr_batch()
    with torch.no_grad():
        x8_stages = g(lr, scale=8, return_stages=True)
        x4_stages = g(lr, scale=4, return_stages=True)
        x2 = g(lr, scale=2)
    assert len(x4_stages) == 2
    assert torch.equal(x4_stages[0], x8_stages[0]) and torch.equal(x4_stages[1], x8_stages[1])
    assert torch.equal(x2, x8_stages[0])


def test_bad_scale_is_a_user_error():
    g = ProgressiveGenerator(tiny_config())
    with pytest.raises(UserError, match="scale"):
        g(lr_batch(), scale=3)
    two_stage = ProgressiveGenerator(GeneratorConfig(channels=(8, 4, 4), blocks=(1, 1)))
    with pytest.raises(UserError, match="scale"):
        two_stage(lr_batch(), scale=8)
    with pytest.raises(ValueError, match="alpha"):
        g(lr_batch(), scale=2, alpha=1.5)


def _snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_growing_never_reinitialises_earlier_stages():
    """Train stage 1 alone, then grow to x4 and x8 with fade-in: nothing but the optimizer changes weights."""
    g = trained_like()
    lr, hr2 = lr_batch(), torch.rand(2, 3, 10, 14)
    opt = torch.optim.Adam(g.parameters(), lr=1e-2)
    before = _snapshot(g)
    for _ in range(3):  # stage-1 training (x2 only)
        opt.zero_grad()
        (g(lr, scale=2) - hr2).abs().mean().backward()
        opt.step()
    after = _snapshot(g)
    later = [k for k in before if k.startswith(("stages.1.", "stages.2."))]
    assert later and all(torch.equal(before[k], after[k]) for k in later)  # inactive stages: untouched
    trained = [k for k in before if k.startswith(("head.", "stages.0."))]
    assert all(not torch.equal(before[k], after[k]) for k in trained)  # every active weight moved

    with torch.no_grad():
        x2_trained = g(lr, scale=2)
        for scale in (4, 8):  # grow, in train mode, through the whole fade-in
            for alpha in (0.0, 0.5, 1.0):
                stages = g(lr, scale=scale, alpha=alpha, return_stages=True)
                assert torch.equal(stages[0], x2_trained)
    assert all(torch.equal(v, after[k]) for k, v in g.state_dict().items())
    assert list(g.state_dict()) == list(after)


def test_stage_weights_keep_their_names_when_the_model_grows():
    """An x2 model's weights load into the x8 model of the same widths: same keys, same shapes, same x2."""
    small = trained_like(GeneratorConfig(channels=(8, 6), blocks=(2,)), seed=3)
    big = trained_like(SMALL, seed=4)
    result = big.load_state_dict(small.state_dict(), strict=False)
    assert result.unexpected_keys == []
    assert result.missing_keys and all(k.startswith(("stages.1.", "stages.2.")) for k in result.missing_keys)
    lr = lr_batch()
    with torch.no_grad():
        assert torch.equal(big(lr, scale=2), small(lr, scale=2))


def _trained_tiny(blocks):
    torch.manual_seed(0)
    model = ProgressiveGenerator(GeneratorConfig(channels=(8, 4, 4, 4), blocks=blocks))
    with torch.no_grad():  # every to_rgb starts at zero: give the weights values that show in the output
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def test_grown_generator_computes_what_the_smaller_one_did():
    small = _trained_tiny((1, 1, 1))
    big = ProgressiveGenerator(GeneratorConfig(channels=(8, 4, 4, 4), blocks=(2, 1, 3)))
    big.load_grown(small.state_dict(), small.config)
    x = torch.rand(1, 3, 8, 8)
    for scale in (2, 4, 8):
        assert torch.allclose(big(x, scale=scale), small(x, scale=scale), atol=1e-6)
    assert not torch.equal(big.stages[0].block.blocks[1].conv1.conv.weight, torch.zeros(8, 8, 3, 3))  # trainable


@pytest.mark.parametrize("small_blocks, blocks, channels", [
    ((1, 1, 1), (1, 1, 0), (8, 4, 4, 4)),  # fewer blocks
    ((1, 1, 1), (1, 1, 1), (8, 8, 4, 4)),  # another width
    ((1, 1, 0), (1, 1, 1), (8, 4, 4, 4)),  # a stage without blocks has no closing conv to keep as an identity
])
def test_growing_only_adds_blocks_to_stages_that_have_some(small_blocks, blocks, channels):
    small = _trained_tiny(small_blocks)
    big = ProgressiveGenerator(GeneratorConfig(channels=channels, blocks=blocks))
    with pytest.raises(UserError):
        big.load_grown(small.state_dict(), small.config)


def test_gradients_reach_only_active_stages():
    g = trained_like()
    g(lr_batch(), scale=4, alpha=0.5).square().mean().backward()
    for name, p in g.named_parameters():
        if name.startswith("stages.2."):
            assert p.grad is None, name
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_subpixel_upsampler_starts_without_checkerboard():
    """ICNR init: the four sub-pixel outputs of each 2x2 cell are equal until training separates them."""
    up = ProgressiveGenerator(SMALL).stages[0].upsample
    out = up(torch.rand(1, 8, 5, 6))
    cell = out[..., 0::2, 0::2]
    assert cell.abs().sum() > 0
    for i, j in [(0, 1), (1, 0), (1, 1)]:
        assert torch.equal(out[..., i::2, j::2], cell)


def test_tiny_config_is_small_and_runs():
    g = ProgressiveGenerator(tiny_config())
    assert sum(p.numel() for p in g.parameters()) < 10_000
    assert g(lr_batch(1, 3, 3), scale=8).shape == (1, 3, 24, 24)


def test_default_generator_has_the_parameters_of_its_layer_shapes():
    """The default config's count from its layers' shapes (3x3 convs with biases): the head, then per stage the
    residual blocks' two convs, the closing conv (stages with blocks), the sub-pixel conv (4x the out width)
    and the to_rgb head. Any extra, missing or resized layer changes it."""
    cfg = GeneratorConfig()
    assert (cfg.channels, cfg.blocks, cfg.upsampler) == ((64, 16, 16, 16), (6, 2, 2), "pixelshuffle")

    def conv(c_in, c_out):
        return c_out * c_in * 9 + c_out

    expected = conv(3, cfg.channels[0])
    for k, blocks in enumerate(cfg.blocks):
        c, c_next = cfg.channels[k], cfg.channels[k + 1]
        expected += 2 * blocks * conv(c, c) + (conv(c, c) if blocks else 0) + conv(c, 4 * c_next) + conv(c_next, 3)
    assert expected == 561_849  # the shipped architecture's count (progsr/models/generator.py's docstring)
    g = ProgressiveGenerator(cfg)
    assert sum(p.numel() for p in g.parameters()) == expected


def test_bad_generator_configs_are_user_errors():
    with pytest.raises(UserError, match="channels"):
        GeneratorConfig(channels=(64, 16), blocks=(6, 2))
    with pytest.raises(UserError, match="blocks must be"):
        GeneratorConfig(blocks=[6, 2, 2])
    with pytest.raises(UserError, match="upsampler"):
        GeneratorConfig(upsampler="deconv")
    with pytest.raises(UserError, match="unknown config key"):
        GeneratorConfig.from_dict({"chanels": [64, 16, 16, 16]})


@pytest.mark.parametrize("upsampler", ["pixelshuffle", "nearest_conv"])
@pytest.mark.parametrize("activation", ["relu", "lrelu", "silu"])
def test_every_upsampler_and_activation_runs(upsampler, activation):
    g = ProgressiveGenerator(GeneratorConfig(channels=(8, 4, 4), blocks=(1, 1), upsampler=upsampler,
                                             activation=activation))
    out = g(lr_batch(1, 3, 2), scale=4, alpha=0.5)
    assert out.shape == (1, 3, 12, 8)
    out.square().sum().backward()  # in-place activations must not break autograd
    assert g.head.conv.weight.grad is not None


# ------------------------------------------------------------------------------------------ discriminator

TINY_D = DiscriminatorConfig.tiny()


def _d_groups(stage, alpha, num_stages=3):
    """Parameter-name prefixes D must use (active) and must not (inactive) at this stage and alpha."""
    active = [f"from_rgb.{stage}.", "head_blocks.", "head_conv.", "head_fc.", "out."]
    active += [f"blocks.{r - 1}." for r in range(1, stage + 1)]
    inactive = [f"blocks.{r - 1}." for r in range(stage + 1, num_stages + 1)]
    inactive += [f"from_rgb.{r}." for r in range(num_stages + 1) if r not in (stage, stage - 1)]
    (active if alpha < 1 else inactive).append(f"from_rgb.{stage - 1}.")
    return active, inactive


@pytest.mark.parametrize("stage", [1, 2, 3])
@pytest.mark.parametrize("alpha", [0.0, 0.4, 1.0])
def test_discriminator_accepts_every_stage_and_alpha(stage, alpha):
    d = ProgressiveDiscriminator(TINY_D)
    lr = lr_batch(3, 3, 5)
    img = torch.rand(3, 3, 3 * 2**stage, 5 * 2**stage, requires_grad=True)
    logits, feats = d(img, lr, stage, alpha, return_features=True)
    assert logits.shape == (3,) and torch.isfinite(logits).all()
    assert len(feats) == stage + 1 and all(f.shape[0] == 3 for f in feats)
    logits.sum().backward()
    assert img.grad is not None and img.grad.abs().sum() > 0
    active, inactive = _d_groups(stage, alpha)
    new_path = (f"from_rgb.{stage}.", f"blocks.{stage - 1}.")
    for name, p in d.named_parameters():
        if name.startswith(tuple(inactive)):
            assert p.grad is None, name
        elif alpha == 0.0 and name.startswith(new_path):  # computed, but weighted by alpha = 0
            assert p.grad is not None and p.grad.abs().sum() == 0, name
        else:
            assert name.startswith(tuple(active)), name
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_discriminator_gradients_reach_the_new_block_while_fading():
    d = ProgressiveDiscriminator(TINY_D)
    lr = lr_batch(2, 2, 3)
    d(torch.rand(2, 3, 16, 24), lr, 3, 0.5).sum().backward()
    for name, p in d.named_parameters():
        if name.startswith(("blocks.2.", "from_rgb.3.", "from_rgb.2.")):
            assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("stage", [2, 3])
def test_discriminator_alpha_zero_is_the_smaller_discriminator(stage):
    d = ProgressiveDiscriminator(TINY_D).eval()
    lr = lr_batch(2, 3, 4)
    img = torch.rand(2, 3, 3 * 2**stage, 4 * 2**stage)
    with torch.no_grad():
        faded = d(img, lr, stage, alpha=0.0)
        smaller = d(F.avg_pool2d(img, 2), lr, stage - 1, alpha=1.0)
    assert torch.equal(faded, smaller)


@pytest.mark.parametrize("config", [
    DiscriminatorConfig(channels=(16, 8, 8, 4), head_blocks=1, spectral_norm=True, equalized_lr=False),
    DiscriminatorConfig(channels=(16, 8, 8, 4), head_blocks=0, equalized_lr=False, minibatch_std=False,
                        residual=False, conditional=False),
    DiscriminatorConfig(),
], ids=["spectral_norm", "all_off", "default"])
def test_discriminator_switches_and_odd_sizes(config):
    d = ProgressiveDiscriminator(config)
    for n, (h, w) in [(1, (1, 1)), (5, (3, 1)), (2, (2, 3))]:
        lr = torch.rand(n, 3, h, w)
        for stage in (1, 3):
            out = d(torch.rand(n, 3, h * 2**stage, w * 2**stage), lr, stage, 0.5)
            assert out.shape == (n,) and torch.isfinite(out).all()


@pytest.mark.parametrize("spectral_norm", [False, True])
def test_wgan_gp_penalty_trains_exactly_the_judging_layers_of_d(spectral_norm):
    """The WGAN-GP critic loss (progsr.training.steps) differentiates D's input gradient again: the penalty's
    gradient reaches every weight on the path of a faded-in x4 image, none off it, and never the fake images."""
    from progsr.losses import gradient_penalty

    d = ProgressiveDiscriminator(DiscriminatorConfig(channels=(16, 8, 8, 4), head_blocks=1, spectral_norm=spectral_norm,
                                                     equalized_lr=not spectral_norm))
    lr = lr_batch(2, 2, 3)
    real, fake = torch.rand(2, 3, 8, 12), torch.rand(2, 3, 8, 12, requires_grad=True)
    gradient_penalty(lambda x: d(x, lr, 2, 0.5), real, fake).backward()
    assert fake.grad is None  # the penalty is D's alone: G's output is detached
    # Weights, not biases: a bias does not change a piecewise-linear net's input gradient. With spectral norm
    # a weight's leaf is parametrizations.weight.original.
    weights = {name: p for name, p in d.named_parameters() if p.ndim >= 2}
    off_path = ("from_rgb.0.", "from_rgb.3.", "blocks.2.")  # the LR entry and the x8 path
    got = {name for name, p in weights.items() if p.grad is not None and p.grad.abs().sum() > 0}
    assert got == {name for name in weights if not name.startswith(off_path)}
    assert all(weights[name].grad is None for name in weights if name.startswith(off_path))


def test_discriminator_is_conditional_on_the_lr_input():
    d = ProgressiveDiscriminator(TINY_D)
    img = torch.rand(2, 3, 8, 8)
    assert not torch.equal(d(img, torch.rand(2, 3, 2, 2), 2), d(img, torch.rand(2, 3, 2, 2), 2))


def test_discriminator_rejects_mismatched_sizes():
    d = ProgressiveDiscriminator(TINY_D)
    with pytest.raises(ValueError, match="size"):
        d(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 3, 3), 2)
    with pytest.raises(ValueError, match="stage"):
        d(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 2, 2), 4)


def test_minibatch_std_channel_sees_batch_variety():
    d = ProgressiveDiscriminator(TINY_D)
    x = torch.rand(4, 3, 4, 4)
    same = d.mbstd(x[:1].repeat(4, 1, 1, 1))
    mixed = d.mbstd(x)
    assert same.shape == (4, 4, 4, 4)
    assert torch.all(same[:, -1] < 1e-3) and torch.all(mixed[:, -1] > 1e-2)


# ------------------------------------------------------------------------------------------- weights files


def test_config_json_round_trip_keeps_tuples():
    for cfg in (GeneratorConfig(), tiny_config(), SMALL):
        back = GeneratorConfig.from_json(cfg.to_json())
        assert back == cfg and isinstance(back.channels, tuple) and isinstance(back.blocks, tuple)
    d = DiscriminatorConfig(channels=(32, 16, 8), spectral_norm=True, equalized_lr=False)
    assert DiscriminatorConfig.from_json(d.to_json()) == d


def test_saved_generator_loads_as_an_identical_model(tmp_path):
    g = trained_like(SMALL, seed=7)
    path = save_generator(g, tmp_path / "g.safetensors", metadata={"iterations": 1200, "data": "291"})
    loaded, meta = load_generator(path)
    assert loaded.config == g.config and isinstance(loaded.config.channels, tuple)
    assert meta == {"iterations": "1200", "data": "291"}
    assert not loaded.training
    sd, sd2 = g.state_dict(), loaded.state_dict()
    assert list(sd) == list(sd2) and all(torch.equal(sd[k], sd2[k]) for k in sd)
    lr = lr_batch()
    with torch.no_grad():
        assert torch.equal(g(lr, scale=8, return_stages=True)[2], loaded(lr, scale=8))
    assert [p.name for p in tmp_path.iterdir()] == ["g.safetensors"]  # no temp files left behind


def test_save_overwrites_atomically(tmp_path):
    path = tmp_path / "g.safetensors"
    save_generator(trained_like(seed=1), path)
    g2 = trained_like(seed=2)
    save_generator(g2, path)
    loaded, _ = load_generator(path)
    assert torch.equal(loaded.stages[0].to_rgb.weight, g2.stages[0].to_rgb.weight)
    assert [p.name for p in tmp_path.iterdir()] == ["g.safetensors"]


def test_load_errors_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="no such"):
        load_generator(tmp_path / "missing.safetensors")

    text = tmp_path / "notes.safetensors"
    text.write_text("these are not weights")
    with pytest.raises(UserError, match="notes.safetensors"):
        load_generator(text)

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign), metadata={"framework": "other"})
    with pytest.raises(UserError, match="not a progsr generator"):
        load_generator(foreign)

    # The header's config says one shape, the tensors are another.
    mismatch = tmp_path / "mismatch.safetensors"
    save_generator(ProgressiveGenerator(tiny_config()), mismatch)
    _rewrite_header_config(mismatch, SMALL.to_json())
    with pytest.raises(UserError, match="do not match"):
        load_generator(mismatch)

    bad_key = tmp_path / "badkey.safetensors"
    save_generator(ProgressiveGenerator(tiny_config()), bad_key)
    _rewrite_header_config(bad_key, json.dumps({"chanels": [8, 4, 4, 4]}))
    with pytest.raises(UserError, match="badkey.safetensors.*unknown config key"):
        load_generator(bad_key)


def _rewrite_header_config(path, config_json):
    """Replace the "config" entry of a safetensors header in place (keeps the tensors)."""
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    header["__metadata__"]["config"] = config_json
    new = json.dumps(header).encode()
    new += b" " * (-len(new) % 8)
    path.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n:])


def test_saved_weights_get_the_umask_mode(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        path = save_generator(trained_like(seed=1), tmp_path / "g.safetensors")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600


def test_failed_save_leaves_neither_the_file_nor_a_temp(tmp_path, monkeypatch):
    import os

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(UserError, match="No space left"):
        save_generator(trained_like(seed=1), tmp_path / "g.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_spectral_norm_with_equalized_lr_is_refused():
    from progsr.training.config import apply_overrides, check_config, load_config

    with pytest.raises(UserError, match="spectral_norm and equalized_lr cannot be combined"):
        DiscriminatorConfig(spectral_norm=True)
    with pytest.raises(UserError, match="spectral_norm and equalized_lr"):
        check_config(apply_overrides(load_config("x8_gan"), ["discriminator.spectral_norm=true"]))
    assert DiscriminatorConfig(spectral_norm=True, equalized_lr=False).spectral_norm
