"""The web app in a real browser: Playwright driving Debian's Chromium (`apt-get install chromium`).

Skipped when /usr/bin/chromium is absent; .ci/install_browser.sh installs it in CI. Screenshots go to
test-artifacts/ (gitignored) for a human to look at.
"""

import io
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.filterwarnings("ignore::Warning:gradio.queueing"),  # gradio's own pandas deprecation noise
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's Chromium at /usr/bin/chromium"),
]
sync_api = pytest.importorskip("playwright.sync_api")

from progsr import webapp  # noqa: E402
from progsr.models import ProgressiveGenerator, save_generator, tiny_config  # noqa: E402


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    """The app on a free localhost port with a tiny random model (to_rgb heads non-zero, so stages differ)."""
    root = tmp_path_factory.mktemp("browser_app")
    torch.manual_seed(3)
    model = ProgressiveGenerator(tiny_config())
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.05)
    weights = save_generator(model, root / "tiny.safetensors")
    config = webapp.AppConfig(model=str(weights), device="cpu", temp_dir=str(root / "requests"))
    demo = webapp.launch(webapp.build_app(config), host="127.0.0.1", port=0, block=False)
    yield demo.local_url
    demo.close()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, app_url):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(60_000)
    page.goto(app_url)
    yield page
    page.close()


def upload(page, path: Path) -> None:
    page.locator("#input-image input[type=file]").set_input_files(str(path))


def test_upscale_4x_shows_the_result_at_4x(page, tmp_path):
    from skimage import data

    src = tmp_path / "cat.png"
    Image.fromarray(data.chelsea()).resize((40, 30), Image.Resampling.BICUBIC).save(src)
    upload(page, src)
    page.locator("#info").get_by_text("cat.png: 40x30").wait_for()  # the upload check ran
    page.locator("#scale").get_by_label("4x").check()
    page.locator("#run").click()

    info = page.locator("#info").get_by_text("→")
    info.wait_for()
    assert re.fullmatch(r"40x30 → 160x120, [\d.]+ s, cpu, fp32, (torch|onnxruntime)", info.inner_text().strip())
    images = page.locator("#compare img")
    assert images.count() == 2
    for k in range(2):  # before (bicubic) and after (progsr), both decoded by the browser at full size
        images.nth(k).wait_for()
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=images.nth(k).element_handle())
        assert images.nth(k).evaluate("img => [img.naturalWidth, img.naturalHeight]") == [160, 120]

    link = page.locator("#download a").first
    assert link.get_attribute("href").endswith("/cat_x4.png")
    response = page.request.get(link.get_attribute("href"))
    assert response.ok
    downloaded = Image.open(io.BytesIO(response.body()))
    assert downloaded.format == "PNG" and downloaded.size == (160, 120)
    after = images.nth(1).get_attribute("src")
    np.testing.assert_array_equal(np.asarray(downloaded.convert("RGB")),
                                  np.asarray(Image.open(io.BytesIO(page.request.get(after).body())).convert("RGB")))

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "app_upscale_4x.png"), full_page=True)


@pytest.mark.parametrize("content, message", [
    (b"Dear diary, this is not a picture.", "notes.png: not an image file"),
    (None, "notes.png: corrupt or truncated image"),
], ids=["text", "truncated-png"])
def test_non_image_upload_shows_a_readable_error(page, tmp_path, request, content, message):
    if content is None:  # the first 100 bytes of a real PNG: a valid header, then nothing
        rng = np.random.default_rng(0)
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(buf, format="PNG")
        content = buf.getvalue()[:100]
    bad = tmp_path / "notes.png"
    bad.write_bytes(content)
    upload(page, bad)
    toast = page.locator(".toast-body").filter(has_text=message)
    toast.wait_for()
    assert "Traceback" not in toast.inner_text() and "/tmp" not in toast.inner_text()
    page.locator("#info").get_by_text("Cannot use this file").wait_for()  # and it stays in the info line
    page.wait_for_function("() => !document.querySelector('#input-image img')")  # no broken-image placeholder
    page.wait_for_timeout(1000)
    assert page.locator(".toast-body").filter(has_text=message).count() == 1  # said once
    page.locator("#run").click()  # the bad file is gone: Upscale asks for an image
    page.locator(".toast-body").filter(has_text="No image yet").wait_for()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"app_error_{request.node.callspec.id}.png"))


def test_a_bundled_example_upscales(page):
    examples = webapp.example_images()
    if not examples:
        pytest.skip("no bundled examples in progsr/examples")
    width, height = Image.open(examples[0]).size
    page.locator("#examples .gallery-item").first.click()  # the first example thumbnail
    page.locator("#input-image img").wait_for()  # loaded into the input
    page.locator("#info").get_by_text(f"{width}x{height}. Pick a scale").wait_for()  # described like an upload
    page.locator("#scale").get_by_label("2x").check()
    page.locator("#run").click()
    info = page.locator("#info").get_by_text("→")
    info.wait_for()
    assert info.inner_text().startswith(f"{width}x{height} → {2 * width}x{2 * height}, ")
    link = page.locator("#download a").first
    assert link.get_attribute("href").endswith(f"/{examples[0].stem}_x2.png")


def test_advanced_jpg_output_warns_that_alpha_is_dropped(page, tmp_path):
    src = tmp_path / "logo.png"
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (20, 30, 4), dtype=np.uint8), "RGBA").save(src)
    upload(page, src)
    page.locator("#info").get_by_text("logo.png: 30x20").wait_for()
    page.get_by_text("Advanced").click()
    page.locator("#format").get_by_label("jpg").check()
    page.locator("#run").click()
    page.locator(".toast-body").filter(has_text="logo_x4.jpg: JPEG has no alpha channel").wait_for()
    page.locator("#info").get_by_text("30x20 → 120x80").wait_for()
    page.locator("#info").get_by_text("JPEG has no alpha channel").wait_for()  # also in the info line, which stays
    response = page.request.get(page.locator("#download a").first.get_attribute("href"))
    downloaded = Image.open(io.BytesIO(response.body()))
    assert downloaded.format == "JPEG" and downloaded.mode == "RGB" and downloaded.size == (120, 80)


def _app_with_shipped(tmp_path_factory, models: dict):
    """The app on a free port, serving a weights folder of tiny random models {name: seed}; yields (url, paths)."""
    root = tmp_path_factory.mktemp("shipped_app")
    paths = {}
    for name, seed in models.items():
        torch.manual_seed(seed)
        model = ProgressiveGenerator(tiny_config())
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0.0, 0.05)
        paths[name] = save_generator(model, root / "weights" / f"progsr_x8_{name}.safetensors")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PROGSR_WEIGHTS", str(root / "weights"))
        config = webapp.AppConfig(model="psnr", device="cpu", temp_dir=str(root / "requests"))
        demo = webapp.launch(webapp.build_app(config), host="127.0.0.1", port=0, block=False)
        yield demo.local_url, paths
        demo.close()


@pytest.fixture(scope="module")
def realism_app(tmp_path_factory):
    """The app with a shipped pair of tiny psnr and gan weights (different seeds), so the slider is live."""
    yield from _app_with_shipped(tmp_path_factory, {"psnr": 4, "gan": 5})


def test_realism_slider_switches_between_the_psnr_and_gan_models(browser, realism_app, tmp_path):
    from progsr.inference import Upscaler

    url, paths = realism_app
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(60_000)
    page.goto(url)
    rng = np.random.default_rng(2)
    src = tmp_path / "noise.png"
    Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(src)
    upload(page, src)
    page.locator("#info").get_by_text("noise.png: 32x24").wait_for()
    page.locator("#scale").get_by_label("2x").check()
    number = page.locator("#realism input[type=number]")
    assert number.is_enabled() and page.locator("#realism input[type=range]").is_enabled()
    pixels = np.asarray(Image.open(src))
    results = {}
    for r in ("1", "0", "0.5"):
        number.fill(r)
        number.press("Enter")
        if results:  # a result is on screen, made with the previous realism: it is marked as stale
            page.locator("#info").get_by_text("Settings changed").wait_for()
        # the run sends the slider's value: click only once the number box has reached the slider
        page.wait_for_function("([sel, v]) => parseFloat(document.querySelector(sel).value) === v",
                               arg=["#realism input[type=range]", float(r)])
        page.locator("#run").click()
        page.locator("#info").get_by_text(f"realism {r}").wait_for()
        response = page.request.get(page.locator("#download a").first.get_attribute("href"))
        results[r] = np.asarray(Image.open(io.BytesIO(response.body())).convert("RGB"))
    np.testing.assert_array_equal(results["1"], Upscaler(model=str(paths["gan"]), device="cpu").upscale(pixels, 2))
    np.testing.assert_array_equal(results["0"], Upscaler(model=str(paths["psnr"]), device="cpu").upscale(pixels, 2))
    assert not np.array_equal(results["0.5"], results["0"]) and not np.array_equal(results["0.5"], results["1"])
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "app_realism.png"), full_page=True)
    page.close()


@pytest.fixture(scope="module")
def cleanup_app(tmp_path_factory):
    """The app with tiny psnr, gan, real and realgan weights, so the clean-up control is live."""
    yield from _app_with_shipped(tmp_path_factory, {"psnr": 4, "gan": 5, "real": 6, "realgan": 7})


def test_clean_up_auto_reads_the_jpeg_and_a_chosen_strength_overrides_it(browser, cleanup_app, tmp_path):
    from skimage import data as skdata

    from progsr.inference import Upscaler

    url, paths = cleanup_app
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(60_000)
    page.goto(url)
    src = tmp_path / "web.jpg"
    Image.fromarray(skdata.chelsea()[100:164, 150:230]).save(src, quality=30)
    upload(page, src)
    page.locator("#info").get_by_text("web.jpg: 80x64").wait_for()
    page.locator("#scale").get_by_label("2x").check()
    assert page.locator("#clean input").input_value() == "auto"  # the default
    pixels = np.asarray(Image.open(src))
    results = {}
    for choice, expected_info in (("auto", "clean-up auto 1 (JPEG quality 30"), ("0", "clean-up 0")):
        if choice != "auto":
            page.locator("#clean input").click()
            page.get_by_role("option", name=choice, exact=True).click()
        page.locator("#run").click()
        page.locator("#info").get_by_text(expected_info).wait_for()
        response = page.request.get(page.locator("#download a").first.get_attribute("href"))
        results[choice] = np.asarray(Image.open(io.BytesIO(response.body())).convert("RGB"))
    np.testing.assert_array_equal(results["auto"], Upscaler(model=str(paths["real"]), device="cpu").upscale(pixels, 2))
    np.testing.assert_array_equal(results["0"], Upscaler(model=str(paths["psnr"]), device="cpu").upscale(pixels, 2))
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "app_cleanup.png"), full_page=True)
    page.close()
