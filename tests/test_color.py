import numpy as np
import torch
from PIL import Image
from skimage.color import rgb2ycbcr

from progsr.color import rgb_to_grey, rgb_to_y


def test_y_matches_scikit_image_bt601(rng):
    img = rng.random((7, 5, 3)).astype(np.float32)
    expected = rgb2ycbcr(img)[..., 0] / 255.0
    np.testing.assert_allclose(rgb_to_y(img), expected, atol=1e-6)


def test_y_range_is_studio_swing():
    black, white = np.zeros((1, 1, 3)), np.ones((1, 1, 3))
    assert abs(rgb_to_y(black).item() * 255 - 16) < 1e-4
    assert abs(rgb_to_y(white).item() * 255 - 235) < 1e-4


def test_torch_and_numpy_agree(rng):
    img = rng.random((4, 6, 3)).astype(np.float32)
    t = torch.from_numpy(img).permute(2, 0, 1)[None]
    np.testing.assert_allclose(rgb_to_y(t)[0, 0].numpy(), rgb_to_y(img), atol=1e-6)


def test_grey_matches_pillow_convert_l(rng):
    img = (rng.random((9, 11, 3)) * 255).round().astype(np.uint8)
    expected = np.asarray(Image.fromarray(img).convert("L"), dtype=np.float64)
    grey = rgb_to_grey(torch.from_numpy(img).permute(2, 0, 1).double())[0].numpy()
    assert grey.shape == (9, 11)
    np.testing.assert_allclose(grey, expected, atol=0.51)  # Pillow rounds to whole levels
