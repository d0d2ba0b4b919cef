import math

import numpy as np
import pytest
import torch

from progsr.losses import (LPIPSLoss, charbonnier, feature_distance, gradient_penalty, grid_loss, high_frequency_excess_loss,
                           highest_frequency_amplitude, l1_distance, ragan_d_loss, ragan_g_loss, triplet_loss, wgan_d_loss,
                           wgan_g_loss)


def test_charbonnier_hand_computed():
    pred = torch.tensor([0.0, 0.1, -0.3, 0.5]).view(1, 1, 2, 2)
    target = torch.zeros_like(pred)
    eps = 1e-3
    expected = np.mean([math.sqrt(d * d + eps * eps) for d in (0.0, 0.1, 0.3, 0.5)])
    assert charbonnier(pred, target, eps).item() == pytest.approx(expected, rel=1e-6)


def test_charbonnier_gradient_is_finite_and_smooth_at_zero():
    pred = torch.zeros(1, 1, 2, 2, requires_grad=True)
    charbonnier(pred, torch.zeros_like(pred)).backward()
    assert torch.equal(pred.grad, torch.zeros_like(pred))  # L1 would have no defined gradient here


def test_triplet_loss_hand_computed():
    d_ap = torch.tensor([0.5, 0.1, 0.3, 0.25], requires_grad=True)
    d_an = torch.tensor([0.4, 0.5, 0.3, 0.4])
    loss, active = triplet_loss(d_ap, d_an, margin=0.1)
    # hinges: 0.5-0.4+0.1 = 0.2, 0.1-0.5+0.1 = -0.3 -> 0, 0.3-0.3+0.1 = 0.1, 0.25-0.4+0.1 = -0.05 -> 0
    assert loss.item() == pytest.approx((0.2 + 0.1) / 4, abs=1e-7)
    assert active.item() == pytest.approx(0.5)
    loss.backward()
    # only the active triplets pull their positive closer
    assert torch.allclose(d_ap.grad, torch.tensor([0.25, 0.0, 0.25, 0.0]))


def test_triplet_loss_zero_margin_satisfied():
    loss, active = triplet_loss(torch.tensor([0.1, 0.2]), torch.tensor([0.3, 0.4]), margin=0.0)
    assert loss.item() == 0.0 and active.item() == 0.0


def test_ragan_hand_computed_and_symmetric():
    real, fake = torch.tensor([2.0, 4.0]), torch.tensor([0.0, 1.0])
    # D: real - mean(fake) = [1.5, 3.5]; fake - mean(real) = [-3, -2]
    softplus = lambda x: math.log1p(math.exp(x))  # noqa: E731
    expected_d = 0.5 * (np.mean([softplus(-1.5), softplus(-3.5)]) + np.mean([softplus(-3.0), softplus(-2.0)]))
    expected_g = 0.5 * (np.mean([softplus(1.5), softplus(3.5)]) + np.mean([softplus(3.0), softplus(2.0)]))
    assert ragan_d_loss(real, fake).item() == pytest.approx(expected_d, rel=1e-6)
    assert ragan_g_loss(real, fake).item() == pytest.approx(expected_g, rel=1e-6)
    # G's loss is D's with the roles of real and fake swapped
    assert ragan_g_loss(real, fake).item() == pytest.approx(ragan_d_loss(fake, real).item(), rel=1e-6)


def test_ragan_generator_gradient_pushes_fakes_up():
    real = torch.tensor([1.0, 2.0])
    fake = torch.tensor([-1.0, 0.0], requires_grad=True)
    ragan_g_loss(real, fake).backward()
    assert (fake.grad < 0).all()  # descending the loss raises the fake logits


def test_distances_per_sample():
    a = torch.zeros(2, 3, 4, 4)
    b = torch.zeros(2, 3, 4, 4)
    b[1] = 0.5
    assert torch.allclose(l1_distance(a, b), torch.tensor([0.0, 0.5]))
    feats_a = [torch.zeros(2, 5, 2, 2), torch.zeros(2, 7, 1, 1)]
    feats_b = [torch.ones(2, 5, 2, 2), torch.full((2, 7, 1, 1), 3.0)]
    assert torch.allclose(feature_distance(feats_a, feats_b), torch.tensor([2.0, 2.0]))


def test_lpips_loss_matches_reference_values(shared):
    """LPIPSLoss takes [0, 1] images; the shared check values are for the same images in [-1, 1]."""
    from progsr.imageio import read_array

    folder = shared / "data" / "lpips_examples"
    load = lambda name: torch.from_numpy(read_array(folder / f"{name}.png")[..., :3].copy()).permute(2, 0, 1)[None].float() / 255  # noqa: E731
    ref, p0, p1 = load("ex_ref"), load("ex_p0"), load("ex_p1")
    loss = LPIPSLoss("alex", shared / "backbones")
    d = loss(torch.cat([ref, ref]), torch.cat([p0, p1]))
    assert d.shape == (2,)
    assert d[0].item() == pytest.approx(0.7219, abs=1e-3)
    assert d[1].item() == pytest.approx(0.1376, abs=1e-3)
    assert not any(p.requires_grad for p in loss.parameters())
    x = p1.clone().requires_grad_(True)
    loss(ref, x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_wgan_losses_hand_computed():
    real, fake = torch.tensor([1.0, 3.0]), torch.tensor([-1.0, 0.0])
    # E[fake] - E[real] + drift * E[real^2] = -0.5 - 2 + 0.1 * 5
    assert wgan_d_loss(real, fake, drift=0.1).item() == pytest.approx(-2.0)
    assert wgan_g_loss(fake).item() == pytest.approx(0.5)


def test_gradient_penalty_is_zero_for_a_unit_gradient_critic_and_grows_with_the_norm():
    torch.manual_seed(0)
    real, fake = torch.rand(3, 3, 4, 4), torch.rand(3, 3, 4, 4)
    w = torch.randn(3, 4, 4)
    w = w / w.norm()
    unit = lambda x: (x * w).flatten(1).sum(dim=1)  # noqa: E731  gradient w, norm 1 everywhere
    assert gradient_penalty(unit, real, fake).item() == pytest.approx(0.0, abs=1e-10)
    double = lambda x: 2 * unit(x)  # noqa: E731
    assert gradient_penalty(double, real, fake).item() == pytest.approx(1.0, abs=1e-6)
    # the penalty is differentiable with respect to the critic's weights (double backward)
    v = w.clone().requires_grad_(True)
    gradient_penalty(lambda x: 3 * (x * v).flatten(1).sum(dim=1), real, fake).backward()
    assert v.grad is not None and v.grad.abs().sum() > 0


def test_truncated_lpips_is_lpips_layer_by_layer(shared):
    """layers=5 is lpips.LPIPS itself; layers=k sums its first k per-layer terms; features are reusable."""
    torch.manual_seed(0)
    a, b = torch.rand(2, 3, 48, 48), torch.rand(2, 3, 48, 48)
    full = LPIPSLoss("vgg", shared / "backbones")
    with torch.no_grad():
        ref, per_layer = full.model(a * 2 - 1, b * 2 - 1, retPerLayer=True)
        assert torch.allclose(full(a, b), ref.flatten(), rtol=1e-5, atol=1e-6)
        for k in (1, 2, 3):
            cut = LPIPSLoss("vgg", shared / "backbones", layers=k)
            assert len(cut.features(a)) == k
            expected = sum(p.flatten() for p in per_layer[:k])
            assert torch.allclose(cut(a, b), expected, rtol=1e-5, atol=1e-6)
            assert torch.allclose(cut.distance(cut.features(a), cut.features(b)), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError):
        LPIPSLoss("vgg", shared / "backbones", layers=6)


def test_grid_loss_penalises_a_locked_pattern_and_not_unlocked_noise():
    g = torch.Generator().manual_seed(0)
    target = torch.rand(2, 3, 32, 32, generator=g)
    dots = torch.zeros_like(target)
    dots[..., ::2, ::2] = 0.02
    noise = (torch.rand(target.shape, generator=g) - 0.5) * 0.08  # far more energy than the dots
    assert grid_loss(target, target, 2).item() == 0.0
    locked, unlocked = grid_loss(target + dots, target, 2).item(), grid_loss(target + noise, target, 2).item()
    # residual per phase after the 5x5 box mean (9, 6, 6 and 4 of its 25 cells are dots): 0.02 x (16, -6, -6, -4) / 25
    assert locked == pytest.approx(0.02 * (16 + 6 + 6 + 4) / 25 / 4, rel=1e-4)
    assert unlocked < locked / 2


def test_grid_loss_gradient_removes_the_pattern():
    target = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    pred = (target + 0.05 * (torch.arange(16) % 2).view(1, 1, 1, 16)).requires_grad_(True)
    grid_loss(pred, target, 2).backward()
    step = pred.grad[0, 0]
    assert (step[:, 1::2] > 0).all() and (step[:, ::2] < 0).all()  # descent lowers the odd columns, raises the even


def test_highest_frequency_amplitude_of_2px_stripes_is_their_amplitude():
    stripes = 0.5 + 0.03 * (1 - 2 * (torch.arange(20) % 2)).view(1, 1, 1, 20).expand(1, 2, 16, 20)
    amp = highest_frequency_amplitude(stripes, window=5)
    assert amp.shape == (1, 2, 16 - 2 - 4, 20 - 2 - 4)
    assert torch.allclose(amp, torch.full_like(amp, 0.03), atol=1e-6)
    slow = 0.5 + 0.03 * torch.cos(2 * math.pi * torch.arange(40) / 10).view(1, 1, 1, 40).expand(1, 1, 16, 40)
    assert highest_frequency_amplitude(slow, window=5).max() < 0.1 * 0.03  # a 10 px period passes ~1/10


def test_high_frequency_excess_is_one_sided_and_removes_only_the_excess():
    g = torch.Generator().manual_seed(5)
    target = torch.full((1, 3, 24, 24), 0.5)
    target[..., 12:, :] += 0.05 * torch.randn(1, 3, 12, 24, generator=g)  # textured bottom half, flat top half
    stripes = 0.02 * (1 - 2 * (torch.arange(24) % 2)).view(1, 1, 1, 24)
    assert high_frequency_excess_loss(target, target).item() == 0.0
    noise = 0.5 + 0.05 * torch.randn(1, 3, 24, 24, generator=g)
    blurred = torch.nn.functional.avg_pool2d(noise, 3, stride=1, padding=1, count_include_pad=False)
    assert high_frequency_excess_loss(blurred, noise).item() == 0.0  # smoother than the target: free
    pred = (target + stripes).requires_grad_(True)
    loss = high_frequency_excess_loss(pred, target)
    assert loss.item() > 0.005
    loss.backward()
    top = -pred.grad[..., 1:8, 1:-1]  # the flat top half, away from the border the filters cannot see
    assert (top * stripes[..., 1:-1] < 0).all()  # descent moves every striped pixel back towards flat
