"""The training loop: set up the process, build the models and data, then step / log / validate / checkpoint.

`train` reads top to bottom as those named steps. Under DDP every decision that depends on a clock
(the budget's learning-rate fraction, a timed checkpoint, a stop) is taken from rank 0's clock and
shared in the one all-reduce per iteration, so replicas never drift and never wait on different
collectives.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
import random
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from progsr.devices import resolve_device
from progsr.errors import UserError
from progsr.scales import scales_up_to
from progsr.training.checkpoints import read_init_weights, set_rng_state
from progsr.training.config import (TrainConfig, batch_split, build_model_configs, check_config, ema_beta,
                                    learning_rate, schedule, stage_boundaries)
from progsr.training.writer import LossLog, RunWriter


@dataclasses.dataclass
class RunLimits:
    """When this invocation stops (whichever comes first), and how its learning rate is timed."""

    max_minutes: float | None = None  # wall clock from the start of the call
    stop_after: int | None = None  # iterations of this call
    budget_minutes: float | None = None  # training time of this call; the cosine restarts and ends with it


class StopSignals:
    """SIGINT / SIGTERM ask the loop to stop after the current iteration with a checkpoint; a second one aborts."""

    def __init__(self):
        self.requested = None
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, frame):
        if self.requested is not None:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


@dataclasses.dataclass
class Process:
    """This process's place in the run: device, DDP rank and world size."""

    device: torch.device
    rank: int
    world_size: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def interactive(self) -> bool:
        return self.is_main and sys.stderr.isatty()

    def log(self, msg: str) -> None:
        """A progress line on stderr, from rank 0 only."""
        if self.is_main:
            print(f"progsr train: {msg}", file=sys.stderr, flush=True)


@dataclasses.dataclass
class Models:
    """The generator, its EMA, the discriminator (gan phase) and their optimisers."""

    G: torch.nn.Module
    G_ema: torch.nn.Module
    D: torch.nn.Module | None
    opt_G: torch.optim.Optimizer
    opt_D: torch.optim.Optimizer | None

    def modules(self) -> list[torch.nn.Module]:
        return [m for m in (self.G, self.G_ema, self.D) if m is not None]


@dataclasses.dataclass
class Clock:
    """Training time (everything but validation and checkpoints), shared from rank 0 under DDP."""

    train_seconds: float = 0.0  # of the whole run
    chunk_seconds: float = 0.0  # of this invocation
    last_ckpt_seconds: float = 0.0


def setup_process(device_name: str) -> Process:
    """The device and rank of this process; joins the process group under torchrun."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(device_name, int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Process(device, int(os.environ.get("RANK", "0")), world_size)


def seed_everything(seed: int) -> None:
    """Python, numpy and torch seeded alike on every rank (so replicas start identical)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_models(cfg: TrainConfig, proc: Process, resume: dict | None) -> Models:
    """G (from --init weights on a fresh run), its EMA copy, D in the gan phase, and Adam for each."""
    from progsr.models.discriminator import ProgressiveDiscriminator
    from progsr.models.generator import ProgressiveGenerator

    g_cfg, d_cfg = build_model_configs(cfg)
    G = ProgressiveGenerator(g_cfg).to(proc.device)
    D = ProgressiveDiscriminator(d_cfg).to(proc.device) if cfg.phase == "gan" else None
    if resume is None and cfg.init:
        init_cfg, init_state = read_init_weights(cfg.init)
        init_g_cfg = type(g_cfg).from_dict(init_cfg)
        if not init_g_cfg.grows_into(g_cfg):
            raise UserError(f"{cfg.init}: its generator config {init_cfg} differs from the run's {cfg.generator}")
        if init_g_cfg != g_cfg:
            proc.log(f"growing the generator's blocks {list(init_g_cfg.blocks)} -> {list(g_cfg.blocks)} "
                     f"(added blocks start as identities)")
        G.load_grown(init_state, init_g_cfg)
    elif resume is None and cfg.phase == "gan":
        proc.log("warning: gan phase without --init; the generator starts from random weights, not from PSNR weights")
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    opt_G = torch.optim.Adam(G.parameters(), lr=cfg.lr, betas=tuple(cfg.betas))
    opt_D = torch.optim.Adam(D.parameters(), lr=cfg.d_lr, betas=tuple(cfg.d_betas)) if D is not None else None
    return Models(G, G_ema, D, opt_G, opt_D)


def restore(models: Models, resume: dict | None, world_size: int) -> tuple[int, float, list]:
    """Load a checkpoint's weights and optimiser states; (start iteration, train seconds, validation history).

    Then rank 0's weights are broadcast, so every replica starts bit-identical.
    """
    start, train_seconds, history = 0, 0.0, []
    if resume is not None:
        models.G.load_state_dict(resume["G"])
        models.G_ema.load_state_dict(resume["G_ema"])
        models.opt_G.load_state_dict(resume["opt_G"])
        if models.D is not None:
            models.D.load_state_dict(resume["D"])
            models.opt_D.load_state_dict(resume["opt_D"])
        start, train_seconds = resume["iteration"], resume["run"]["train_seconds"]
        history = list(resume["run"].get("validation", []))
    if world_size > 1:
        for module in models.modules():
            for t in list(module.parameters()) + list(module.buffers()):
                dist.broadcast(t.data, src=0)
    return start, train_seconds, history


def prepare_for_device(models: Models, cfg: TrainConfig, device: torch.device):
    """(autocast context, memory format): bf16 autocast and channels_last on CUDA; compiled blocks if asked."""
    cuda = device.type == "cuda"
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if cuda and cfg.amp else contextlib.nullcontext()
    memory_format = torch.channels_last if cuda and cfg.channels_last else torch.contiguous_format
    if memory_format == torch.channels_last:
        for module in models.modules():
            module.to(memory_format=memory_format)
    if cfg.compile:
        # Compile the blocks, not the models: scale, stage and alpha stay plain Python in the eager
        # forward, so a changing alpha never recompiles, and state_dict keys stay unchanged.
        for stage in models.G.stages:
            stage.compile()
        models.G.head.compile()
        if models.D is not None:
            for block in models.D.blocks:
                block.compile()
    return amp, memory_format


@dataclasses.dataclass
class Data:
    """The training crop stream and the validation set."""

    crops: object
    images: int
    val_name: str
    val_images: list
    val_set: list


def load_data(cfg: TrainConfig, data_dirs: list[Path], val: str | None, num_stages: int, proc: Process) -> Data:
    """Pyramids of the training images (cached) as a crop stream, and the validation set.

    A degraded-input run validates on the "medium" level of progsr.degradations.LEVELS: the model is
    chosen for the inputs it is made for.
    """
    from progsr.degradations import DegradationConfig
    from progsr.training.data import PyramidCrops, load_pyramids, load_validation
    from progsr.training.validation import make_validation_set

    proc.log("loading the training pyramids (built once, then cached; see progsr/TRAINING.md)")
    pyramids = load_pyramids(data_dirs, cfg.scale_aug, num_stages, progress=proc.interactive)
    degradation = DegradationConfig.from_dict(cfg.degradation) if cfg.degradation else None
    crops = PyramidCrops(pyramids, cfg.lr_crop, cfg.seed, augment=cfg.augment, device=proc.device,
                         degradation=degradation)
    val_name, val_images = load_validation(val) if val else ("none", [])
    level = "medium" if degradation is not None else "clean"
    val_set = make_validation_set(val_images, scales_up_to(num_stages), level)
    if level != "clean":
        val_name = f"{val_name}, level {level}"
    return Data(crops, len(pyramids), val_name, val_images, val_set)


def update_ema(G_ema: torch.nn.Module, G: torch.nn.Module, beta: float) -> None:
    """G_ema <- beta G_ema + (1 - beta) G (beta from config.ema_beta); buffers are copied."""
    with torch.no_grad():
        torch._foreach_lerp_(list(G_ema.parameters()), list(G.parameters()), 1.0 - beta)
        for b_ema, b in zip(G_ema.buffers(), G.buffers()):
            b_ema.copy_(b)


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


def share_clock(clock: Clock, stop: bool, proc: Process) -> bool:
    """Under DDP: every rank takes rank 0's clock, and stops if any rank wants to (one all-reduce)."""
    if proc.world_size == 1:
        return stop
    main = proc.is_main
    flag = torch.tensor([float(stop), clock.train_seconds if main else 0.0, clock.chunk_seconds if main else 0.0],
                        dtype=torch.float64, device=proc.device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)  # times are >= 0, so the max is rank 0's
    clock.train_seconds, clock.chunk_seconds = float(flag[1]), float(flag[2])
    return bool(flag[0])


def train(cfg: TrainConfig, data_dirs: list[Path], val: str | None, out: Path, resume: dict | None = None,
          limits: RunLimits | None = None, device_name: str = "auto") -> dict:
    """Run (or continue) training; returns {"iteration", "stopped_early", "last_val", "interrupted"}."""
    from progsr.metrics import build_lpips
    from progsr.training.steps import build_perceptual_loss
    from progsr.training.validation import bicubic_baseline

    limits = limits or RunLimits()
    t_start = time.time()
    proc = setup_process(device_name)
    check_config(cfg)
    seed_everything(cfg.seed)
    models = build_models(cfg, proc, resume)
    lpips_loss = build_perceptual_loss(cfg, proc.device)
    # LPIPS-alex is the benchmark's metric: the GAN recipe validates on it and trains on LPIPS-vgg.
    val_lpips = build_lpips("alex", cfg.backbones or None, device=proc.device) if cfg.val_lpips and proc.is_main else None
    start, train_seconds, history = restore(models, resume, proc.world_size)
    amp, memory_format = prepare_for_device(models, cfg, proc.device)
    data = load_data(cfg, data_dirs, val, models.G.config.num_stages, proc)
    if resume is not None:
        set_rng_state(resume["rng"])  # last: nothing above may consume randomness after this

    run_info = {"data": [str(d) for d in data_dirs], "val": str(val) if val else None, "val_name": data.val_name,
                "world_size": proc.world_size, "images": data.images}
    writer = RunWriter(out, cfg, proc, models, data, history, start, resume is not None, run_info)
    n_g = sum(p.numel() for p in models.G.parameters())
    proc.log(f"{'resuming at iteration ' + str(start) if resume else 'starting'}: phase {cfg.phase}, "
             f"{cfg.schedule} schedule, to iteration {cfg.iters}, device {proc.device}, {proc.world_size} "
             f"process(es), {torch.get_num_threads()} CPU thread(s), generator {n_g / 1e6:.2f} M params, "
             f"{data.images} training pyramids, validation {data.val_name}")
    if resume is None and data.val_set:
        writer.write({"it": 0, **bicubic_baseline(data.val_set)})
    clock = Clock(train_seconds, 0.0, train_seconds)
    done, stopped_early, interrupted = run_loop(cfg, proc, models, data, writer, clock, start, limits, t_start,
                                                lpips_loss, val_lpips, amp, memory_format)
    if start >= cfg.iters:
        proc.log(f"nothing to do: the run is already at iteration {start} of {cfg.iters} (raise --iters to continue)")
    writer.close()
    if proc.world_size > 1:
        dist.barrier()
    return {"iteration": done, "stopped_early": stopped_early, "last_val": history[-1] if history else None,
            "interrupted": interrupted}


def run_loop(cfg, proc: Process, models: Models, data: Data, writer: RunWriter, clock: Clock, start: int,
             limits: RunLimits, t_start: float, lpips_loss, val_lpips, amp, memory_format):
    """The iterations: step, EMA, then log / stop / validate / checkpoint; (done, stopped early, signal name)."""
    from tqdm import tqdm

    from progsr.training.steps import train_step

    boundaries = stage_boundaries(cfg)
    losses = LossLog(clock.train_seconds)
    samples_per_iteration = cfg.batch_size * proc.world_size
    stopped_early, done = False, start
    bar = tqdm(total=cfg.iters, initial=start, disable=not proc.interactive, unit="it", dynamic_ncols=True,
               desc=cfg.phase)
    models.G.train()
    with StopSignals() as signals:
        for it in range(start, cfg.iters):
            t_iter = time.time()
            stage, alpha = schedule(it, cfg)
            groups = data.crops.batch(it, batch_split(cfg.batch_size, cfg.scale_mix, stage), proc.rank,
                                      proc.world_size)
            groups = [(s, lr.contiguous(memory_format=memory_format),
                       [t.contiguous(memory_format=memory_format) for t in targets]) for s, lr, targets in groups]
            if limits.budget_minutes is not None:
                lr_now = learning_rate(it - start, cfg.lr, cfg, clock.chunk_seconds / (limits.budget_minutes * 60))
            else:
                lr_now = learning_rate(it, cfg.lr, cfg)
            terms = train_step(models.G, models.D, models.opt_G, models.opt_D, lpips_loss, groups, stage, alpha, cfg,
                               amp, lr_now, lambda params: _sync_grads(params, proc.world_size),
                               update_g=models.D is None or it >= cfg.d_warmup_iters)
            update_ema(models.G_ema, models.G,
                       ema_beta((it + 1) * samples_per_iteration, samples_per_iteration, cfg, ramp=not cfg.init))
            losses.add(terms)
            done = it + 1
            bar.update(1)

            # ---- bookkeeping: log, stop, validate, checkpoint
            log_now = done % cfg.log_every == 0 or done == cfg.iters
            if log_now:
                means = losses.means(done)
            elapsed = time.time() - t_iter  # training time: everything but validation and checkpoints
            clock.train_seconds += elapsed
            clock.chunk_seconds += elapsed
            if log_now:
                it_s = losses.rate(clock.train_seconds)
            if log_now and proc.is_main:
                writer.write({"it": done, "samples": done * samples_per_iteration, "stage": stage,
                              "alpha": round(alpha, 6), "lr": lr_now, **means, "it_s": round(it_s, 4),
                              "samples_s": round(it_s * samples_per_iteration, 3),
                              "time": round(clock.train_seconds, 3)})
                bar.set_postfix(stage=stage, alpha=f"{alpha:.2f}", loss=f"{means['loss/total']:.4g}", refresh=False)
                if not proc.interactive:
                    proc.log(f"iteration {done}/{cfg.iters}: stage {stage}, loss {means['loss/total']:.4g}, "
                             f"{it_s * samples_per_iteration:.1f} samples/s")
            wants_stop = ((limits.stop_after is not None and done - start >= limits.stop_after)
                          or (limits.max_minutes is not None and time.time() - t_start > limits.max_minutes * 60)
                          or signals.requested is not None)
            stop = share_clock(clock, wants_stop, proc)  # from here on every rank decides alike
            stop = stop or (limits.budget_minutes is not None and clock.chunk_seconds >= limits.budget_minutes * 60)
            last = done == cfg.iters
            timed_ckpt = (cfg.ckpt_every_minutes > 0
                          and clock.train_seconds - clock.last_ckpt_seconds >= cfg.ckpt_every_minutes * 60)
            if ((cfg.val_every and done % cfg.val_every == 0) or last or stop) and signals.requested is None:
                writer.validate(done, stage, alpha, clock.train_seconds, val_lpips)
            if done % cfg.ckpt_every == 0 or done in boundaries or last or stop or timed_ckpt:
                writer.checkpoint(done, clock.train_seconds)
                clock.last_ckpt_seconds = clock.train_seconds
            if stop and not last:
                stopped_early = True
                why = f"{signals.requested} received" if signals.requested else "limit reached"
                proc.log(f"stopping at iteration {done} of {cfg.iters} ({why}; checkpoint written): "
                         f"continue with --resume auto")
                break
    bar.close()
    return done, stopped_early, signals.requested
