"""Training (Section 5.2): SGD on the multi-scale patch set with adjustable gradient clipping.

Loss (eq. 14): squared error summed over the pixels of each patch, averaged over the batch.
SGD, momentum 0.9, weight decay 1e-4, batch 128; learning rate 0.1, divided by 10 every 10
epochs; 35 epochs. Gradients are clipped with theta = 0.4 (Section 5.2) by their global L2 norm
(`clip_grad_norm_`), as the PyTorch VDSR training code that RL-CSC's PyTorch implementation and its
DRRN comparison (Caffe's `clip_gradients`) build on. VDSR's paper describes an element-wise clip to
[-theta/lr, theta/lr] instead; with the loss of eq. 14 and lr = 0.1 that variant lets every weight
move by up to 0.4 per step, and the network diverged at once when trained that way (see the
deviations page), so the norm clip is the one implemented.

After every epoch the model is scored on Set5 x3 (PSNR/SSIM, the evaluation protocol) and logged
with dvclive. Checkpoints are written atomically every `checkpoint_every` steps, at every epoch's
end and on interruption; a run restarted with the same config resumes from the last one and ends
with the same weights as an uninterrupted run (the data order is a function of seed and epoch).
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from rlcsc.data.download import load_manifest
from rlcsc.data.patches import PatchSet
from rlcsc.errors import RlcscError
from rlcsc.evaluate import ilr_pair, score
from rlcsc.inference import apply, build, model_state

PRECISIONS = ("bf16", "tf32", "fp32")


@dataclass(frozen=True)
class TrainParams:
    """Block `train` of params.yaml (then the experiment's and the budget's overrides)."""

    arch: str = "rlcsc"  # rlcsc | drrn
    recursions: int = 25  # K (RL-CSC)
    features: int = 128  # n (RL-CSC), filters (DRRN)
    codes: int = 256  # m (RL-CSC)
    units: int = 9  # U (DRRN)
    residual: bool = True  # global residual learning (eq. 12; Table 3)
    width: float = 1.0  # multiplies features and codes (the quick budget's miniature)
    zero_last: bool = False  # start the last layer (H) at zero, i.e. from the interpolated input
    pairs: int = 0  # train on the first `pairs` of the shuffled set (0 = all)
    epochs: int = 35
    batch: int = 128
    lr: float = 0.1
    lr_step: int = 10  # epochs between divisions of the learning rate by 10
    momentum: float = 0.9
    weight_decay: float = 1e-4
    clip: float = 0.4  # theta: the gradients' global L2 norm is clipped to it
    eval_dataset: str = "Set5"
    eval_scale: int = 3
    checkpoint_every: int = 1000  # steps
    log_every: int = 50  # steps between host syncs (loss, divergence check, progress)
    on_divergence: str = "fail"  # fail | record (a run the paper expects to fail is a result)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "bf16"  # bf16 | tf32 | fp32 (CUDA; the CPU always computes in fp32)
    compile: bool = True  # torch.compile the model (CUDA only)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise RlcscError(f"train.precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.on_divergence not in ("fail", "record"):
            raise RlcscError(f"train.on_divergence must be fail or record, got {self.on_divergence!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise RlcscError(f"train.device must be auto, cpu or cuda, got {self.device!r}")
        if min(self.epochs, self.batch, self.checkpoint_every, self.log_every, self.lr_step) < 1:
            raise RlcscError("train.epochs, batch, checkpoint_every, log_every and lr_step must be >= 1")

    def model_config(self) -> dict:
        """Config fields of the network this run trains (widths scaled by `width`)."""
        n = max(1, round(self.features * self.width))
        if self.arch == "drrn":
            return {"units": self.units, "features": n}
        m = max(1, round(self.codes * self.width))
        return {"recursions": self.recursions, "features": n, "codes": m, "residual": self.residual}


def learning_rate(p: TrainParams, epoch: int) -> float:
    """lr of the 0-based `epoch`: divided by 10 every `lr_step` epochs."""
    return p.lr * 0.1 ** (epoch // p.lr_step)


def pick_device(name: str) -> torch.device:
    """`auto`: CUDA when present, else CPU; asking for CUDA without one is a clear error."""
    if name == "cuda" and not torch.cuda.is_available():
        raise RlcscError("train.device is cuda but no CUDA GPU is available (use auto or cpu)")
    return torch.device("cuda" if name != "cpu" and torch.cuda.is_available() else "cpu")


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order in which epoch `epoch` visits the `n` training pairs (independent of resumption)."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def save_atomic(obj: dict, path: Path) -> None:
    """torch.save to a temporary name, then rename: a crash never leaves a half-written file."""
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


class Distributed:
    """Rank and world size under `torchrun` (one process otherwise); gloo on CPU, nccl on CUDA."""

    def __init__(self, device: torch.device) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        if self.world > 1:
            torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: nn.Module) -> nn.Module:
        return nn.parallel.DistributedDataParallel(model) if self.world > 1 else model

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def close(self) -> None:
        if self.world > 1:
            torch.distributed.destroy_process_group()


class Batches:
    """The training pairs the loop draws from: the first `n` of the shuffled set, in file order.

    On a CUDA device with room for them they are copied there once (as stored: labels uint8)
    and each batch is gathered on the device; otherwise batches are gathered from the memory map on
    the host. Both paths give the same batches for the same positions.
    """

    def __init__(self, data: PatchSet, n: int, device: torch.device) -> None:
        self.rows = np.sort(data.keep[:n])
        self.data, self.device = data, device
        need = n * data.inputs[0].nbytes + n * data.labels[0].nbytes
        self.on_device = device.type == "cuda" and 2 * need < torch.cuda.mem_get_info(device)[0]
        if self.on_device:
            dtype = torch.from_numpy(np.asarray(data.inputs[:1])).dtype  # as stored: float16 or float32
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
    """Set5 x3 (by default) scored by the evaluation protocol after every epoch."""

    def __init__(self, raw: Path, dataset: str, scale: int) -> None:
        self.scale = scale
        self.pairs = [ilr_pair(raw / e.dataset / e.file, scale) for e in load_manifest(datasets=[dataset])]

    def __call__(self, model: nn.Module) -> dict[str, float]:
        was_training = model.training
        model.eval()
        scores = [score(hr, apply(model, ilr), self.scale, with_ifc=False) for hr, ilr in self.pairs]
        model.train(was_training)
        psnr, ssim, _ = np.mean(scores, axis=0)
        return {"psnr": float(psnr), "ssim": float(ssim)}


def train(p: TrainParams, patches: Path, raw: Path, out: Path, stop_after: int | None = None) -> dict:
    """Train into `out` (model.pt, checkpoint.pt, train.json, live/); resume if a checkpoint exists.

    `stop_after` ends the run after that many steps of this call, as an interruption would
    (checkpoint written, no model.pt); it exists to test resumption.
    """
    device = pick_device(p.device)
    dist = Distributed(device)
    if p.batch % dist.world:
        raise RlcscError(f"train.batch {p.batch} is not divisible by the {dist.world} processes")
    torch.manual_seed(p.seed)
    data = PatchSet.open(patches)
    n = min(p.pairs, len(data)) if p.pairs else len(data)
    steps_per_epoch = n // p.batch
    if steps_per_epoch == 0:
        raise RlcscError(f"{n} training pairs make no batch of {p.batch}")

    model = build(p.arch, p.model_config())
    if p.zero_last:
        model.zero_last_layer()
    model = model.to(device)
    cuda = device.type == "cuda"
    if cuda:
        model = model.to(memory_format=torch.channels_last)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = p.precision != "fp32"
    optimizer = torch.optim.SGD(model.parameters(), lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay,
                                **({"fused": True} if cuda else {"foreach": True}))
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "checkpoint.pt"
    state = _resume(ckpt_path, p, model, optimizer)
    epoch, step, history = state["epoch"], state["step"], state["history"]
    net = dist.wrap(model)
    forward = torch.compile(net) if (p.compile and cuda) else net
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda and p.precision == "bf16")
    monitor = Monitor(raw, p.eval_dataset, p.eval_scale) if dist.main else None
    batches = Batches(data, n, device)

    def checkpoint() -> None:
        if dist.main:
            save_atomic({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
                         "step": step, "history": history, "config": asdict(p)}, ckpt_path)

    live = _live(out, resume=bool(history)) if dist.main else None
    status, done_steps, start = "completed", 0, time.time()
    syncs: list[tuple[int, float]] = []  # (steps done in this run, seconds) at each host sync
    interrupted = _InterruptFlag()
    bad = torch.zeros((), dtype=torch.bool, device=device)
    try:
        while epoch < p.epochs:
            lr = learning_rate(p, epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
            order = batches.order(p.seed, epoch)
            bar = tqdm(total=steps_per_epoch, initial=step, desc=f"epoch {epoch + 1}/{p.epochs}",
                       disable=not dist.main, unit="step")
            running = torch.zeros((), device=device)
            while step < steps_per_epoch:
                batch = order[step * p.batch : (step + 1) * p.batch][dist.rank :: dist.world]
                x, y = batches(batch)
                if cuda:
                    x, y = x.contiguous(memory_format=torch.channels_last), y.contiguous(memory_format=torch.channels_last)
                with autocast:
                    pred = forward(x)
                loss = (pred.float() - y).square().sum(dim=(1, 2, 3)).mean()  # eq. 14
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), p.clip, foreach=True)  # theta (Section 5.2)
                optimizer.step()
                bad |= ~torch.isfinite(loss.detach())
                running += loss.detach()
                step += 1
                done_steps += 1
                sync = step % p.log_every == 0 or step == steps_per_epoch
                save = step % p.checkpoint_every == 0
                stop = bool(interrupted) or (stop_after is not None and done_steps >= stop_after)
                if not (sync or save or stop):
                    continue
                if bad.item():  # the only host syncs: here, every log_every steps and at checkpoints
                    status = _diverged(p, epoch, step, ckpt_path)
                    break
                if sync:
                    syncs.append((done_steps, time.time()))
                    bar.set_postfix(loss=f"{running.item() / (step - bar.n):.3g}", lr=f"{lr:g}")
                    running.zero_()
                    bar.update(step - bar.n)
                if save or stop:
                    checkpoint()
                if stop:
                    bar.close()
                    return {"status": "interrupted", "epoch": epoch, "step": step}
            bar.close()
            if status != "completed":
                break
            if dist.main:
                scores = monitor(model)
                history.append({"epoch": epoch + 1, "lr": lr, **scores})
                for k, v in scores.items():
                    live.log_metric(f"{p.eval_dataset.lower()}_x{p.eval_scale}_{k}", v)
                live.next_step()
            epoch, step = epoch + 1, 0
            checkpoint()
            dist.barrier()
    finally:
        interrupted.restore()
        if live is not None:
            live.end()
        dist.close()
    summary = {"status": status, "epochs_completed": len(history), "history": history,
               "model_parameters": sum(t.numel() for t in model.parameters()), "depth": model.depth,
               "seconds_this_run": round(time.time() - start, 1), "ms_per_step": _ms_per_step(syncs),
               "device": str(device), "config": asdict(p)}
    if dist.main:
        if status != "completed" and ckpt_path.exists():  # diverged: the last good checkpoint is the model
            model.load_state_dict(torch.load(ckpt_path, weights_only=True)["model"])
        save_atomic(model_state(model), out / "model.pt")
        (out / "train.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _ms_per_step(syncs: list[tuple[int, float]]) -> float | None:
    """Training speed between host syncs, leaving out the first tenth of the run (warm-up,
    compilation) and the pauses for the per-epoch evaluation."""
    pairs = [(s1 - s0, t1 - t0) for (s0, t0), (s1, t1) in zip(syncs, syncs[1:]) if s1 > s0]
    if not syncs or not pairs:
        return None
    warm = syncs[-1][0] / 10
    kept = [(n, t) for (n, t), (s0, _) in zip(pairs, syncs) if s0 >= warm] or pairs
    rates = sorted(1000 * t / n for n, t in kept)
    return round(rates[len(rates) // 2], 3)


def _resume(path: Path, p: TrainParams, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Load `path` into model and optimizer if it belongs to this config; else a fresh start."""
    fresh = {"epoch": 0, "step": 0, "history": []}
    if not path.exists():
        return fresh
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if ckpt.get("config") != asdict(p):
        tqdm.write(f"{path} was written with other params: starting afresh")
        return fresh
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    tqdm.write(f"resuming from {path}: epoch {ckpt['epoch'] + 1}, step {ckpt['step']}")
    return {"epoch": ckpt["epoch"], "step": ckpt["step"], "history": ckpt["history"]}


def _diverged(p: TrainParams, epoch: int, step: int, ckpt_path: Path) -> str:
    """A non-finite loss: a clear error, or (on_divergence: record) a recorded result."""
    where = f"epoch {epoch + 1}, step {step}"
    if p.on_divergence == "fail":
        raise RlcscError(f"loss became non-finite at {where}; last good checkpoint kept at {ckpt_path}")
    tqdm.write(f"loss became non-finite at {where}: recorded, training stopped")
    return f"diverged at {where}"


def _live(out: Path, resume: bool):
    from dvclive import Live

    return Live(str(out / "live"), dvcyaml=None, resume=resume, save_dvc_exp=False)


class _InterruptFlag:
    """True once SIGINT or SIGTERM arrived; the loop then checkpoints and returns."""

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

