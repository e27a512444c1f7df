"""Shared fixtures: the read-only data mirror of the benchmark images."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rlcsc.data.download import MIRROR_ENV

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def mirror() -> Path:
    """$RLCSC_DATA_MIRROR, else shared/datasets in or beside the repository; skip when absent."""
    if os.environ.get(MIRROR_ENV):
        candidates = [Path(os.environ[MIRROR_ENV])]
    else:
        candidates = [root / "shared" / "datasets" for root in (REPO, REPO.parent)]
    for path in candidates:
        if (path / "Set5").is_dir():
            return path
    pytest.skip(f"no data mirror found (set {MIRROR_ENV}; tried {', '.join(map(str, candidates))})")
