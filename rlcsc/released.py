"""Released weights of the comparison methods, converted into this package's model files.

A method is a row of `weights.tsv` (its file, pinned by SHA-256 and URL) and a converter beside its
network in `rlcsc/models/`. `convert` accepts only a file the manifest pins, byte for byte, and
writes a `model.pt` that `rlcsc evaluate` and `rlcsc sr` read like a trained one; the model file
names its source (file, SHA-256, URL), so every number made with it says which weights made it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from rlcsc.atomic import save_torch
from rlcsc.errors import RlcscError
from rlcsc.inference import model_state
from rlcsc.manifest import WEIGHTS, file_sha256, load_manifest
from rlcsc.models.vdsr import from_matconvnet

# arch -> the function that reads its authors' file
CONVERTERS: dict[str, Callable[[Path], torch.nn.Module]] = {"vdsr": from_matconvnet}


def pinned_source(path: Path) -> dict:
    """The `weights.tsv` row of the file `path` ({group, file, sha256, url}), or one clear error when its
    bytes are not those of any pinned file."""
    if path.is_dir():
        raise RlcscError(f"--weights {path} is a folder; name the weights file in it")
    if not path.exists():
        raise RlcscError(f"weights file not found: {path}; fetch it with `rlcsc download --weights` (into "
                         "data/weights)")
    if not path.is_file():
        raise RlcscError(f"--weights {path} is not a regular file (a device, a pipe or a socket); name the weights "
                         "file")
    digest = file_sha256(path)
    for e in load_manifest(WEIGHTS):
        if e.sha256 == digest:
            return {"group": e.dataset, "file": e.file, "sha256": e.sha256, "url": e.url}
    raise RlcscError(f"{path} (sha256 {digest}) is not a file that {WEIGHTS.name} pins; "
                     "fetch it again with `rlcsc download --weights`")


def convert(arch: str, weights: Path, out: Path) -> dict:
    """Convert the released `weights` of a method of architecture `arch` into the model file `out`;
    return its source."""
    if arch not in CONVERTERS:
        raise RlcscError(f"no converter for architecture {arch!r}; choose from {sorted(CONVERTERS)}")
    source = pinned_source(weights)
    if out.exists() and out.samefile(weights):
        raise RlcscError(f"--out {out} is the --weights file; name another")
    model = CONVERTERS[arch](weights)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_torch({**model_state(model), "source": source}, out)
    return source
