"""The training loop, in one function: build, resume, then step / log / validate / checkpoint until told to stop."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
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
from progsr.training.checkpoints import (CHECKPOINT_FORMAT, MetricsLog, checkpoint_dir, list_checkpoints,
                                         read_init_weights, read_metrics, rng_state, save_atomic, set_rng_state,
                                         weights_digest)
from progsr.training.config import (TrainConfig, batch_split, build_model_configs, check_config, learning_rate,
                                    schedule, stage_boundaries)


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


def train(cfg: TrainConfig, data_dirs: list[Path], val: str | None, out: Path, resume: dict | None = None,
          limits: RunLimits | None = None, device_name: str = "auto") -> dict:
    """Run (or continue) training; returns {"iteration", "stopped_early", "last_val"}."""
    from tqdm import tqdm

    from progsr.metrics import build_lpips
    from progsr.models.discriminator import ProgressiveDiscriminator
    from progsr.models.generator import ProgressiveGenerator
    from progsr.degradations import DegradationConfig
    from progsr.training.data import PyramidCrops, load_pyramids, load_validation
    from progsr.training.steps import build_perceptual_loss, train_step
    from progsr.training.validation import (bicubic_baseline, make_validation_set, plot_learning_curve,
                                            save_sample_grid, validate)

    limits = limits or RunLimits()
    t_start = time.time()
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = resolve_device(device_name, int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    is_main = rank == 0
    log = (lambda msg: print(f"progsr train: {msg}", file=sys.stderr, flush=True)) if is_main else (lambda msg: None)
    interactive = is_main and sys.stderr.isatty()

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
        init_g_cfg = type(g_cfg).from_dict(init_cfg)
        if not init_g_cfg.grows_into(g_cfg):
            raise UserError(f"{cfg.init}: its generator config {init_cfg} differs from the run's {cfg.generator}")
        if init_g_cfg != g_cfg:
            log(f"growing the generator's blocks {list(init_g_cfg.blocks)} -> {list(g_cfg.blocks)} "
                f"(added blocks start as identities)")
        G.load_grown(init_state, init_g_cfg)
    elif resume is None and cfg.phase == "gan":
        log("warning: gan phase without --init; the generator starts from random weights, not from PSNR weights")
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    opt_G = torch.optim.Adam(G.parameters(), lr=cfg.lr, betas=tuple(cfg.betas))
    opt_D = torch.optim.Adam(D.parameters(), lr=cfg.d_lr, betas=tuple(cfg.d_betas)) if D is not None else None
    lpips_loss = build_perceptual_loss(cfg, device)
    # LPIPS-alex is the benchmark's metric: the GAN recipe validates on it and trains on LPIPS-vgg.
    val_lpips = build_lpips("alex", cfg.backbones or None, device=device) if cfg.val_lpips and is_main else None

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
        # forward, so a changing alpha never recompiles, and state_dict keys stay unchanged.
        for stage in G.stages:
            stage.compile()
        G.head.compile()
        if D is not None:
            for block in D.blocks:
                block.compile()

    # ---- data: every rank holds the pyramids on its device; the crop stream is sharded by rank
    log("loading the training pyramids (built once, then cached; see progsr/TRAINING.md)")
    pyramids = load_pyramids(data_dirs, cfg.scale_aug, num_stages, progress=interactive)
    degradation = DegradationConfig.from_dict(cfg.degradation) if cfg.degradation else None
    crops = PyramidCrops(pyramids, cfg.lr_crop, cfg.seed, augment=cfg.augment, device=device, degradation=degradation)
    val_name, val_images = load_validation(val) if val else ("none", [])
    val_level = "medium" if degradation is not None else "clean"  # a degraded-input model is chosen on degraded LR
    val_set = make_validation_set(val_images, [2**k for k in range(1, num_stages + 1)], val_level)
    if val_level != "clean":
        val_name = f"{val_name}, level {val_level}"
    if resume is not None:
        set_rng_state(resume["rng"])  # last: nothing above may consume randomness after this

    out.mkdir(parents=True, exist_ok=True)
    metrics = None
    if is_main:
        checkpoint_dir(out).mkdir(exist_ok=True)
        (out / "samples").mkdir(exist_ok=True)
        (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n", encoding="utf-8")
        metrics = MetricsLog(out, start if resume is not None else None)
        n_g = sum(p.numel() for p in G.parameters())
        log(f"{'resuming at iteration ' + str(start) if resume else 'starting'}: phase {cfg.phase}, "
            f"{cfg.schedule} schedule, to iteration {cfg.iters}, device {device}, {world_size} process(es), "
            f"{torch.get_num_threads()} CPU thread(s), generator {n_g / 1e6:.2f} M params, {len(pyramids)} "
            f"training pyramids, validation {val_name}")
        if resume is None and val_set:
            metrics.write({"it": 0, **bicubic_baseline(val_set)})

    run_info = {"data": [str(d) for d in data_dirs], "val": str(val) if val else None, "val_name": val_name,
                "world_size": world_size, "images": len(pyramids)}
    samples_per_iteration = cfg.batch_size * world_size

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
            "format": CHECKPOINT_FORMAT, "iteration": iteration, "config": dataclasses.asdict(cfg),
            "run": {**run_info, "train_seconds": train_seconds, "validation": history},
            "G": G.state_dict(), "G_ema": G_ema.state_dict(), "opt_G": opt_G.state_dict(),
            "D": D.state_dict() if D is not None else None, "opt_D": opt_D.state_dict() if D is not None else None,
            "rng": rng_state(),
        }
        save_atomic(state, checkpoint_dir(out) / f"ckpt_{iteration:08d}.pt")
        for old in list_checkpoints(out)[: -cfg.keep_ckpts]:
            old.unlink(missing_ok=True)

    def run_validation(iteration: int, stage: int, alpha: float) -> None:
        if not is_main or not val_set:
            return
        record = {"it": iteration, "samples": iteration * samples_per_iteration, "stage": stage, "alpha": alpha,
                  "time": round(train_seconds, 3), **validate(G_ema, val_set, device, 2**stage, alpha, val_lpips)}
        history.append(record)
        metrics.write(record)
        save_sample_grid(G_ema, val_images, out / "samples" / f"it_{iteration:08d}.png", max_scale,
                         alpha if stage == num_stages else 1.0, device)
        plot_learning_curve(read_metrics(metrics.path), out / "learning_curve.png")

    # ---- the loop
    boundaries = stage_boundaries(cfg)
    sums: dict[str, tuple] = {}  # loss name -> (running sum, iterations) since the last log line
    window_start, window_iters, chunk_seconds, last_ckpt_seconds = train_seconds, 0, 0.0, train_seconds
    stopped_early, done = False, start
    bar = tqdm(total=cfg.iters, initial=start, disable=not interactive, unit="it", dynamic_ncols=True, desc=cfg.phase)
    G.train()
    with StopSignals() as signals:
        for it in range(start, cfg.iters):
            t_iter = time.time()
            stage, alpha = schedule(it, cfg)
            groups = crops.batch(it, batch_split(cfg.batch_size, cfg.scale_mix, stage), rank, world_size)
            groups = [(s, lr.contiguous(memory_format=memory_format),
                       [t.contiguous(memory_format=memory_format) for t in targets]) for s, lr, targets in groups]
            if limits.budget_minutes is not None:
                lr_now = learning_rate(it - start, cfg.lr, cfg, chunk_seconds / (limits.budget_minutes * 60))
            else:
                lr_now = learning_rate(it, cfg.lr, cfg)
            terms = train_step(G, D, opt_G, opt_D, lpips_loss, groups, stage, alpha, cfg, amp, lr_now,
                               lambda params: _sync_grads(params, world_size), G_ema)

            # EMA of the generator; beta ramps up early so the average does not drag in the random init.
            beta = min(cfg.ema_beta, (1 + it) / (10 + it))
            with torch.no_grad():
                torch._foreach_lerp_(list(G_ema.parameters()), list(G.parameters()), 1.0 - beta)
                for b_ema, b in zip(G_ema.buffers(), G.buffers()):
                    b_ema.copy_(b)

            for key, value in terms.items():  # summed on the device: no sync until the next log line
                total_so_far, count = sums.get(key, (0.0, 0))
                sums[key] = (total_so_far + value.detach().float(), count + 1)
            done = it + 1
            bar.update(1)

            # ---- bookkeeping: log, stop, validate, checkpoint
            log_now = done % cfg.log_every == 0 or done == cfg.iters
            if log_now:
                means = {f"loss/{k}": float(v) / n for k, (v, n) in sums.items()}  # waits for the device
            elapsed = time.time() - t_iter  # training time: everything but validation and checkpoints
            train_seconds += elapsed
            chunk_seconds += elapsed
            window_iters += 1
            if log_now:
                if not all(math.isfinite(v) for v in means.values()):
                    raise RuntimeError(f"training diverged at iteration {done}: {means}")
                it_s = window_iters / max(1e-9, train_seconds - window_start)
                if is_main:
                    metrics.write({"it": done, "samples": done * samples_per_iteration, "stage": stage,
                                   "alpha": round(alpha, 6), "lr": lr_now, **means, "it_s": round(it_s, 4),
                                   "samples_s": round(it_s * samples_per_iteration, 3), "time": round(train_seconds, 3)})
                    bar.set_postfix(stage=stage, alpha=f"{alpha:.2f}", loss=f"{means['loss/total']:.4g}", refresh=False)
                    if not interactive:
                        log(f"iteration {done}/{cfg.iters}: stage {stage}, loss {means['loss/total']:.4g}, "
                            f"{it_s * samples_per_iteration:.1f} samples/s")
                sums, window_start, window_iters = {}, train_seconds, 0
            stop = [limits.stop_after is not None and done - start >= limits.stop_after,
                    limits.max_minutes is not None and time.time() - t_start > limits.max_minutes * 60,
                    limits.budget_minutes is not None and chunk_seconds >= limits.budget_minutes * 60,
                    signals.requested is not None]
            if world_size > 1:  # ranks must agree on when to stop: any rank's reason stops all of them
                flag = torch.tensor([float(any(stop))], device=device)
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                stop = [bool(flag.item())]
            stop = any(stop)
            last = done == cfg.iters
            timed_ckpt = cfg.ckpt_every_minutes > 0 and train_seconds - last_ckpt_seconds >= cfg.ckpt_every_minutes * 60
            if ((cfg.val_every and done % cfg.val_every == 0) or last or stop) and signals.requested is None:
                run_validation(done, stage, alpha)
            if done % cfg.ckpt_every == 0 or done in boundaries or last or stop or timed_ckpt:
                save_checkpoint(done)
                last_ckpt_seconds = train_seconds
            if stop and not last:
                stopped_early = True
                why = f"{signals.requested} received" if signals.requested else "limit reached"
                log(f"stopping at iteration {done} of {cfg.iters} ({why}; checkpoint written): "
                    f"continue with --resume auto")
                break
    bar.close()
    if start >= cfg.iters:
        log(f"nothing to do: the run is already at iteration {start} of {cfg.iters} (raise --iters to continue)")
    if metrics is not None:
        metrics.close()
    if world_size > 1:
        dist.barrier()
    return {"iteration": done, "stopped_early": stopped_early, "last_val": history[-1] if history else None,
            "interrupted": signals.requested}
