"""The optimisation recipe: loss, optimiser and learning-rate schedule.

The paper's (Section 5.2): the loss of eq. 14 (squared error summed over the pixels of each patch,
averaged over the batch), SGD with momentum 0.9 and weight decay 1e-4, learning rate 0.1 divided by
10 every 10 epochs, gradients clipped with theta = 0.4 ("to [-theta, theta]", read here as their global L2
norm clipped to 0.4: the deviations page gives the reasons). A budget may choose another
(`loss`, `optimizer`, `schedule`, `warmup`, `clip` in `params.yaml`); the deviations page lists
every choice that differs from the paper's.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from rlcsc.train import TrainParams


def loss(p: TrainParams, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Eq. 14 (`l2`): the squared error summed over each patch, averaged over the batch; `l1`: the
    absolute error, likewise."""
    err = pred - target
    per_patch = err.square() if p.loss == "l2" else err.abs()
    return per_patch.sum(dim=(1, 2, 3)).mean()


def optimizer(p: TrainParams, params: Iterable[torch.Tensor], device: torch.device) -> torch.optim.Optimizer:
    """SGD with momentum (the paper), or Adam / AdamW with betas (0.9, 0.999); fused kernels on CUDA."""
    fast = {"fused": True} if device.type == "cuda" else {"foreach": True}
    if p.optimizer == "sgd":
        return torch.optim.SGD(params, lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay, **fast)
    cls = torch.optim.Adam if p.optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=p.lr, weight_decay=p.weight_decay, **fast)


def load_optimizer(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load a checkpoint's optimizer `state` into `optimizer`, which keeps its own kernels (fused on CUDA, foreach
    elsewhere: `optimizer`): a checkpoint made on another device resumes with this device's kernels, not the
    ones it saved (a GPU's fused kernels, which a CPU may not have)."""
    kernels = [{k: group[k] for k in ("fused", "foreach") if k in group} for group in optimizer.param_groups]
    groups = [{**saved, **own} for saved, own in zip(state["param_groups"], kernels, strict=True)]
    optimizer.load_state_dict({**state, "param_groups": groups})


def learning_rate(p: TrainParams, step: int, steps_per_epoch: int) -> float:
    """The learning rate of the 0-based global `step`.

    A linear warm-up over the first `warmup` steps, then `step`: divided by 10 every `lr_step`
    epochs (the paper); `cosine` / `linear`: from `lr` down to zero at the run's planned end
    (`TrainParams.planned_steps`).
    """
    if step < p.warmup:
        return p.lr * (step + 1) / p.warmup
    if p.schedule == "step":
        return p.lr * 0.1 ** (step // steps_per_epoch // p.lr_step)
    total = p.planned_steps(steps_per_epoch)
    t = min(1.0, (step - p.warmup) / max(1, total - p.warmup))
    return p.lr * (0.5 * (1 + math.cos(math.pi * t)) if p.schedule == "cosine" else 1 - t)


def clip(p: TrainParams, params: Iterable[torch.Tensor]) -> torch.Tensor:
    """Clip the gradients' global L2 norm to `clip` (the paper's theta = 0.4 of Section 5.2, read as a norm;
    None: no clipping);
    return the norm before clipping."""
    return torch.nn.utils.clip_grad_norm_(params, p.clip if p.clip is not None else math.inf, foreach=True)
