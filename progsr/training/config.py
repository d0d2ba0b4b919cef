"""TrainConfig, its presets and checks, and the pure schedules: curriculum (stage, alpha), batch mix, learning rate."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from progsr.config import replace_checked
from progsr.errors import UserError
from progsr.scales import scale_of, scales_up_to


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run except its folders; saved in each checkpoint so a resume rebuilds it."""

    phase: str = "psnr"  # "psnr" (pixel, optional triplet) or "gan" (adds D and every loss term)
    generator: dict = field(default_factory=dict)  # GeneratorConfig fields; {} is the default x8 generator
    discriminator: dict = field(default_factory=dict)  # DiscriminatorConfig fields (gan phase)
    init: str = ""  # generator weights to start from: a .safetensors file or a training checkpoint (its EMA)

    # data: aligned crops of whole-image MATLAB-bicubic pyramids (HR, HR/2, HR/4, HR/8), made once and cached
    batch_size: int = 8  # per process, all scales together
    scale_mix: tuple[float, ...] = (0.25, 0.25, 0.5)  # share of each batch with native x2, x4, x8 pairs (LR = HR/s)
    lr_crop: tuple[int, ...] = (48, 32, 24)  # LR crop in pixels for x2, x4, x8 samples (HR crops 96, 128, 192)
    scale_aug: tuple[float, ...] = (1.0, 0.9, 0.8, 0.7, 0.6)  # the HR images are also used shrunk by these factors
    augment: bool = True  # random flips and 90-degree rotations
    degradation: dict = field(default_factory=dict)  # {} = clean LR (HR/s); DegradationConfig fields = LR degraded
    # on the fly from the HR crop by progsr.degradations ({"order": "second_order"}: Real-ESRGAN's published ranges)
    seed: int = 0

    # curriculum: stage 1 alone, then each further stage faded in (alpha 0 -> 1) and then stable
    schedule: str = "progressive"  # "progressive" or "simultaneous" (all stages from iteration 0)
    stage1_iters: int = 10000
    fade_iters: tuple[int, ...] = (3000, 3000)  # one entry per stage after the first
    stable_iters: tuple[int, ...] = (7000, 7000)  # the last stage also runs on until `iters`
    iters: int = 60000  # where the run stops; changing it never changes the learning-rate schedule

    # optimisation: Adam; warmup, then cosine decay to lr_min at lr_decay_iters (or over a --budget-minutes chunk)
    lr: float = 2e-4
    lr_min: float = 1e-6
    lr_decay: str = "cosine"  # "cosine" or "constant"
    lr_decay_iters: int = 60000  # the cosine's horizon, fixed when the run starts
    warmup_iters: int = 500
    betas: tuple[float, ...] = (0.9, 0.99)
    ema_half_life: float = 5540.0  # EMA of G (validated, exported): half-life in samples, 0 copies G (see ema_beta)
    d_lr: float = 1e-4
    d_betas: tuple[float, ...] = (0.9, 0.99)
    d_steps: int = 1  # discriminator updates per generator update
    d_warmup_iters: int = 0  # gan phase: the first iterations train D alone, G frozen (BasicSR's net_d_init_iters)

    # losses: a weight of 0 switches a term off (and nothing for it is built or run)
    pixel_weight: float = 1.0  # pixel loss on every active stage against its target
    pixel_loss: str = "charbonnier"  # "charbonnier" (eps 1e-3, LapSRN's) or "mse" (what PSNR measures)
    perceptual_weight: float = 0.0  # perceptual loss on each batch group's output stage
    perceptual_net: str = "vgg"  # LPIPS "vgg" or "alex" (ESRGAN's VGG conv5 features lost their A/B: TRAINING.md)
    perceptual_layers: int = 5  # backbone slices LPIPS uses: 5 is LPIPS itself, fewer a cheaper truncated LPIPS
    backbones: str = ""  # LPIPS backbone file/folder; "" = $PROGSR_BACKBONES, then ../shared/backbones
    adversarial_weight: float = 0.0
    adversarial_loss: str = "ragan"  # "ragan" (relativistic average) or "wgan_gp" (ProGAN's: WGAN-GP + drift)
    adversarial_stages: str = "all"  # "all" active stages judged by D (one D, entered at each size) or "top"
    wgan_gp_weight: float = 10.0  # gradient-penalty weight (wgan_gp)
    wgan_drift: float = 1e-3  # ProGAN's drift term on the critic's real scores (wgan_gp)
    triplet_weight: float = 0.0
    triplet_distance: str = "l1"  # "l1", "lpips" or "dfeat" (discriminator features, gan phase)
    triplet_margin: float = 0.01
    grid_weight: float = 0.0  # penalty on the output's pattern locked to the upsampling grid (losses.grid_loss)
    high_frequency_weight: float = 0.0  # the output's 2-4 px energy beyond the target's (losses.high_frequency_excess_loss)
    high_frequency_scales: tuple[int, ...] = ()  # the batch groups (by scale) whose output it penalises; () = all

    # engineering
    amp: bool = True  # bf16 autocast (CUDA only)
    channels_last: bool = True  # CUDA only
    compile: bool = False  # torch.compile the generator's and discriminator's blocks
    log_every: int = 50
    val_every: int = 1000  # validation PSNR and a sample grid; 0 = only at the end
    val_lpips: bool = False  # also validate LPIPS-alex (needs its backbone, as the benchmark does)
    ckpt_every: int = 1000  # also at every stage boundary, at the end and when stopped
    ckpt_every_minutes: float = 0.0  # also every this many minutes of training (0 = off; the GPU run uses 1.5)
    keep_ckpts: int = 3


def _preset_tiny() -> TrainConfig:
    from progsr.models.discriminator import DiscriminatorConfig
    from progsr.models.config import GeneratorConfig

    return TrainConfig(
        generator=GeneratorConfig.tiny().to_dict(), discriminator=DiscriminatorConfig.tiny().to_dict(),
        batch_size=4, lr_crop=(8, 6, 4), scale_aug=(1.0,), stage1_iters=4, fade_iters=(2, 2), stable_iters=(2, 2),
        iters=16, lr_decay_iters=16, lr=1e-3, warmup_iters=0, ema_half_life=26.0, log_every=4, val_every=8, ckpt_every=8,
    )


def _preset_x8_psnr() -> TrainConfig:
    # The TrainConfig defaults, sized for chunks of a few hours on 2 CPU cores. See progsr/TRAINING.md.
    return TrainConfig()


def _preset_x8_gan() -> TrainConfig:
    # Started from the PSNR weights (--init), so every stage trains from the first iteration (no fade is
    # replayed on trained weights) after 100 iterations that train D alone on the frozen G. ESRGAN-like
    # balance of pixel, perceptual and a small adversarial term, sized to about 2 CPU-s per iteration on
    # one thread (benchmarks/train_cost.py; the table is in progsr/TRAINING.md): LPIPS-vgg truncated to
    # its first two slices and only on each group's output stage, D at (64, 32, 16, 8) judging only that
    # stage, the triplet on D's features of it, and 96 px HR crops at x4 and x8. The grid penalty keeps
    # the truncated LPIPS from printing a dot grid (experiments/HISTORY.md, chunk 2); the 2-4 px texture
    # penalty on the x8 samples keeps it from painting a mesh on smooth skin (chunks 8-9).
    return TrainConfig(
        phase="gan", discriminator={"channels": [64, 32, 16, 8], "head_blocks": 1}, lr_crop=(32, 24, 12),
        schedule="simultaneous", iters=4000, lr_decay_iters=4000, d_warmup_iters=100,
        lr=1e-4, lr_min=1e-6, warmup_iters=0, d_lr=1e-4, ema_half_life=1100.0,
        pixel_weight=0.1, perceptual_weight=1.0, perceptual_net="vgg", perceptual_layers=2,
        adversarial_weight=5e-3, adversarial_stages="top",
        triplet_weight=0.5, triplet_distance="dfeat", triplet_margin=0.05, grid_weight=10.0,
        high_frequency_weight=10.0, high_frequency_scales=(8,), val_every=150, val_lpips=True, ckpt_every=150,
    )


def _preset_x8_real() -> TrainConfig:
    # Fine-tuned from the shipped PSNR weights (--init) on LR degraded on the fly with Real-ESRGAN's
    # published second-order pipeline; the targets stay the clean pyramid levels. All stages train from
    # the first iteration (no fade replay on trained weights). Validation runs on the "medium" level.
    return TrainConfig(
        degradation={"order": "second_order"}, schedule="simultaneous", scale_mix=(0.25, 0.35, 0.4),
        iters=100000, lr_decay_iters=100000, lr=1e-4, warmup_iters=100, val_every=500, ckpt_every=500,
    )


PRESETS = {"x8_psnr": _preset_x8_psnr, "x8_gan": _preset_x8_gan, "x8_real": _preset_x8_real, "tiny": _preset_tiny}
CHOICES = {
    "phase": ("psnr", "gan"),
    "pixel_loss": ("charbonnier", "mse"),
    "schedule": ("progressive", "simultaneous"),
    "lr_decay": ("cosine", "constant"),
    "perceptual_net": ("vgg", "alex"),
    "adversarial_stages": ("all", "top"),
    "adversarial_loss": ("ragan", "wgan_gp"),
    "triplet_distance": ("l1", "lpips", "dfeat"),
}


def migrate(data: dict, source: str) -> dict:
    """A saved config (a checkpoint's, a JSON file's) in today's fields: ema_beta (per iteration) becomes
    ema_half_life (samples), and the removed terms' fields go when they were off; else a UserError."""
    data = dict(data)
    if "ema_beta" in data:
        beta, batch = float(data.pop("ema_beta")), int(data.get("batch_size", TrainConfig.batch_size))
        data.setdefault("ema_half_life", batch * math.log(0.5) / math.log(beta) if beta > 0 else 0.0)
    # LDL's term, the 2 px band and perceptual loss on every stage lost their A/Bs (experiments/HISTORY.md).
    # An old config may keep such a field where it changed nothing: at today's behaviour, or with its term off.
    removed = {"artifact_weight": (0.0, None), "high_frequency_band": ("2-4px", None),
               "perceptual_stages": ("top", "perceptual_weight")}
    for key, (today, term) in removed.items():
        if data.pop(key, today) != today and (term is None or data.get(term, 0)):
            raise UserError(f"{source}: uses {key}, a term removed from the recipe (progsr/TRAINING.md)")
    return data


def config_from_dict(data: dict, base: TrainConfig, source: str) -> TrainConfig:
    """`base` with the keys of `data` (migrated) replaced, type-checked; unknown keys are a UserError naming `source`."""
    return replace_checked(base, migrate(data, source), source)


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
    import dataclasses

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
    from progsr.models.config import GeneratorConfig

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
    if len(cfg.scale_mix) != n or len(cfg.lr_crop) != n:
        raise UserError(f"config: scale_mix and lr_crop need {n} entries each (x2 ... x{scale_of(n)}) for this generator")
    if min(cfg.scale_mix) < 0 or cfg.scale_mix[-1] <= 0:
        raise UserError(f"config: scale_mix shares must be >= 0, and the top scale's > 0, got {list(cfg.scale_mix)}")
    if not set(cfg.high_frequency_scales) <= set(scales_up_to(n)):
        raise UserError(f"config: high_frequency_scales must be among the generator's scales "
                        f"({', '.join(map(str, scales_up_to(n)))}), got {list(cfg.high_frequency_scales)}")
    if cfg.degradation:
        from progsr.degradations import DegradationConfig

        DegradationConfig.from_dict(cfg.degradation)
    if min(cfg.lr_crop) < 2:
        raise UserError(f"config: lr_crop sizes must be >= 2 px, got {list(cfg.lr_crop)}")
    if cfg.phase == "gan" and d_cfg.num_stages != n:
        raise UserError(f"config: the discriminator judges {d_cfg.num_stages} stages, the generator has {n}")
    for key in ("batch_size", "iters", "log_every", "ckpt_every", "keep_ckpts", "d_steps", "lr_decay_iters"):
        if getattr(cfg, key) < 1:
            raise UserError(f"config: {key} must be >= 1, got {getattr(cfg, key)}")
    for key in ("stage1_iters", "warmup_iters", "val_every", "seed", "ckpt_every_minutes", "d_warmup_iters"):
        if getattr(cfg, key) < 0:
            raise UserError(f"config: {key} must be >= 0, got {getattr(cfg, key)}")
    if min(cfg.fade_iters + cfg.stable_iters, default=0) < 0:
        raise UserError("config: fade_iters and stable_iters must be >= 0")
    if cfg.batch_size < sum(1 for share in cfg.scale_mix if share > 0):
        raise UserError(f"config: batch_size {cfg.batch_size} is smaller than the number of scales in scale_mix")
    if not cfg.scale_aug or not all(0 < f <= 1 for f in cfg.scale_aug):
        raise UserError(f"config: scale_aug factors must be in (0, 1], got {cfg.scale_aug}")
    if cfg.ema_half_life < 0:
        raise UserError(f"config: ema_half_life must be >= 0 samples, got {cfg.ema_half_life}")
    if len(cfg.betas) != 2 or len(cfg.d_betas) != 2:
        raise UserError("config: betas and d_betas take two numbers")
    if cfg.lr <= 0 or cfg.lr_min < 0 or cfg.d_lr <= 0:
        raise UserError("config: lr and d_lr must be > 0 and lr_min >= 0")
    weights = ("pixel_weight", "perceptual_weight", "adversarial_weight", "triplet_weight", "grid_weight",
               "high_frequency_weight")
    if any(getattr(cfg, key) < 0 for key in weights + ("wgan_gp_weight", "wgan_drift")):
        raise UserError(f"config: loss weights must be >= 0 ({', '.join(weights)}, wgan_gp_weight, wgan_drift)")
    if not 1 <= cfg.perceptual_layers <= 5:
        raise UserError(f"config: perceptual_layers must be 1 to 5, got {cfg.perceptual_layers}")
    if cfg.phase == "psnr" and cfg.adversarial_weight > 0:
        raise UserError("config: adversarial_weight needs phase gan (the psnr phase has no discriminator)")
    if cfg.triplet_weight > 0 and cfg.triplet_distance == "dfeat" and cfg.phase != "gan":
        raise UserError("config: triplet_distance dfeat needs phase gan (it uses the discriminator's features)")
    if not any(getattr(cfg, key) > 0 for key in weights):
        raise UserError("config: every loss weight is 0; nothing to train")


# ------------------------------------------------------------------------------------------------ schedules


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


def stage_boundaries(cfg: TrainConfig) -> set[int]:
    """Iteration counts at which a stage starts or finishes fading in (checkpoints are written there)."""
    if cfg.schedule == "simultaneous":
        return set()
    points, start = {cfg.stage1_iters}, cfg.stage1_iters
    for fade, stable in zip(cfg.fade_iters, cfg.stable_iters):
        points.update({start, start + fade})
        start += fade + stable
    return {p for p in points if 0 < p < cfg.iters}


def batch_split(batch_size: int, shares, stage: int) -> list[int]:
    """Samples per scale (x2, x4, ...) in a batch while `stage` is the top stage: scales above it get none.

    The active shares are renormalised; counts are rounded by largest remainder, so they sum to batch_size.
    """
    active = [float(s) if k < stage else 0.0 for k, s in enumerate(shares)]
    if sum(active) <= 0:  # e.g. stage 1 with no x2 share: the top active scale takes the whole batch
        active[stage - 1] = 1.0
    total = sum(active)
    exact = [batch_size * s / total for s in active]
    counts = [math.floor(e) for e in exact]
    for k in sorted(range(len(exact)), key=lambda k: counts[k] - exact[k])[: batch_size - sum(counts)]:
        counts[k] += 1
    return counts


def ema_beta(samples: int, samples_per_iteration: int, cfg: TrainConfig, ramp: bool) -> float:
    """The EMA's decay for the update after `samples` training samples: 0.5 ** (batch / half-life), so the
    half-life is ema_half_life samples whatever the batch (stylegan2-ada's rule).

    With `ramp` (a run from random weights) the half-life is at most 5% of the samples seen, so the average
    forgets the random start; a fine-tune from trained weights has its full half-life from the first update.
    """
    half_life = min(cfg.ema_half_life, 0.05 * samples) if ramp else cfg.ema_half_life
    return 0.5 ** (samples_per_iteration / half_life) if half_life > 0 else 0.0


def learning_rate(it: int, base: float, cfg: TrainConfig, budget_fraction: float | None = None) -> float:
    """Linear warmup, then cosine decay from `base` to lr_min (scaled alike).

    The cosine runs over lr_decay_iters iterations, or, in a time-budgeted chunk, over `budget_fraction`
    (0 -> 1) of the chunk's time: a warm restart per chunk, so every chunk ends annealed (`it` then counts
    the chunk's own iterations, so each chunk warms up again).
    """
    if it < cfg.warmup_iters:
        return base * (it + 1) / cfg.warmup_iters
    if cfg.lr_decay == "constant":
        return base
    if budget_fraction is None:
        t = (it - cfg.warmup_iters) / max(1, cfg.lr_decay_iters - cfg.warmup_iters)
    else:
        t = budget_fraction
    low = cfg.lr_min * base / cfg.lr
    return low + (base - low) * 0.5 * (1 + math.cos(math.pi * min(1.0, max(0.0, t))))
