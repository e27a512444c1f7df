"""Training (Section 5.2) on the multi-scale patch set, with the recipe of `rlcsc.recipe`.

Every `eval_every` steps and at every epoch's end the model is scored on Set5 x3 by the evaluation
protocol (`Monitor`), together with what tells whether the recipe behaves as the paper's: the
loss, the gradient norm before clipping (median, maximum, fraction of steps clipped) over the
interval, the mean of the residual image R, the fraction of output pixels that are zero, and the
bias of H when there is one. These snapshots are the curve in `train.json`.

Checkpoints are written atomically at the start, every `checkpoint_every` steps, at every epoch's
end and on interruption; a run restarted with the same result-affecting parameters (`identity`)
resumes from the last one and ends with the same weights as an uninterrupted run (the data order
is a function of seed and epoch; on a GPU, up to the run-to-run differences of its convolution
kernels, which are not deterministic). Under `torchrun` the processes agree at every host sync on
divergence and interruption, so all stop together.
"""

from __future__ import annotations

import copy
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from rlcsc import recipe
from rlcsc.atomic import all_atomically, json_text, save_torch, text_writer, torch_writer
from rlcsc.config import Checked, above, at_least, between, one_of, param, within
from rlcsc.data.patches import PatchSet
from rlcsc.device import (
    PRECISIONS,
    autocast,
    cpu_description,
    device_name,
    effective,
    inference_precision,
    inferring,
    pick_device,
    using_precision,
)
from rlcsc.errors import RlcscError
from rlcsc.evaluate import ilr_pairs, score
from rlcsc.inference import (
    LAYER_SWAPS,
    MAX_DEPTH,
    MAX_WIDTH,
    apply,
    build,
    computes_in,
    for_inference,
    load_torch,
    model_state,
)
from rlcsc.manifest import TEST_SETS
from rlcsc.provenance import code_hash, commit
from rlcsc.rounding import im2uint

# Keys that do not change what a run computes: a run resumes across changes of these.
NOT_IDENTITY = ("stop_epoch", "max_minutes", "eval_every", "log_every", "checkpoint_every", "on_divergence",
                "device", "compile")
MAX_BATCH = 8192  # far above the paper's 128; a typo above it would exhaust any machine's memory
# The keys of the training recipe (Section 5.2; TrainParams' defaults are the paper's values).
RECIPE = ("pairs", "batch", "zero_last", "optimizer", "lr", "schedule", "lr_step", "warmup", "momentum", "weight_decay",
          "loss", "clip")


@dataclass(frozen=True)
class TrainParams(Checked):
    """Block `train` of params.yaml (then the experiment's and the budget's layers)."""

    # The network (Sections 3 and 5.2).
    arch: str = param("rlcsc", one_of("rlcsc", "drrn"))
    recursions: int = param(25, between(1, MAX_DEPTH))  # K (RL-CSC)
    features: int = param(128, between(1, MAX_WIDTH))  # n (RL-CSC), filters (DRRN)
    codes: int = param(256, between(1, MAX_WIDTH))  # m (RL-CSC)
    units: int = param(9, between(1, MAX_DEPTH))  # U (DRRN)
    residual: bool = param(True)  # global residual learning (eq. 12; Table 3)
    bias: bool = param(False)  # a bias on every convolution (the paper's network has none)
    width: float = param(1.0, above(0))  # multiplies features and codes (the quick budget's miniature)
    zero_last: bool = param(False)  # start H at zero, i.e. from the interpolated input
    # The data and the run's length.
    pairs: int = param(0, at_least(0))  # train on the first `pairs` of the shuffled set (0 = all)
    batch: int = param(128, between(1, MAX_BATCH))
    epochs: int = param(35, at_least(1))  # the schedule's length
    stop_epoch: int = param(0, at_least(0))  # end after this epoch (0 = after `epochs`); Table 3 stops at 14
    max_steps: int = param(0, at_least(0))  # end after this many steps in all (0 = no limit); cosine/linear decay to it
    max_minutes: float = param(0.0, at_least(0))  # end after this much training time in all (0 = no limit)
    seed: int = param(0, within(0, 2**32))
    # The recipe (rlcsc.recipe).
    optimizer: str = param("sgd", one_of("sgd", "adam", "adamw"))
    lr: float = param(0.1, above(0))
    schedule: str = param("step", one_of("step", "cosine", "linear"))
    lr_step: int = param(10, at_least(1))  # epochs between divisions by 10 (schedule: step)
    warmup: int = param(0, at_least(0))  # steps of linear warm-up
    momentum: float = param(0.9, within(0, 1))  # SGD
    weight_decay: float = param(1e-4, at_least(0))
    loss: str = param("l2", one_of("l2", "l1"))
    clip: float | None = param(0.4, above(0))  # theta: the gradients' global L2 norm is clipped to it
    # Monitoring.
    eval_dataset: str = param("Set5", one_of(*TEST_SETS))
    eval_scale: int = param(3, one_of(2, 3, 4))
    eval_every: int = param(0, at_least(0))  # steps between snapshots within an epoch (0 = at epoch ends only)
    log_every: int = param(50, at_least(1))  # steps between host syncs (progress, divergence, interruption)
    checkpoint_every: int = param(1000, at_least(1))  # steps
    on_divergence: str = param("fail", one_of("fail", "record"))  # record: a run expected to fail is a result
    # The machine (rlcsc.device).
    device: str = param("auto", one_of("auto", "cpu", "cuda"))
    precision: str = param("bf16", one_of(*PRECISIONS))  # CUDA only; the CPU computes in fp32
    compile: bool = param(True)  # torch.compile the forward pass (CUDA only)

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("features", "codes"):
            n = round(getattr(self, key) * self.width)
            if not 1 <= n <= MAX_WIDTH:
                raise RlcscError(f"TrainParams: width = {self.width!r} is not allowed with {key} = "
                                 f"{getattr(self, key)}: it makes {n} {key}, and must make from 1 to {MAX_WIDTH}")

    def model_config(self) -> dict:
        """Config fields of the network this run trains (widths scaled by `width`)."""
        n = round(self.features * self.width)
        if self.arch == "drrn":
            return {"units": self.units, "features": n}
        m = round(self.codes * self.width)
        return {"recursions": self.recursions, "features": n, "codes": m, "residual": self.residual, "bias": self.bias}

    def identity(self) -> dict:
        """The parameters that decide the weights after any given step (what a resumed run must share), and the
        monitor's test set and scale, so that a run's curve is one measure throughout.
        The run's planned length (`epochs`, `max_steps`) matters only to the schedules that decay to
        zero at its end; for the paper's step schedule `max_steps` is only a stop point."""
        skip = NOT_IDENTITY + (("epochs", "max_steps") if self.schedule == "step" else ())
        return {k: v for k, v in asdict(self).items() if k not in skip}

    def recipe_changes(self) -> dict:
        """The recipe's keys whose values differ from the paper's; empty for the paper's recipe."""
        paper = TrainParams()
        return {k: getattr(self, k) for k in RECIPE if getattr(self, k) != getattr(paper, k)}

    def planned_steps(self, per_epoch: int) -> int:
        """Where the schedule ends: after `epochs` epochs, or after `max_steps` when that comes first and
        the schedule decays to zero (under the paper's step schedule `max_steps` only cuts a run short)."""
        steps = self.epochs * per_epoch
        return min(steps, self.max_steps) if self.max_steps and self.schedule != "step" else steps

    def last_step(self, per_epoch: int) -> int:
        """Where the run ends: after `epochs` (or an earlier `stop_epoch`), or after `max_steps` when that
        comes first."""
        steps = min(self.epochs, self.stop_epoch or self.epochs) * per_epoch
        return min(steps, self.max_steps) if self.max_steps else steps


Step = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def prepare(p: TrainParams, device: torch.device,
            wrap: Callable[[nn.Module], nn.Module] = lambda m: m) -> tuple[nn.Module, torch.optim.Optimizer, Step]:
    """The network (initialised from `p.seed`), its optimiser, and the training step `rlcsc train` runs:
    forward (bf16 autocast when asked, channels-last and compiled on CUDA), loss, backward, clip,
    update. The step returns the loss and the gradient norm before clipping, on the device."""
    torch.manual_seed(p.seed)
    model = build(p.arch, p.model_config())
    if p.zero_last:
        model.zero_last_layer()
    cuda = device.type == "cuda"
    model = model.to(device, memory_format=torch.channels_last if cuda else torch.preserve_format)
    optimizer = recipe.optimizer(p, model.parameters(), device)
    net = wrap(model)
    forward = torch.compile(net) if p.compile and cuda else net

    def step(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if cuda:
            x, y = x.contiguous(memory_format=torch.channels_last), y.contiguous(memory_format=torch.channels_last)
        with autocast(device, p.precision):
            pred = forward(x)
        loss = recipe.loss(p, pred.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = recipe.clip(p, model.parameters())
        optimizer.step()
        return loss.detach(), norm.detach()

    return model, optimizer, step


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order in which epoch `epoch` visits the `n` training pairs (independent of resumption)."""
    return np.random.default_rng([seed, epoch]).permutation(n)


class Distributed:
    """Rank and world size under `torchrun` (one process otherwise); gloo on CPU, nccl on CUDA."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        if self.world > 1:
            torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def share(self, positions: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """This process's share of a batch's `positions`: every `world`-th, from its rank (the gradient exchange
        averages the shares' gradients into the whole batch's)."""
        return positions[self.rank :: self.world]

    def wrap(self, model: nn.Module) -> nn.Module:
        return nn.parallel.DistributedDataParallel(model) if self.world > 1 else model

    def agree(self, *flags: bool | torch.Tensor) -> list[bool]:
        """Each flag set if it is set in any process, so that every process takes the same branch."""
        t = torch.stack([torch.as_tensor(f, dtype=torch.float32, device=self.device) for f in flags])
        if self.world > 1:
            torch.distributed.all_reduce(t, torch.distributed.ReduceOp.MAX)
        return [bool(v) for v in t.tolist()]

    def mean(self, t: torch.Tensor) -> torch.Tensor:
        """The element-wise mean of `t` over the processes."""
        if self.world > 1:
            t = t.clone()
            torch.distributed.all_reduce(t)
            t /= self.world
        return t

    def close(self) -> None:
        if self.world > 1:
            torch.distributed.destroy_process_group()


class Batches:
    """The training pairs the loop draws from: the first `n` of the shuffled set, in file order.

    On a CUDA device with room for them they are copied there once (as stored: labels uint8)
    and each batch is gathered on the device; otherwise batches are gathered from the memory map on
    the host. Both paths give the same batches for the same positions (`resident` takes the first path
    on any device, or the second on a GPU).
    """

    def __init__(self, data: PatchSet, n: int, device: torch.device, resident: bool | None = None) -> None:
        self.rows = np.sort(data.keep[:n])
        self.data, self.device = data, device
        need = n * data.inputs[0].nbytes + n * data.labels[0].nbytes
        self.on_device = resident if resident is not None else (
            device.type == "cuda" and 2 * need < torch.cuda.mem_get_info(device)[0])
        if self.on_device:
            dtype = torch.from_numpy(np.array(data.inputs[:1])).dtype  # as stored: float16 or float32
            self.inputs = torch.empty((n, *data.inputs.shape[1:]), dtype=dtype, device=device)
            self.labels = torch.empty((n, *data.labels.shape[1:]), dtype=torch.uint8, device=device)
            for start in tqdm(range(0, n, 1 << 16), desc="patches to GPU", unit="chunk"):
                rows = self.rows[start : start + (1 << 16)]
                self.inputs[start : start + len(rows)] = torch.from_numpy(data.inputs[rows])
                self.labels[start : start + len(rows)] = torch.from_numpy(data.labels[rows])

    def order(self, seed: int, epoch: int) -> np.ndarray | torch.Tensor:
        """Positions in the order epoch `epoch` visits them (on the device when the pairs are)."""
        order = epoch_order(seed, epoch, len(self.rows))
        return torch.from_numpy(order).to(self.device) if self.on_device else order

    def __call__(self, positions: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, labels in [0, 1]) as float32 (B, 1, size, size) on the device."""
        if self.on_device:
            return self.inputs[positions].float()[:, None], self.labels[positions].float()[:, None] / 255
        rows = self.rows[positions]
        x = torch.from_numpy(self.data.inputs[rows].astype(np.float32)[:, None])
        y = torch.from_numpy(self.data.labels[rows].astype(np.float32)[:, None] / 255)
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


class Monitor:
    """One test set at one scale (Set5 x3) scored by the evaluation protocol in `precision` (as
    `rlcsc.device.inference_precision` resolved it; bf16 and winograd on a copy of the model made for
    them), with the mean of the residual image R (eq. 11: the output minus the input, or the whole output
    without the identity branch), the fraction of output pixels that round to 0, and H's mean bias (None
    without biases)."""

    def __init__(self, raw: Path, dataset: str, scale: int, precision: str) -> None:
        self.scale, self.precision = scale, precision
        self.pairs = ilr_pairs(raw, dataset, scale)

    @torch.no_grad()
    def __call__(self, model: nn.Module) -> dict[str, float | None]:
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        swapped = self.precision in LAYER_SWAPS  # inner layers replaced, on a copy
        net = for_inference(copy.deepcopy(model), device, self.precision) if swapped else model
        with inferring(device, self.precision):
            outs = [apply(net, ilr) for _, ilr in self.pairs]
        model.train(was_training)
        scores = np.array([score(hr, out, self.scale, with_ifc=False)[:2] for (hr, _), out in zip(self.pairs, outs)])
        residual = getattr(model.cfg, "residual", True)
        r = np.concatenate([(out - ilr if residual else out).ravel() for (_, ilr), out in zip(self.pairs, outs)])
        zeros = np.concatenate([(im2uint(out) == 0).ravel() for out in outs])
        h = getattr(model, "h", None)
        bias = None if h is None or h.bias is None else float(h.bias.mean())
        return {"psnr": float(scores[:, 0].mean()), "ssim": float(scores[:, 1].mean()),
                "residual_mean": float(r.mean()), "zero_fraction": float(zeros.mean()), "h_bias": bias}


def steps_per_epoch(p: TrainParams, available: int, patches: Path) -> int:
    """The steps of one epoch of `p` on the `available` training pairs of the patch set in `patches`, or one clear
    error where `p` cannot run on them: more pairs asked for than there are, no whole batch, or a warm-up no
    shorter than the run."""
    if p.pairs > available:
        raise RlcscError(f"train.pairs {p.pairs} is more than the {available} pairs in {patches}")
    n = p.pairs or available
    per_epoch = n // p.batch
    if per_epoch == 0:
        raise RlcscError(f"{n} training pairs make no batch of {p.batch}")
    if p.warmup >= p.planned_steps(per_epoch):
        raise RlcscError(f"train.warmup {p.warmup} is not shorter than the {p.planned_steps(per_epoch)} steps the "
                         f"{p.schedule} schedule runs for: the learning rate would never leave its warm-up")
    return per_epoch


def train(p: TrainParams, patches: Path, raw: Path, out: Path, eval_precision: str = "fp32",
          label: dict | None = None, stop_after: int | None = None, plan: TrainParams | None = None) -> dict:
    """Train into `out` (model.pt, checkpoint.pt, train.json, train_metrics.json); resume if a
    checkpoint of the same run exists. `eval_precision` is the monitor's (`evaluate.precision`);
    `label` (experiment, budget) is recorded with the run. The run's plan, its `steps_planned`, ends at the
    `last_step` of `plan` (default `p`): the params it was started with, where a call of `rlcsc record` stops
    it earlier (`--epochs`, `--steps`). Returns the run's summary (train.json); with `"interrupted": True` where
    Ctrl-C or SIGTERM ended the call: at a host sync before the run's end, as `{"status": "interrupted", "epoch",
    "step"}` (its checkpoint written, no model.pt), or after the last one, as the summary of the run written whole.

    `stop_after` ends the call after that many steps, as an interruption would; it exists to test resumption.
    """
    started = time.time()
    device = pick_device(p.device)
    eval_precision = inference_precision(device, eval_precision)
    dist = Distributed(device)
    if p.batch % dist.world:
        raise RlcscError(f"train.batch {p.batch} is not divisible by the {dist.world} processes")
    data = PatchSet.open(patches)
    per_epoch = steps_per_epoch(p, len(data), patches)
    n = p.pairs or len(data)
    model, optimizer, step_fn = prepare(p, device, dist.wrap)
    monitor = Monitor(raw, p.eval_dataset, p.eval_scale, eval_precision) if dist.main else None  # its images first
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "checkpoint.pt"
    state = _resume(ckpt_path, p, data.made_by, model, optimizer, per_epoch)
    epoch, step, curve, elapsed, calls = state["epoch"], state["step"], state["curve"], state["elapsed"], state["calls"]
    batches = Batches(data, n, device)
    losses = torch.zeros(per_epoch, device=device)  # this epoch's steps: loss and gradient norm
    norms = torch.zeros(per_epoch, device=device)
    since = state["since"]  # the step within the epoch at which the current snapshot interval began
    losses[since:step], norms[since:step] = state["losses"], state["norms"]

    def done() -> int:
        return epoch * per_epoch + step

    kept = {"elapsed": elapsed, "calls": calls}  # the run's time as the last checkpoint holds it

    def checkpoint() -> None:
        nonlocal kept
        kept = {"elapsed": elapsed + time.time() - clock, "calls": trained()}
        if not dist.main:
            return
        try:
            save_torch({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
                        "step": step, "curve": curve, "since": since, "losses": losses[since:step].cpu(),
                        "norms": norms[since:step].cpu(), **kept, "status": status, "config": asdict(p),
                        "pairs": data.made_by, "code": code_hash(__name__)},
                       ckpt_path)
        except OSError as err:  # a full disk, a read-only folder: the last checkpoint written is kept whole
            raise RlcscError(f"cannot write {ckpt_path}: {err.strerror or err}; training stopped at epoch {epoch + 1}, "
                             f"step {step}: rerun it to resume from the last checkpoint written") from None

    # read once, named by every checkpoint: the machine and the code (`provenance.commit`, -dirty where changed)
    host = {"cpu": cpu_description(), "cpu_cores": os.cpu_count(), "commit": commit()}

    def trained() -> list[dict]:
        """The calls that trained this run, this one included once it has trained a step: steps, wall
        seconds from the start of the call, ms/step, and where, at which commit and in which precision they ran."""
        if not this_call:
            return calls
        precision = {"train": effective(device, p.precision), "monitor": computes_in(model, eval_precision)}
        return calls + [{"steps": this_call, "seconds": round(time.time() - started, 1),
                         "ms_per_step": _ms_per_step(syncs), "device": device_name(device), "processes": dist.world,
                         **host, "precision": precision}]

    clock, status, this_call = time.time(), state["status"], 0  # a run that diverged is finished
    if state["fresh"]:
        checkpoint()  # the initial weights: what a run that diverges before any other checkpoint keeps
    syncs: list[tuple[int, float]] = []  # (steps done in this call, seconds of its training) at each host sync
    interrupted = _InterruptFlag()
    bad = torch.zeros((), dtype=torch.bool, device=device)
    lr = recipe.learning_rate(p, done(), per_epoch)
    late = bool(p.max_minutes) and elapsed >= 60 * p.max_minutes  # a run its time limit ended trains no further

    end = p.last_step(per_epoch)

    bar: tqdm | None = None  # the epoch's progress bar, closed however the loop ends (before an error's line)
    try:
        with using_precision(device, p.precision):
            while status == "completed" and not (late or done() >= end):
                order, synced = batches.order(p.seed, epoch), step
                bar = tqdm(total=per_epoch, initial=step, desc=f"epoch {epoch + 1}/{p.epochs}",
                           disable=not dist.main, unit="step")
                while step < per_epoch:
                    lr = recipe.learning_rate(p, done(), per_epoch)
                    for group in optimizer.param_groups:
                        group["lr"] = lr
                    x, y = batches(dist.share(order[step * p.batch : (step + 1) * p.batch]))
                    losses[step], norms[step] = step_fn(x, y)
                    bad |= ~(torch.isfinite(losses[step]) & torch.isfinite(norms[step]))
                    step += 1
                    this_call += 1
                    finished = done() >= end
                    snapshot = step == per_epoch or finished or bool(p.eval_every and done() % p.eval_every == 0)
                    save = done() % p.checkpoint_every == 0
                    stop_asked = stop_after is not None and this_call >= stop_after
                    if not (snapshot or save or stop_asked or step % p.log_every == 0):
                        continue
                    seconds = elapsed + time.time() - clock
                    diverged, stopping, late = dist.agree(  # the host syncs: every process takes the same branch
                        bad | ~_finite(model), bool(interrupted) or stop_asked,
                        bool(p.max_minutes) and seconds >= 60 * p.max_minutes)
                    if diverged:
                        status = _diverged(p, epoch, _first_bad(losses, norms, synced, step), ckpt_path)
                        break
                    synced = step
                    syncs.append((this_call, time.time() - clock))  # the monitor's pauses left out
                    bar.set_postfix(loss=f"{losses[max(0, step - p.log_every):step].mean().item():.3g}", lr=f"{lr:.3g}")
                    bar.update(step - bar.n)
                    if snapshot or late:
                        interval = dist.mean(losses[since:step])
                        paused = time.time()
                        if dist.main:
                            curve.append(_snapshot(p, done(), per_epoch, lr, interval, norms[since:step],
                                                   elapsed + paused - clock, monitor(model)))
                        clock += time.time() - paused  # the monitor's time is not training time
                        since = step
                    if stopping:
                        checkpoint()
                        bar.close()
                        return {"status": "interrupted", "epoch": epoch, "step": step, "interrupted": True}
                    if finished or late:
                        break
                    if save:
                        checkpoint()
                bar.close()
                if status != "completed":
                    break
                if step == per_epoch:
                    epoch, step, since = epoch + 1, 0, 0
                checkpoint()
        if status != "completed" and this_call:  # diverged now: the run ends as its last good checkpoint holds it
            good = read_checkpoint(ckpt_path)      # (weights, extent, curve), and that checkpoint says so
            model.load_state_dict(good["model"])
            recipe.load_optimizer(optimizer, good["optimizer"])
            epoch, step, curve, since = good["epoch"], good["step"], good["curve"], good["since"]
            losses[since:step], norms[since:step] = good["losses"], good["norms"]
            status += f"; the weights of step {done()} kept"
            if dist.main and step > since:  # the kept weights were not scored when they were saved: scored now
                curve.append(_snapshot(p, done(), per_epoch, recipe.learning_rate(p, done() - 1, per_epoch),
                                       losses[since:step], norms[since:step], good["elapsed"], monitor(model)))
                since = step
            checkpoint()
        made = kept["calls"]  # a completed run ends with a checkpoint, so a later call reads the same record
        planned = (plan or p).last_step(per_epoch)
        last = made[-1]  # where the run last trained (a call that found it finished trained nothing)
        summary = {"status": status, "epochs_done": round(done() / per_epoch, 4), "steps_done": done(),
                   "steps_per_epoch": per_epoch, "steps_planned": planned,
                   "epochs_planned": round(planned / per_epoch, 4),
                   "ms_per_step": max(made, key=lambda c: c["steps"])["ms_per_step"],
                   "seconds_wall": round(sum(c["seconds"] for c in made), 1),
                   "seconds_training": round(kept["elapsed"], 1), "calls": made,
                   "device": last["device"], "processes": last["processes"], "precision": last["precision"],
                   "code_sha256": code_hash(__name__), **(label or {}),
                   "model": {**model_state(model)["config"], "arch": p.arch,
                             "parameters": sum(t.numel() for t in model.parameters()), "depth": model.depth},
                   "train": asdict(p), "recipe_changes": p.recipe_changes(), "curve": curve}
        if dist.main:
            weights = model_state(model)
            if not all(torch.isfinite(t).all() for t in weights["model"].values()):
                raise RlcscError(f"the weights kept in {ckpt_path} are not finite; no model written")
            extent = {k: summary[k] for k in ("steps_done", "epochs_done", "epochs_planned")}
            model_file = {**weights, "train": asdict(p), "status": status, **extent, **(label or {})}
            all_atomically({  # all or none: an interruption here leaves no model beside another run's record
                out / "model.pt": torch_writer(model_file), out / "train.json": text_writer(json_text(summary)),
                out / "train_metrics.json": text_writer(json_text(metrics(summary)))})
        signalled = dist.agree(bool(interrupted))[0]  # after the last host sync too: every process says so
    finally:  # the handlers stay until the run's files are written: a signal there ends the call after them
        if bar is not None:
            bar.close()
        interrupted.restore()
        dist.close()
    return {**summary, "interrupted": True} if signalled else summary  # the run written whole, and the call to end


def metrics(summary: dict) -> dict:
    """What DVC shows of a training run: its status, extent, speed and last score."""
    last = summary["curve"][-1] if summary["curve"] else {}
    key = f"{summary['train']['eval_dataset'].lower()}_x{summary['train']['eval_scale']}"
    return {"status": summary["status"], "epochs_done": summary["epochs_done"], "steps_done": summary["steps_done"],
            "ms_per_step": summary["ms_per_step"], f"{key}_psnr": last.get("psnr"), f"{key}_ssim": last.get("ssim")}


def _snapshot(p: TrainParams, step: int, per_epoch: int, lr: float, losses: torch.Tensor, norms: torch.Tensor,
              seconds: float, scores: dict) -> dict:
    """One point of the curve: where, the interval's loss and gradient norms, and the monitor's scores."""
    norms = norms.float().cpu()
    clipped = None if p.clip is None else round(float((norms > p.clip).float().mean()), 4)
    return {"step": step, "epoch": round(step / per_epoch, 4), "seconds": round(seconds, 1), "lr": lr,
            "loss": float(losses.mean()), "grad_norm_median": float(norms.median()),
            "grad_norm_max": float(norms.max()), "clipped_fraction": clipped, "steps": len(norms), **scores}


def _ms_per_step(syncs: list[tuple[int, float]]) -> float | None:
    """Training speed between host syncs (timed without the monitor's evaluations), leaving out the first tenth of
    the run (warm-up, compilation) and the intervals with a checkpoint's write (the median interval)."""
    pairs = [(s1 - s0, t1 - t0) for (s0, t0), (s1, t1) in pairwise(syncs) if s1 > s0]
    if not pairs:
        return None
    warm = syncs[-1][0] / 10
    kept = [(n, t) for (n, t), (s0, _) in zip(pairs, syncs) if s0 >= warm] or pairs
    rates = sorted(1000 * t / n for n, t in kept)
    return round(rates[len(rates) // 2], 3)


def foreign(ckpt: dict, p: TrainParams, pairs: dict) -> list[str]:
    """What makes checkpoint `ckpt` another run's than `p`'s on the training pairs `pairs` (their `made_by`):
    the params of `identity` that differ, "training pairs" when other params made its pairs (a checkpoint
    written before checkpoints held them differs in its training code anyway), and "training code" when the
    code that wrote it is not this (`code_hash`), or "params this code refuses" when older code allowed a value this
    code does not (its training code differs too). Empty when `p` resumes it."""
    try:
        theirs = TrainParams.known(ckpt.get("config", {}))
    except RlcscError as err:
        return [f"params this code refuses ({err})"]
    differ = sorted(k for k, v in p.identity().items() if theirs.identity().get(k) != v)
    differ += ["training pairs"] if ckpt.get("pairs", pairs) != pairs else []  # unknown to an older checkpoint
    return differ + (["training code"] if ckpt.get("code") != code_hash(__name__) else [])


def read_checkpoint(path: Path) -> dict:
    """A checkpoint written by `rlcsc train`, or one clear error: a damaged or foreign file is never
    trained over."""
    ckpt = load_torch(path)
    if not isinstance(ckpt, dict) or not {"model", "optimizer", "calls", "code"} <= set(ckpt):
        raise RlcscError(f"{path} is not a readable checkpoint of `rlcsc train`; move it away to train afresh")
    return ckpt


def _resume(path: Path, p: TrainParams, pairs: dict, model: nn.Module, optimizer: torch.optim.Optimizer,
            per_epoch: int) -> dict:
    """Load `path` into model and optimizer if it belongs to this run (same `identity`, training pairs made
    by the same params, and the same training code: `foreign`); else a fresh start."""
    fresh = {"epoch": 0, "step": 0, "curve": [], "since": 0, "losses": torch.zeros(0), "norms": torch.zeros(0),
             "elapsed": 0.0, "calls": [], "status": "completed", "fresh": True}
    if not path.exists():
        return fresh
    ckpt = read_checkpoint(path)
    differ = foreign(ckpt, p, pairs)
    if differ:
        tqdm.write(f"{path} belongs to a run with other {', '.join(differ)}: starting afresh", file=sys.stderr)
        return fresh
    model.load_state_dict(ckpt["model"])
    recipe.load_optimizer(optimizer, ckpt["optimizer"])
    status = ckpt.get("status", "completed")
    where = f"epoch {ckpt['epoch'] + 1}, step {ckpt['step']} of {per_epoch}"
    tqdm.write(f"resuming from {path}: {where}" if status == "completed" else f"{path}: the run {status}",
               file=sys.stderr)
    return {**{k: ckpt[k] for k in fresh if k not in ("status", "fresh")}, "status": status, "fresh": False}


def _finite(model: nn.Module) -> torch.Tensor:
    """Whether every weight of `model` is finite (on the device: read at the next host sync)."""
    return torch.stack([t.isfinite().all() for t in model.parameters()]).all()


def _first_bad(losses: torch.Tensor, norms: torch.Tensor, synced: int, step: int) -> int:
    """The step (1-based within its epoch) of the first non-finite loss or gradient norm after the host sync at
    `synced`; `step` when none (a weight that overflowed, or another process's loss)."""
    bad = (~(torch.isfinite(losses[synced:step]) & torch.isfinite(norms[synced:step]))).nonzero()
    return synced + int(bad[0]) + 1 if len(bad) else step


def _diverged(p: TrainParams, epoch: int, step: int, ckpt_path: Path) -> str:
    """A non-finite loss, gradient norm or weight: a clear error, or (on_divergence: record) a recorded result."""
    where = f"epoch {epoch + 1}, step {step}"
    if p.on_divergence == "fail":
        raise RlcscError(f"training became non-finite (its loss, gradients or weights) at {where}; last good "
                         f"checkpoint kept at {ckpt_path}")
    tqdm.write(f"training became non-finite at {where}: recorded, training stopped", file=sys.stderr)
    return f"diverged at {where}"


class _InterruptFlag:
    """True once SIGINT or SIGTERM arrived; the loop then checkpoints and returns at its next host sync (after the
    last one, once the run's files are written)."""

    def __init__(self) -> None:
        self.hit = False
        self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}

    def _handle(self, signum, frame) -> None:
        self.hit = True

    def __bool__(self) -> bool:
        return self.hit

    def restore(self) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)
