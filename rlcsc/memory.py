"""Table 4: the training memory of RL-CSC and DRRN at the paper's batch and patch sizes.

Counted on any machine in one framework: the bytes autograd saves for backward during a forward pass
on the meta device (nothing is computed), plus parameters, gradients and the momentum buffer; and,
with a GPU, the CUDA allocator's peak during real fp32 SGD steps. The `memory` stage writes both
to `results/table4.json`, which the Table 4 page reads.
"""

from __future__ import annotations

import torch

from rlcsc.inference import build
from rlcsc.provenance import stamp

TABLE4 = {("RL-CSC", 30): ("rlcsc", {}), ("DRRN", 20): ("drrn", {"units": 9}), ("DRRN", 52): ("drrn", {"units": 25})}
TABLE4_SIZES = ((64, 31), (128, 31), (128, 33))  # (batch, patch)


def count_training_memory(model: torch.nn.Module, batch: int, patch: int) -> dict[str, float]:
    """Training memory of one SGD step in MiB, counted in one framework on any machine.

    Activations: the bytes autograd saves for backward other than the weights (counted with
    saved_tensors_hooks while the forward pass runs on the meta device, so nothing is computed);
    plus parameters, gradients and the momentum buffer (3x the parameter bytes).
    """
    model = model.to("meta")
    params = {id(w) for w in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if id(t) not in params:
            saved[id(t)] = t.numel() * t.element_size()
        return t

    x = torch.zeros(batch, 1, patch, patch, device="meta")
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x).sum()  # kept alive so that no saved tensor's id is reused
    weights = sum(w.numel() * w.element_size() for w in model.parameters())
    del out
    return {"activations": sum(saved.values()) / 2**20, "weights+grads+momentum": 3 * weights / 2**20,
            "total": (sum(saved.values()) + 3 * weights) / 2**20}


def cuda_peak_training_memory(model: torch.nn.Module, batch: int, patch: int) -> float | None:
    """Peak CUDA memory (MiB) of an fp32 SGD training step, or None without a GPU."""
    if not torch.cuda.is_available():
        return None
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    model = model.cuda()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.rand(batch, 1, patch, patch, device="cuda")
    for _ in range(2):  # the second step holds the momentum buffers too
        optimizer.zero_grad()
        (model(x) - x).square().sum().backward()
        optimizer.step()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() / 2**20
    del model, optimizer, x
    torch.cuda.empty_cache()
    return peak


def training_memory() -> dict:
    """Table 4's settings: counted memory on any machine, and the CUDA peak when there is a GPU; with the GPU,
    PyTorch, commit and date it was measured with."""
    rows = []
    for (name, layers), (arch, config) in TABLE4.items():
        for batch, patch in TABLE4_SIZES:
            counted = count_training_memory(build(arch, config), batch, patch)
            rows.append({"model": name, "layers": layers, "batch": batch, "patch": patch,
                         "counted_activations_mib": counted["activations"], "counted_total_mib": counted["total"],
                         "cuda_peak_mib": cuda_peak_training_memory(build(arch, config), batch, patch)})
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return {"gpu": gpu, "torch": torch.__version__, **stamp(), "rows": rows}
