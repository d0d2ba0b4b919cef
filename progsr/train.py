"""Training: TrainConfig and presets, the progressive curriculum, the whole loop in one function, resume, DDP.

`progsr train --config x8_psnr --out runs/psnr` (or `torchrun --nproc-per-node N -m progsr.train ...`).
A run folder holds config.json, metrics.jsonl, checkpoints/ckpt_<iteration>.pt and samples/*.png;
`--resume auto` continues from its newest checkpoint. See progsr/TRAINING.md.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import functools
import hashlib
import json
import math
import os
import random
import sys
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from progsr.devices import resolve_device
from progsr.errors import UserError
from progsr.imageio import atomic_output

CHECKPOINT_FORMAT = "progsr.train.v1"
# LPIPS terms skip stage images smaller than this: AlexNet's strided convs and pools need about 32 px.
LPIPS_MIN_SIZE = 32

# ------------------------------------------------------------------------------------------------ config


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run except its folders; saved in each checkpoint so a resume rebuilds it."""

    phase: str = "psnr"  # "psnr" (pixel, optional triplet) or "gan" (adds D and every loss term)
    generator: dict = field(default_factory=dict)  # GeneratorConfig fields; {} is the default x8 generator
    discriminator: dict = field(default_factory=dict)  # DiscriminatorConfig fields (gan phase)
    init: str = ""  # generator weights to start from: a .safetensors file or a training checkpoint (its EMA)

    # data: per-process batch of random HR crops; LR and stage targets by MATLAB bicubic
    crop_size: int = 192  # HR crop in pixels, a multiple of the model's scale (192 -> 24 px LR at x8)
    batch_size: int = 8  # per process; raise it on a GPU (e.g. 32-64, with workers)
    scale_aug: tuple[float, ...] = (1.0, 0.9, 0.8, 0.7, 0.6)  # the HR images are also used shrunk by these factors
    augment: bool = True  # random flips and 90-degree rotations
    workers: int = 0  # DataLoader worker processes (0: make crops in the training process)
    seed: int = 0

    # curriculum: stage 1 alone, then each further stage faded in (alpha 0 -> 1) and then stable
    schedule: str = "progressive"  # "progressive" or "simultaneous" (all stages from iteration 0)
    stage1_iters: int = 10000
    fade_iters: tuple[int, ...] = (3000, 3000)  # one entry per stage after the first
    stable_iters: tuple[int, ...] = (7000, 7000)  # the last stage also runs on until `iters`
    iters: int = 60000

    # optimisation (Adam; the learning rate follows warmup then cosine decay over `iters`)
    lr: float = 2e-4
    lr_min: float = 1e-6
    lr_decay: str = "cosine"  # "cosine" or "constant"
    warmup_iters: int = 500
    betas: tuple[float, ...] = (0.9, 0.99)
    ema_beta: float = 0.999  # EMA of the generator (used for validation and export); 0 copies G
    d_lr: float = 1e-4
    d_betas: tuple[float, ...] = (0.9, 0.99)
    d_steps: int = 1  # discriminator updates per generator update

    # losses: a weight of 0 switches a term off (and nothing for it is built or run)
    pixel_weight: float = 1.0  # Charbonnier (eps 1e-3) on every active stage against its target
    perceptual_weight: float = 0.0  # LPIPS on every active stage
    perceptual_net: str = "vgg"  # "vgg" or "alex"
    backbones: str = ""  # LPIPS backbone file/folder; "" = $PROGSR_BACKBONES, then ../shared/backbones
    adversarial_weight: float = 0.0  # relativistic average GAN
    adversarial_stages: str = "all"  # "all" active stages judged by D (one D, entered at each size) or "top"
    triplet_weight: float = 0.0
    triplet_distance: str = "l1"  # "l1", "lpips" or "dfeat" (discriminator features, gan phase)
    triplet_margin: float = 0.01

    # engineering
    amp: bool = True  # bf16 autocast (CUDA only)
    channels_last: bool = True  # CUDA only
    compile: bool = False  # torch.compile the generator's and discriminator's blocks
    log_every: int = 50
    val_every: int = 1000  # validation PSNR and a sample grid; 0 = only at the end
    ckpt_every: int = 1000  # also at every stage boundary and at the end
    keep_ckpts: int = 3


def _preset_tiny() -> TrainConfig:
    from progsr.models.discriminator import DiscriminatorConfig
    from progsr.models.generator import GeneratorConfig

    return TrainConfig(
        generator=GeneratorConfig.tiny().to_dict(),
        discriminator=DiscriminatorConfig.tiny().to_dict(),
        crop_size=32, batch_size=4, scale_aug=(1.0,), stage1_iters=4, fade_iters=(2, 2), stable_iters=(2, 2), iters=16,
        lr=1e-3, warmup_iters=0, ema_beta=0.9, log_every=4, val_every=8, ckpt_every=8,
    )


def _preset_x8_psnr() -> TrainConfig:
    # The TrainConfig defaults, sized for a few hours on 2 CPU cores (measured on an idle 2-core machine:
    # ~7 it/s in stage 1, ~3 it/s with all stages, so ~5 h for 60k iterations). On a GPU raise batch_size
    # and workers. See progsr/TRAINING.md for the reasoning.
    return TrainConfig()


def _preset_x8_gan() -> TrainConfig:
    # Started from the PSNR weights (--init). ESRGAN-like balance: a small pixel weight, LPIPS-vgg (the lpips
    # authors' choice for optimisation; alex is kept for evaluation) and a small adversarial term. The
    # curriculum is replayed briefly so D grows and fades in with G's stages. D is a quarter of the default
    # width and the crops 128 px: D, not G, dominates the cost (measured on 2 CPU cores: ~20 s/it with the
    # default D at 192 px, ~6 s/it like this).
    return TrainConfig(
        phase="gan", discriminator={"channels": [128, 64, 32, 16], "head_blocks": 1}, crop_size=128,
        stage1_iters=600, fade_iters=(300, 300), stable_iters=(600, 600), iters=6000,
        lr=1e-4, lr_min=1e-6, warmup_iters=0, d_lr=1e-4,
        pixel_weight=1e-2, perceptual_weight=1.0, perceptual_net="vgg", adversarial_weight=1e-2,
        triplet_weight=0.5, triplet_distance="lpips", triplet_margin=0.05, val_every=500, ckpt_every=500,
    )


PRESETS = {"x8_psnr": _preset_x8_psnr, "x8_gan": _preset_x8_gan, "tiny": _preset_tiny}
CHOICES = {
    "phase": ("psnr", "gan"),
    "schedule": ("progressive", "simultaneous"),
    "lr_decay": ("cosine", "constant"),
    "perceptual_net": ("vgg", "alex"),
    "adversarial_stages": ("all", "top"),
    "triplet_distance": ("l1", "lpips", "dfeat"),
}


def _coerce(value, hint, where: str):
    """value (from JSON or --set) as the field's type, or a UserError naming `where`."""
    origin = typing.get_origin(hint)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{where}: expected a list, got {value!r}")
        item = typing.get_args(hint)[0]
        return tuple(_coerce(v, item, where) for v in value)
    if hint is bool:
        if not isinstance(value, bool):
            raise UserError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise UserError(f"{where}: expected a string, got {value!r}")
        return value
    if hint is dict:
        if not isinstance(value, dict):
            raise UserError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    raise TypeError(f"unsupported config type {hint}")


def config_from_dict(data: dict, base: TrainConfig, source: str) -> TrainConfig:
    """`base` with the keys of `data` replaced, type-checked; unknown keys are a UserError naming `source`."""
    hints = typing.get_type_hints(TrainConfig)
    unknown = sorted(set(data) - set(hints))
    if unknown:
        raise UserError(f"{source}: unknown config key(s) {', '.join(unknown)}")
    return dataclasses.replace(base, **{k: _coerce(v, hints[k], f"{source}: {k}") for k, v in data.items()})


def load_config(name: str) -> TrainConfig:
    """A preset by name (x8_psnr, x8_gan, tiny) or a JSON file of TrainConfig keys (optionally "base": preset)."""
    if name in PRESETS:
        return PRESETS[name]()
    path = Path(name).expanduser()
    if not path.is_file():
        raise UserError(f"--config {name}: not a preset ({', '.join(PRESETS)}) and no such JSON file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{path}: not a readable JSON config ({err})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: a config file must hold a JSON object")
    base = data.pop("base", "x8_psnr")
    if base not in PRESETS:
        raise UserError(f"{path}: base must be one of {', '.join(PRESETS)}, got {base!r}")
    return config_from_dict(data, PRESETS[base](), str(path))


def apply_overrides(cfg: TrainConfig, items: list[str]) -> TrainConfig:
    """Apply `--set key=value` items; value is JSON (numbers, true/false, [lists]) or else a plain string.

    `generator.KEY=VALUE` and `discriminator.KEY=VALUE` change one field of the model configs.
    """
    for item in items:
        key, sep, text = item.partition("=")
        if not sep:
            raise UserError(f"--set {item}: expected key=value")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        key = key.strip()
        if "." in key:
            group, sub = key.split(".", 1)
            if group not in ("generator", "discriminator"):
                raise UserError(f"--set {item}: only generator.KEY and discriminator.KEY take a dot")
            cfg = dataclasses.replace(cfg, **{group: {**getattr(cfg, group), sub: value}})
        else:
            cfg = config_from_dict({key: value}, cfg, f"--set {item}")
    return cfg


def build_model_configs(cfg: TrainConfig):
    """(GeneratorConfig, DiscriminatorConfig) from the config's dicts (UserError if they are wrong)."""
    from progsr.models.discriminator import DiscriminatorConfig
    from progsr.models.generator import GeneratorConfig

    return GeneratorConfig.from_dict(cfg.generator), DiscriminatorConfig.from_dict(cfg.discriminator)


def check_config(cfg: TrainConfig) -> None:
    """Reject a config that cannot run, with a one-line UserError, before any work starts."""
    for key, allowed in CHOICES.items():
        if getattr(cfg, key) not in allowed:
            raise UserError(f"config: {key} must be one of {', '.join(allowed)}, got {getattr(cfg, key)!r}")
    g_cfg, d_cfg = build_model_configs(cfg)
    n = g_cfg.num_stages
    if len(cfg.fade_iters) != n - 1 or len(cfg.stable_iters) != n - 1:
        raise UserError(f"config: fade_iters and stable_iters need {n - 1} entries each for a {n}-stage generator")
    if cfg.phase == "gan" and d_cfg.num_stages != n:
        raise UserError(f"config: the discriminator judges {d_cfg.num_stages} stages, the generator has {n}")
    positive = ("batch_size", "crop_size", "iters", "log_every", "ckpt_every", "keep_ckpts", "d_steps")
    for key in positive:
        if getattr(cfg, key) < 1:
            raise UserError(f"config: {key} must be >= 1, got {getattr(cfg, key)}")
    for key in ("stage1_iters", "warmup_iters", "val_every", "workers", "seed"):
        if getattr(cfg, key) < 0:
            raise UserError(f"config: {key} must be >= 0, got {getattr(cfg, key)}")
    if min(cfg.fade_iters + cfg.stable_iters, default=0) < 0:
        raise UserError("config: fade_iters and stable_iters must be >= 0")
    if cfg.crop_size % g_cfg.max_scale:
        raise UserError(f"config: crop_size {cfg.crop_size} must be a multiple of the scale x{g_cfg.max_scale}")
    if not cfg.scale_aug or not all(0 < f <= 1 for f in cfg.scale_aug):
        raise UserError(f"config: scale_aug factors must be in (0, 1], got {cfg.scale_aug}")
    if not 0 <= cfg.ema_beta < 1:
        raise UserError(f"config: ema_beta must be in [0, 1), got {cfg.ema_beta}")
    if len(cfg.betas) != 2 or len(cfg.d_betas) != 2:
        raise UserError("config: betas and d_betas take two numbers")
    if cfg.lr <= 0 or cfg.lr_min < 0 or cfg.d_lr <= 0:
        raise UserError("config: lr and d_lr must be > 0 and lr_min >= 0")
    weights = ("pixel_weight", "perceptual_weight", "adversarial_weight", "triplet_weight")
    if any(getattr(cfg, key) < 0 for key in weights):
        raise UserError(f"config: loss weights must be >= 0 ({', '.join(weights)})")
    if cfg.phase == "psnr" and cfg.adversarial_weight > 0:
        raise UserError("config: adversarial_weight needs phase gan (the psnr phase has no discriminator)")
    if cfg.triplet_weight > 0 and cfg.triplet_distance == "dfeat" and cfg.phase != "gan":
        raise UserError("config: triplet_distance dfeat needs phase gan (it uses the discriminator's features)")
    if not any(getattr(cfg, key) > 0 for key in weights):
        raise UserError("config: every loss weight is 0; nothing to train")


# --------------------------------------------------------------------------------------------- curriculum


def schedule(it: int, cfg: TrainConfig) -> tuple[int, float]:
    """(stage, alpha) for 0-based iteration `it`: the top active stage (1-based) and its fade-in weight.

    Progressive: stage 1 for stage1_iters; then stage k fades in over fade_iters[k-2] iterations, alpha
    rising linearly to reach exactly 1 on the fade's last iteration, then stays for stable_iters[k-2];
    the last stage runs on to the end. Simultaneous: every stage at alpha 1 from the start.
    """
    num_stages = len(cfg.fade_iters) + 1
    if cfg.schedule == "simultaneous":
        return num_stages, 1.0
    start = cfg.stage1_iters
    if it < start:
        return 1, 1.0
    for k, (fade, stable) in enumerate(zip(cfg.fade_iters, cfg.stable_iters), start=2):
        if it < start + fade:
            return k, (it - start + 1) / fade
        start += fade + stable
        if it < start or k == num_stages:
            return k, 1.0
    return num_stages, 1.0


def _active_stages(index: int, cfg: TrainConfig, samples_per_iteration: int) -> int:
    """How many stages train on global sample `index` (it belongs to iteration index // samples_per_iteration)."""
    return schedule(index // samples_per_iteration, cfg)[0]


def stage_boundaries(cfg: TrainConfig) -> set[int]:
    """Iteration counts at which a stage starts or finishes fading in (checkpoints are written there)."""
    if cfg.schedule == "simultaneous":
        return set()
    points, start = {cfg.stage1_iters}, cfg.stage1_iters
    for fade, stable in zip(cfg.fade_iters, cfg.stable_iters):
        points.update({start, start + fade})
        start += fade + stable
    return {p for p in points if 0 < p < cfg.iters}


def learning_rate(it: int, base: float, cfg: TrainConfig) -> float:
    """Linear warmup over warmup_iters, then cosine decay from `base` to lr_min (scaled alike) at `iters`."""
    if it < cfg.warmup_iters:
        return base * (it + 1) / cfg.warmup_iters
    if cfg.lr_decay == "constant":
        return base
    t = (it - cfg.warmup_iters) / max(1, cfg.iters - cfg.warmup_iters)
    low = cfg.lr_min * base / cfg.lr
    return low + (base - low) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


# ------------------------------------------------------------------------------------- checkpoints, state


def checkpoint_dir(out: Path) -> Path:
    return out / "checkpoints"


def list_checkpoints(out: Path) -> list[Path]:
    """The run's checkpoints, oldest first."""
    folder = checkpoint_dir(out)
    return sorted(folder.glob("ckpt_*.pt")) if folder.is_dir() else []


def load_checkpoint(path) -> dict:
    """A training checkpoint (plain tensors and containers only: loaded with weights_only=True)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle/zip errors of several types for a bad file
        raise UserError(f"{path}: not a readable training checkpoint ({str(err).splitlines()[0]})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path}: not a progsr training checkpoint")
    return state


def _save_atomic(obj, path: Path) -> None:
    with atomic_output(path) as tmp:
        torch.save(obj, tmp)


def _rng_state() -> dict:
    np_state = np.random.get_state(legacy=False)
    state = {
        "python": random.getstate(),
        "numpy": {"key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)), "pos": np_state["state"]["pos"],
                  "has_gauss": np_state["has_gauss"], "gauss": np_state["gauss"]},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state({"bit_generator": "MT19937", "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]},
                         "has_gauss": n["has_gauss"], "gauss": n["gauss"]})
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def read_init_weights(path) -> tuple[dict, dict]:
    """(generator config dict, state dict) from a .safetensors file or a training checkpoint's EMA generator."""
    path = Path(path).expanduser()
    if path.suffix == ".safetensors":
        from progsr.models.io import load_generator

        model, _ = load_generator(path)
        return model.config.to_dict(), model.state_dict()
    if path.is_dir():
        found = list_checkpoints(path)
        if not found:
            raise UserError(f"{path}: no checkpoints in this run folder")
        path = found[-1]
    state = load_checkpoint(path)
    return state["config"]["generator"], state["G_ema"]


def weights_digest(*modules) -> str:
    """SHA-256 over the bytes of every parameter and buffer: equal digests mean bit-identical weights."""
    h = hashlib.sha256()
    for module in modules:
        for name, t in module.state_dict().items():
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


# ------------------------------------------------------------------------------------- validation, samples


def make_validation_set(images, scales) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(scale, HR modcropped to it, its MATLAB-bicubic uint8 LR) for each image and scale: the benchmark protocol."""
    from progsr.evaluation import make_lr

    return [(s, *make_lr(hr_full, s)) for s in scales for _, hr_full in images]


@torch.no_grad()
def validate(model, val_set, device, top_scale: int, alpha: float) -> dict:
    """Mean Y-PSNR (crop_border = scale) per scale; the scale being faded in is evaluated at the current alpha."""
    from progsr.evaluation import upscale_u8
    from progsr.metrics import psnr

    per_scale: dict[int, list[float]] = {}
    for s, hr, lr in val_set:
        sr = upscale_u8(model, lr, s, alpha if s == top_scale else 1.0, device)
        per_scale.setdefault(s, []).append(psnr(sr, hr, crop_border=s))
    return {f"val/psnr_x{s}": float(np.mean(v)) for s, v in per_scale.items()}


def bicubic_baseline(val_set) -> dict:
    """The MATLAB-bicubic Y-PSNR of the validation set per scale, for reference in the log."""
    from progsr.metrics import psnr
    from progsr.resize import imresize

    per_scale: dict[int, list[float]] = {}
    for s, hr, lr in val_set:
        per_scale.setdefault(s, []).append(psnr(imresize(lr, scale=s), hr, crop_border=s))
    return {f"val/bicubic_x{s}": float(np.mean(v)) for s, v in per_scale.items()}


@torch.no_grad()
def save_sample_grid(model, images, path: Path, max_scale: int, alpha: float, device, size: int = 192) -> None:
    """PNG grid, one row per validation image (centre crop): LR | bicubic | each stage | HR, all shown at HR size."""
    from progsr.data import to_rgb8
    from progsr.imageio import write_image
    from progsr.resize import imresize

    images = [to_rgb8(hr) for _, hr in images[:3]]
    c = min([size] + [min(hr.shape[:2]) for hr in images]) // max_scale * max_scale  # one crop size for all rows
    if not images or c == 0:
        return
    rows = []
    for hr in images:
        y0, x0 = (hr.shape[0] - c) // 2, (hr.shape[1] - c) // 2
        hr = np.ascontiguousarray(hr[y0 : y0 + c, x0 : x0 + c])
        lr = imresize(hr, scale=1 / max_scale)
        x = torch.from_numpy(lr).permute(2, 0, 1)[None].to(device, torch.float32) / 255.0
        stages = model(x, scale=max_scale, alpha=alpha, return_stages=True)
        panels = [lr, imresize(lr, scale=max_scale)]
        for img in stages:
            u8 = (img[0].float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
            panels.append(u8)
        panels.append(hr)
        rows.append(np.concatenate([np.kron(p, np.ones((c // p.shape[0], c // p.shape[1], 1), dtype=np.uint8))
                                    for p in panels], axis=1))
    write_image(path, np.concatenate(rows, axis=0))


def _parse_record(line: str) -> dict | None:
    """One metrics.jsonl line as a dict, or None for a blank, truncated or otherwise unreadable line."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None


class MetricsLog:
    """metrics.jsonl (one JSON object per line), plus TensorBoard when it is installed; rank 0 only."""

    def __init__(self, out: Path, resume_iteration: int | None):
        self.path = out / "metrics.jsonl"
        if resume_iteration is not None and self.path.exists():
            # Drop what a killed run logged after its last checkpoint, so the log has each iteration once.
            # A line that does not parse was cut short by the kill: it is dropped too.
            kept = [line for line in self.path.read_text(encoding="utf-8").splitlines()
                    if (record := _parse_record(line)) is not None and record.get("it", 0) <= resume_iteration]
            with atomic_output(self.path) as tmp:
                tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        self.file = open(self.path, "a", encoding="utf-8")
        self.tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tensorboard"))
        except ImportError:
            pass

    def write(self, record: dict) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.tb is not None:
            for key, value in record.items():
                if key != "it" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.tb.add_scalar(key, value, record["it"])

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()


# ---------------------------------------------------------------------------------------------- devices


def _sync_grads(params, world_size: int) -> None:
    """Average the gradients over DDP ranks with one all-reduce of a flat buffer (as stylegan2-ada does)."""
    params = [p for p in params if p.grad is not None]
    if world_size == 1 or not params:
        return
    flat = torch.cat([p.grad.flatten() for p in params])
    dist.all_reduce(flat)
    flat /= world_size
    for p, g in zip(params, flat.split([p.numel() for p in params])):
        p.grad.copy_(g.view_as(p.grad))


def _broadcast(module, world_size: int) -> None:
    if world_size > 1:
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=0)


# --------------------------------------------------------------------------------------------- training


def train(cfg: TrainConfig, data_dirs: list[Path], val_dir: Path | None, out: Path, resume: dict | None = None,
          max_minutes: float | None = None, stop_after: int | None = None, device_name: str = "auto") -> dict:
    """Run (or continue) training; returns {"iteration", "stopped_early", "last_val"}. The whole loop is here."""
    from tqdm import tqdm

    from progsr.data import CropDataset, load_images, load_validation, make_loader
    from progsr.losses import (LPIPSLoss, charbonnier, feature_distance, l1_distance, ragan_d_loss, ragan_g_loss,
                               triplet_loss)
    from progsr.models.discriminator import ProgressiveDiscriminator
    from progsr.models.generator import ProgressiveGenerator, upsample_image

    t_start = time.time()
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    is_main = rank == 0
    log = (lambda msg: print(f"progsr train: {msg}", file=sys.stderr, flush=True)) if is_main else (lambda msg: None)

    # ---- config, seeds, models
    check_config(cfg)
    g_cfg, d_cfg = build_model_configs(cfg)
    num_stages, max_scale = g_cfg.num_stages, g_cfg.max_scale
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    G = ProgressiveGenerator(g_cfg).to(device)
    D = ProgressiveDiscriminator(d_cfg).to(device) if cfg.phase == "gan" else None
    if resume is None and cfg.init:
        init_cfg, init_state = read_init_weights(cfg.init)
        if type(g_cfg).from_dict(init_cfg) != g_cfg:
            raise UserError(f"{cfg.init}: its generator config {init_cfg} differs from the run's {cfg.generator}")
        G.load_state_dict(init_state)
    elif resume is None and cfg.phase == "gan":
        log("warning: gan phase without --init; the generator starts from random weights, not from PSNR weights")
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    opt_G = torch.optim.Adam(G.parameters(), lr=cfg.lr, betas=tuple(cfg.betas))
    opt_D = torch.optim.Adam(D.parameters(), lr=cfg.d_lr, betas=tuple(cfg.d_betas)) if D is not None else None

    need_lpips = cfg.perceptual_weight > 0 or (cfg.triplet_weight > 0 and cfg.triplet_distance == "lpips")
    lpips_loss = None
    if need_lpips:
        backbones = cfg.backbones or None
        if backbones is None and not os.environ.get("PROGSR_BACKBONES"):
            from progsr.paths import shared_dir

            shared = shared_dir()
            if shared is not None and (shared / "backbones").is_dir():
                backbones = shared / "backbones"
        lpips_loss = LPIPSLoss(cfg.perceptual_net, backbones, device=device)

    start, train_seconds, history = 0, 0.0, []
    if resume is not None:
        G.load_state_dict(resume["G"])
        G_ema.load_state_dict(resume["G_ema"])
        opt_G.load_state_dict(resume["opt_G"])
        if D is not None:
            D.load_state_dict(resume["D"])
            opt_D.load_state_dict(resume["opt_D"])
        start, train_seconds = resume["iteration"], resume["run"]["train_seconds"]
        history = list(resume["run"].get("validation", []))
    for module in (G, G_ema, D):
        if module is not None:
            _broadcast(module, world_size)

    cuda = device.type == "cuda"
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if cuda and cfg.amp else contextlib.nullcontext()
    memory_format = torch.channels_last if cuda and cfg.channels_last else torch.contiguous_format
    if memory_format == torch.channels_last:
        for module in (G, G_ema, D):
            if module is not None:
                module.to(memory_format=memory_format)
    if cfg.compile:
        # Compile the blocks, not the models: scale, stage and alpha stay plain Python in the eager
        # forward, so a changing alpha never triggers a recompile, and state_dict keys stay unchanged.
        for stage in G.stages:
            stage.compile()
        G.head.compile()
        if D is not None:
            for block in D.blocks:
                block.compile()

    # ---- data (every rank reads the images; the crop stream is sharded by rank)
    images = load_images(data_dirs, cfg.scale_aug, progress=is_main)
    stages_at = functools.partial(_active_stages, cfg=cfg, samples_per_iteration=cfg.batch_size * world_size)
    dataset = CropDataset(images, cfg.crop_size, max_scale, cfg.seed, augment=cfg.augment, stages_at=stages_at)
    loader = make_loader(dataset, start, cfg.iters, cfg.batch_size, rank, world_size, cfg.workers, pin_memory=cuda)
    val_images = load_validation(val_dir) if val_dir is not None else []
    val_set = make_validation_set(val_images, [2**k for k in range(1, num_stages + 1)])

    if resume is not None:
        _set_rng_state(resume["rng"])  # last: nothing above may consume randomness after this

    out.mkdir(parents=True, exist_ok=True)
    metrics = None
    if is_main:
        checkpoint_dir(out).mkdir(exist_ok=True)
        (out / "samples").mkdir(exist_ok=True)
        (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n", encoding="utf-8")
        metrics = MetricsLog(out, start if resume is not None else None)
        n_g = sum(p.numel() for p in G.parameters())
        log(f"{'resuming at iteration ' + str(start) if resume else 'starting'}: phase {cfg.phase}, "
            f"{cfg.schedule} schedule, {cfg.iters} iterations, device {device}, {world_size} process(es), "
            f"generator {n_g / 1e6:.2f} M params, {len(dataset.images)} training images"
            + (f" ({dataset.skipped} smaller than the {cfg.crop_size} px crop skipped)" if dataset.skipped else ""))
        if resume is None and val_set:
            metrics.write({"it": 0, **bicubic_baseline(val_set)})

    run_info = {"data": [str(d) for d in data_dirs], "val": str(val_dir) if val_dir else None,
                "world_size": world_size, "images": len(images)}

    def save_checkpoint(iteration: int) -> None:
        """All ranks check their replicas agree; rank 0 writes the checkpoint and prunes old ones."""
        if world_size > 1:
            digest = weights_digest(*(m for m in (G, G_ema, D) if m is not None))
            digests = [None] * world_size
            dist.all_gather_object(digests, digest)
            if len(set(digests)) != 1:
                raise RuntimeError(f"DDP replicas diverged at iteration {iteration}: {digests}")
            if is_main:
                metrics.write({"it": iteration, "replica_sha256": digests})
        if not is_main:
            return
        state = {
            "format": CHECKPOINT_FORMAT,
            "iteration": iteration,
            "config": dataclasses.asdict(cfg),
            "run": {**run_info, "train_seconds": train_seconds, "validation": history},
            "G": G.state_dict(), "G_ema": G_ema.state_dict(), "opt_G": opt_G.state_dict(),
            "D": D.state_dict() if D is not None else None, "opt_D": opt_D.state_dict() if D is not None else None,
            "rng": _rng_state(),
        }
        _save_atomic(state, checkpoint_dir(out) / f"ckpt_{iteration:08d}.pt")
        for old in list_checkpoints(out)[: -cfg.keep_ckpts]:
            old.unlink(missing_ok=True)

    def run_validation(iteration: int, stage: int, alpha: float) -> None:
        if not is_main or not val_set:
            return
        record = {"it": iteration, "stage": stage, "alpha": alpha, "time": round(train_seconds, 3),
                  **validate(G_ema, val_set, device, 2**stage, alpha)}
        history.append(record)
        metrics.write(record)
        save_sample_grid(G_ema, val_images, out / "samples" / f"it_{iteration:08d}.png", max_scale,
                         alpha if stage == num_stages else 1.0, device)

    # ---- the loop
    boundaries = stage_boundaries(cfg)
    sums: dict[str, tuple] = {}  # loss name -> (running sum, iterations) since the last log line
    window_start, window_iters = train_seconds, 0
    stopped_early = False
    bar = tqdm(total=cfg.iters, initial=start, disable=not is_main, unit="it", dynamic_ncols=True, desc=cfg.phase)
    batches = iter(loader)
    G.train()
    for it in range(start, cfg.iters):
        t_iter = time.time()
        stage, alpha = schedule(it, cfg)
        alphas = [1.0] * (stage - 1) + [alpha]  # only the top stage fades
        lr_img, targets = next(batches)
        lr_img = lr_img.to(device, non_blocking=True).contiguous(memory_format=memory_format)
        targets = [t.to(device, non_blocking=True).contiguous(memory_format=memory_format) for t in targets[:stage]]
        adv_stages = list(range(1, stage + 1)) if cfg.adversarial_stages == "all" else [stage]
        for group in opt_G.param_groups:
            group["lr"] = learning_rate(it, cfg.lr, cfg)

        # Generator step (D frozen: no gradients are computed for its weights).
        if D is not None:
            D.requires_grad_(False)
        with amp:
            outs = G(lr_img, scale=2**stage, alpha=alpha, return_stages=True)
        outs = [o.float() for o in outs]
        terms: dict[str, torch.Tensor] = {}
        total = 0.0
        if cfg.pixel_weight > 0:
            per_stage = [charbonnier(o, t) for o, t in zip(outs, targets)]
            for k, value in enumerate(per_stage, start=1):
                terms[f"pixel_x{2**k}"] = value.detach()
            terms["pixel"] = sum(per_stage)
            total = total + cfg.pixel_weight * terms["pixel"]
        # Computed once per stage and shared by the terms that need them: per-sample LPIPS(target, output),
        # and D's logits and features for the target (no grad) and for the output.
        lpips_d, judged = {}, {}
        with amp:
            if lpips_loss is not None:
                for k in range(stage):
                    if min(outs[k].shape[-2:]) >= LPIPS_MIN_SIZE:
                        lpips_d[k] = lpips_loss(targets[k], outs[k]).float()
            d_stages = {s - 1 for s in adv_stages} if cfg.adversarial_weight > 0 else set()
            if cfg.triplet_weight > 0 and cfg.triplet_distance == "dfeat":
                d_stages |= set(range(stage))
            for k in sorted(d_stages):
                with torch.no_grad():
                    real, f_real = D(targets[k], lr_img, k + 1, alphas[k], return_features=True)
                fake, f_fake = D(outs[k], lr_img, k + 1, alphas[k], return_features=True)
                judged[k] = (real.float(), [f.float() for f in f_real], fake.float(), [f.float() for f in f_fake])
        if cfg.perceptual_weight > 0:
            terms["perceptual"] = sum(d.mean() for d in lpips_d.values()) + torch.zeros((), device=device)
            total = total + cfg.perceptual_weight * terms["perceptual"]
        if cfg.triplet_weight > 0:
            losses, active = [], []
            previous = [lr_img] + outs[:-1]
            for k in range(stage):
                anchor, positive = targets[k], outs[k]
                negative = upsample_image(previous[k].detach()).float()
                if cfg.triplet_distance == "l1":
                    d_ap, d_an = l1_distance(anchor, positive), l1_distance(anchor, negative)
                elif cfg.triplet_distance == "lpips":
                    if k not in lpips_d:
                        continue  # too small for LPIPS
                    d_ap = lpips_d[k]
                    with amp, torch.no_grad():
                        d_an = lpips_loss(anchor, negative).float()
                else:  # dfeat: distances between D's feature maps
                    _, f_anchor, _, f_positive = judged[k]
                    with amp, torch.no_grad():
                        f_negative = D(negative, lr_img, k + 1, alphas[k], return_features=True)[1]
                    d_ap = feature_distance(f_anchor, f_positive)
                    d_an = feature_distance(f_anchor, [f.float() for f in f_negative])
                loss_k, active_k = triplet_loss(d_ap, d_an, cfg.triplet_margin)
                losses.append(loss_k)
                active.append(active_k)
            if losses:
                terms["triplet"] = sum(losses)
                terms["triplet_active"] = torch.stack(active).mean()
                total = total + cfg.triplet_weight * terms["triplet"]
        if cfg.adversarial_weight > 0:
            terms["adversarial"] = sum(ragan_g_loss(judged[s - 1][0], judged[s - 1][2]) for s in adv_stages)
            total = total + cfg.adversarial_weight * terms["adversarial"]
        terms["total"] = total
        opt_G.zero_grad(set_to_none=True)
        total.backward()
        _sync_grads(G.parameters(), world_size)
        opt_G.step()

        # Discriminator steps on the same batch (real targets vs the detached outputs).
        if D is not None and cfg.adversarial_weight > 0:
            D.requires_grad_(True)
            for group in opt_D.param_groups:
                group["lr"] = learning_rate(it, cfg.d_lr, cfg)
            for _ in range(cfg.d_steps):
                d_loss = 0.0
                with amp:
                    for k in adv_stages:
                        real = D(targets[k - 1], lr_img, k, alphas[k - 1])
                        fake = D(outs[k - 1].detach(), lr_img, k, alphas[k - 1])
                        d_loss = d_loss + ragan_d_loss(real.float(), fake.float())
                opt_D.zero_grad(set_to_none=True)
                d_loss.backward()
                _sync_grads(D.parameters(), world_size)
                opt_D.step()
            terms["d_loss"] = d_loss

        # EMA of the generator; beta ramps up early so the average does not drag in the random init.
        beta = min(cfg.ema_beta, (1 + it) / (10 + it))
        with torch.no_grad():
            torch._foreach_lerp_(list(G_ema.parameters()), list(G.parameters()), 1.0 - beta)
            for b_ema, b in zip(G_ema.buffers(), G.buffers()):
                b_ema.copy_(b)

        for key, value in terms.items():  # summed on the device: no sync until the next log line
            value = value.detach().float()
            total_so_far, count = sums.get(key, (0.0, 0))
            sums[key] = (total_so_far + value, count + 1)
        done = it + 1
        bar.update(1)

        # ---- bookkeeping: log, stop, validate, checkpoint
        log_now = done % cfg.log_every == 0 or done == cfg.iters
        if log_now:
            means = {f"loss/{k}": float(v) / n for k, (v, n) in sums.items()}  # waits for the device
        train_seconds += time.time() - t_iter  # training time: everything but validation and checkpoints
        window_iters += 1
        if log_now:
            if not all(math.isfinite(v) for v in means.values()):
                raise RuntimeError(f"training diverged at iteration {done}: {means}")
            it_s = window_iters / max(1e-9, train_seconds - window_start)
            if is_main:
                metrics.write({"it": done, "stage": stage, "alpha": round(alpha, 6),
                               "lr": opt_G.param_groups[0]["lr"], **means, "it_s": round(it_s, 4),
                               "time": round(train_seconds, 3)})
                bar.set_postfix(stage=stage, alpha=f"{alpha:.2f}", loss=f"{means['loss/total']:.4g}", refresh=False)
            sums, window_start, window_iters = {}, train_seconds, 0
        stop = stop_after is not None and done - start >= stop_after
        if max_minutes is not None:
            if world_size == 1:
                stop = stop or time.time() - t_start > max_minutes * 60
            elif log_now:  # ranks must agree on a time-based stop: decided by rank 0, at log lines only
                flag = torch.tensor([float(time.time() - t_start > max_minutes * 60)], device=device)
                dist.broadcast(flag, src=0)
                stop = stop or bool(flag.item())
        last = done == cfg.iters
        if (cfg.val_every and done % cfg.val_every == 0) or last or stop:
            run_validation(done, stage, alpha)
        if done % cfg.ckpt_every == 0 or done in boundaries or last or stop:
            save_checkpoint(done)
        if stop and not last:
            stopped_early = True
            log(f"stopping at iteration {done} of {cfg.iters} (checkpoint written); continue with --resume auto")
            break
    bar.close()
    if start >= cfg.iters:
        log(f"nothing to do: the run is already at iteration {start} of {cfg.iters} (raise --iters to continue)")
    if metrics is not None:
        metrics.close()
    if world_size > 1:
        dist.barrier()
    return {"iteration": start if start >= cfg.iters else done, "stopped_early": stopped_early,
            "last_val": history[-1] if history else None}


# --------------------------------------------------------------------------------------------------- CLI


def _default_data() -> list[Path]:
    from progsr.paths import shared_dir

    shared = shared_dir()
    if shared is None:
        return []
    root = shared / "data" / "train"
    return [p for p in (root / "T91", root / "BSD200") if p.is_dir()]


def _default_val() -> Path | None:
    from progsr.paths import shared_dir

    shared = shared_dir()
    path = shared / "data" / "test" / "Set5" if shared is not None else None
    return path if path is not None and path.is_dir() else None


def _parse_args(argv):
    p = argparse.ArgumentParser(prog="progsr train", description="Train a progressive SR generator (psnr or gan phase).")
    p.add_argument("--config", default=None, help=f"a preset ({', '.join(PRESETS)}) or a JSON file (default x8_psnr)")
    p.add_argument("--data", nargs="+", type=Path, default=None, metavar="DIR",
                   help="HR training image folders (default: ../shared/data/train/T91 and BSD200)")
    p.add_argument("--val", default=None, metavar="DIR", help="validation HR folder (default: ../shared Set5), or 'none'")
    p.add_argument("--out", type=Path, required=True, metavar="RUN_DIR", help="run folder (checkpoints, logs, samples)")
    p.add_argument("--resume", default=None, metavar="auto|CKPT",
                   help="'auto': continue from the newest checkpoint in RUN_DIR if there is one; or a checkpoint file")
    p.add_argument("--init", default=None, metavar="WEIGHTS",
                   help="start the generator from these weights (.safetensors, checkpoint or run folder)")
    p.add_argument("--iters", type=int, default=None, help="total iterations (overrides the config)")
    p.add_argument("--max-minutes", type=float, default=None, help="stop cleanly with a checkpoint after this long")
    p.add_argument("--stop-after", type=int, default=None, metavar="N",
                   help="stop cleanly with a checkpoint after N iterations of this invocation")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (JSON value), e.g. --set batch_size=32 --set generator.blocks=[8,2,1]")
    return p.parse_args(argv)


def main(argv=None) -> int:
    """`progsr train`: resolve the config and folders (all checks before any work), then train."""
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    out = args.out.expanduser()
    resume = None
    if args.resume == "auto":
        found = list_checkpoints(out)
        resume = load_checkpoint(found[-1]) if found else None
    elif args.resume is not None:
        resume = load_checkpoint(args.resume)
    elif list_checkpoints(out):
        raise UserError(f"{out}: already holds checkpoints; pass --resume auto to continue it, or another --out")

    if resume is not None:
        cfg = config_from_dict(resume["config"], TrainConfig(), "checkpoint config")
        if args.config and int(os.environ.get("RANK", "0")) == 0:
            print(f"progsr train: resuming {out}: using the config saved in its checkpoint (--config ignored; "
                  f"--set and --iters still apply)", file=sys.stderr)
        if args.init:
            raise UserError("--init starts a new run; it cannot be combined with a resumed checkpoint")
    else:
        cfg = load_config(args.config or "x8_psnr")
        if args.init:
            cfg = dataclasses.replace(cfg, init=args.init)
    cfg = apply_overrides(cfg, args.set)
    if args.iters is not None:
        cfg = dataclasses.replace(cfg, iters=args.iters)
    if cfg.init and resume is None:  # the init weights decide the architecture
        from progsr.models.generator import GeneratorConfig

        init_cfg, _ = read_init_weights(cfg.init)
        if any(item.strip().startswith("generator") for item in args.set) and \
                GeneratorConfig.from_dict(init_cfg) != GeneratorConfig.from_dict(cfg.generator):
            raise UserError(f"--set generator...: conflicts with the architecture of the --init weights {cfg.init}")
        cfg = dataclasses.replace(cfg, generator=init_cfg)
    check_config(cfg)

    if args.data:
        data_dirs = [d.expanduser() for d in args.data]
    elif resume is not None:
        data_dirs = [Path(d) for d in resume["run"]["data"]]
    else:
        data_dirs = _default_data()
        if not data_dirs:
            raise UserError("no training data: pass --data DIR [DIR ...] (../shared/data/train is not available)")
    for d in data_dirs:
        if not d.is_dir():
            raise UserError(f"{d}: training data folder not found")
    if args.val is not None:
        val_dir = None if args.val.lower() == "none" else Path(args.val).expanduser()
    elif resume is not None:
        val_dir = Path(resume["run"]["val"]) if resume["run"]["val"] else None
    else:
        val_dir = _default_val()
    if val_dir is not None and not val_dir.is_dir():
        raise UserError(f"{val_dir}: validation folder not found")
    for name in ("max_minutes", "stop_after"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise UserError(f"--{name.replace('_', '-')} must be > 0, got {value}")

    result = train(cfg, data_dirs, val_dir, out, resume, args.max_minutes, args.stop_after, args.device)
    if int(os.environ.get("RANK", "0")) == 0:
        val = result["last_val"]
        summary = ", ".join(f"{k.split('/')[-1]} {v:.2f} dB" for k, v in (val or {}).items() if k.startswith("val/"))
        print(f"progsr train: {out} at iteration {result['iteration']}" + (f"; {summary}" if summary else ""),
              file=sys.stderr)
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":  # torchrun --nproc-per-node N -m progsr.train ...
    try:
        sys.exit(main())
    except UserError as err:
        print(f"progsr train: error: {err}", file=sys.stderr)
        sys.exit(2)
