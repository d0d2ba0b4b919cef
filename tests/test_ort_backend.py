"""The ONNX Runtime backend: bundled weightless graphs fed from the weights files, blends without torch, agreement
with the torch backend through the Upscaler (tiles and seams included), and the CLI with torch absent."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import random_tiny
from progsr.errors import UserError
from progsr.inference import Upscaler
from progsr.models.config import GeneratorConfig
from progsr.models.generator import ProgressiveGenerator
from progsr.models.io import load_generator, read_weights, save_generator
from progsr.onnx_backend import export_onnx
from progsr.ort_backend import GRAPH_STEM, OrtNetwork, bundled_graphs
from progsr.paths import REPO_ROOT, shipped_weights
from progsr.torch_backend import receptive_radius

EXAMPLE = REPO_ROOT / "progsr" / "examples" / "chelsea.png"


def test_bundled_graphs_run_the_shipped_weights_as_torch_does():
    """The committed weightless graphs are today's architecture: fed the psnr weights they give torch's stages."""
    model, _ = load_generator(shipped_weights("psnr"))
    config, state, _ = read_weights(shipped_weights("psnr"))
    graphs = bundled_graphs(config)
    assert graphs is not None and sorted(graphs) == [2, 4, 8]
    net = OrtNetwork(graphs, config, state, threads=1)
    x = np.random.default_rng(0).random((2, 3, 19, 23), dtype=np.float32)
    with torch.no_grad():
        want = model(torch.from_numpy(x), scale=8, return_stages=True)
    for scale in (2, 4, 8):
        got = net.forward(x, scale, [s for s in (2, 4, 8) if s <= scale])
        for g, w in zip(got, want):
            assert g.shape == tuple(w.shape) and np.abs(g - w.numpy()).max() < 1e-4
    assert net.receptive_radius(8) == receptive_radius(model, 8)
    assert all(os.path.getsize(p) < 100_000 for p in graphs.values())  # the weights are not inside


def test_bundled_graphs_refuse_another_architecture():
    assert bundled_graphs(GeneratorConfig.tiny()) is None


def test_weightless_export_takes_any_weights_of_its_architecture(tmp_path):
    paths = export_onnx(random_tiny(1), tmp_path / GRAPH_STEM, weightless=True)
    graphs = {int(p.stem.rsplit("_x", 1)[1]): p for p in paths}
    other = random_tiny(7)
    state = {k: v.numpy() for k, v in other.state_dict().items()}
    net = OrtNetwork(graphs, other.config, state, threads=1)
    x = np.random.default_rng(1).random((1, 3, 11, 9), dtype=np.float32)
    with torch.no_grad():
        want = other(torch.from_numpy(x), scale=4).numpy()
    assert np.abs(net.forward(x, 4, [4])[0] - want).max() < 1e-5
    assert net._measure_radius(8) == receptive_radius(other, 8)  # a bump's reach equals torch's gradient support
    net.load_state({k: v * 0 for k, v in state.items()})  # new weights: sessions rebuilt with them
    assert np.abs(net.forward(x, 4, [4])[0] - want).max() > 1e-3
    wrong = {k: v[..., :1] if v.ndim == 4 else v for k, v in state.items()}
    with pytest.raises(UserError, match="not a readable ONNX graph for these weights"):
        OrtNetwork(graphs, other.config, wrong, threads=1).forward(x, 2, [2])


@pytest.mark.parametrize("options", [{}, {"realism": 0.5}, {"clean": 0.6}], ids=["psnr", "realism-0.5", "clean-0.6"])
def test_onnxruntime_and_torch_agree_within_one_level_on_a_tiled_image(options):
    """The shipped models (and their blends) through the Upscaler on both backends, tiles and seams included."""
    img = np.asarray(Image.open(EXAMPLE).convert("RGB"))  # 96 x 96
    outputs, tiles = [], []
    for backend in ("onnxruntime", "torch"):
        up = Upscaler(backend=backend, tile=80, threads=1, **options)
        assert up.backend == backend and up.engine.receptive_radius == 20
        outputs.append(up.upscale_pixels(img, scale=4, clean=options.get("clean"),
                                         progress=lambda done, total: tiles.append(total)).astype(int))
    assert set(tiles) == {4}  # 2 x 2 tiles, so the seams are compared too
    assert np.abs(outputs[0] - outputs[1]).max() <= 1


def test_activation_bytes_per_pixel_is_the_largest_activation_four_times():
    """The config's count (both backends' CPU memory plan) equals a hook measurement of the largest activation."""
    for config in (GeneratorConfig(), GeneratorConfig.tiny(), GeneratorConfig(upsampler="nearest_conv")):
        model = ProgressiveGenerator(config).eval()
        largest = [0]
        hooks = [m.register_forward_hook(lambda _m, _i, out: largest.__setitem__(0, max(largest[0], out.numel())))
                 for m in model.modules() if not list(m.children())]
        for scale in config.scales:
            largest[0] = 0
            with torch.no_grad():
                model(torch.rand(1, 3, 16, 16), scale=scale)
            assert config.activation_bytes_per_pixel(scale) == 4 * 4 * largest[0] / 16**2
        for hook in hooks:
            hook.remove()


def test_backend_options_are_checked(tmp_path):
    with pytest.raises(UserError, match="--backend tensorflow: choose one of"):
        Upscaler(backend="tensorflow")
    with pytest.raises(UserError, match="--backend onnxruntime runs on the CPU in fp32"):
        Upscaler(backend="onnxruntime", precision="bf16")
    tiny = save_generator(random_tiny(1), tmp_path / "tiny.safetensors")
    with pytest.raises(UserError, match="no bundled ONNX graph for this architecture"):
        Upscaler(tiny, backend="onnxruntime")
    assert Upscaler(tiny).backend == "torch"  # auto: another architecture runs on torch


BLOCK_TORCH = ("import sys\n"
               "for name in ('torch', 'torchvision', 'lpips', 'kornia', 'skimage', 'scipy', 'cv2', 'onnx'):\n"
               "    sys.modules[name] = None  # import fails as if not installed\n")


def _without_torch(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter where torch and the training stack cannot be imported."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run([sys.executable, "-c", BLOCK_TORCH + code], capture_output=True, text=True, cwd=tmp_path,
                          env=env, timeout=300)


def test_cli_and_upscaler_work_with_torch_absent(tmp_path):
    """The README's main command, a realism blend with clean-up auto, and the Python API, without torch."""
    code = (f"from progsr.cli import main\n"
            f"assert main(['upscale', {str(EXAMPLE)!r}, '--scale', '4', '-o', 'out']) == 0\n"
            f"assert main(['upscale', {str(EXAMPLE)!r}, '--scale', '2', '--realism', '0.5', '-o', 'blend']) == 0\n"
            f"from progsr.inference import Upscaler\n"
            f"import numpy as np\n"
            f"up = Upscaler(tile=80)\n"  # 2 x 2 tiles
            f"out = up.upscale_pixels(np.full((100, 90, 3), 128, np.uint8), scale=2)\n"
            f"assert out.shape == (200, 180, 3) and up.backend == 'onnxruntime'\n"
            f"assert main(['upscale', {str(EXAMPLE)!r}, '--device', 'cuda', '-o', 'gpu']) == 2\n"
            f"assert 'torch' not in [m for m, v in sys.modules.items() if v is not None]\n")
    result = _without_torch(code, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "(cpu, fp32, onnxruntime)" in result.stdout
    assert "--device cuda needs the torch backend, and torch is not installed: pip install 'progsr[torch]'" \
        in result.stderr
    for folder, side in (("out", 384), ("blend", 192)):
        with Image.open(tmp_path / folder / "chelsea.png") as img:
            assert img.size == (side, side)
    assert not (tmp_path / "gpu").exists()


def test_cpu_default_does_not_import_torch_even_where_it_is_installed(tmp_path):
    """Without an NVIDIA driver `auto` never pays for `import torch` (seconds) just to look for a GPU."""
    from progsr.network import _nvidia_driver

    if _nvidia_driver():
        pytest.skip("an NVIDIA driver is present: auto asks torch for the GPU")
    code = (f"import sys\nfrom progsr.cli import main\n"
            f"assert main(['upscale', {str(EXAMPLE)!r}, '--scale', '2', '-o', 'out']) == 0\n"
            f"assert 'torch' not in sys.modules, 'torch was imported'\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, timeout=300)
    assert result.returncode == 0, result.stderr
