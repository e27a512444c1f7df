"""Information Fidelity Criterion (Sheikh, Bovik & de Veciana 2005), a port of LIVE's `ifcvec.m`.

The reference and distorted images are decomposed by a steerable pyramid (4 levels, sp5 filters,
reflect1 edges, as `buildSpyr(img, 4, 'sp5Filters', 'reflect1')`); eight subbands (the
horizontal and vertical orientation of every level) are modelled as a Gaussian scale mixture of
3x3 blocks (M = 3). `ifc` returns the summed mutual information divided by the pixel count of the
reference, as the super-resolution benchmark scripts report it (Table 2 of the paper).

Subband numbering follows `ind2wtree`: MATLAB subband k (4, 7, ..., 25) is pyramid level
`4 - ceil((k-1)/6)` (0 = finest), orientation 3 for k = 4, 10, 16, 22 and 0 for k = 7, 13, 19, 25.
"""

from __future__ import annotations

import numpy as np
from pyrtools.pyramids.filters import parse_filter
from scipy.ndimage import correlate

M = 3  # block size of the vector GSM model
LEVELS = 4
ORIENTATIONS = (0, 3)  # the two of the six sp5 orientations that ifcvec.m uses
TOL = 1e-15  # variance below this counts as zero (ifcsub_est_M)
EPS_VV = 1e-10  # added to the distortion variance in the information sum

_FILTERS = parse_filter("sp5_filters", normalize=False)
# The smallest side of which `buildSpyr` builds LEVELS levels (`maxPyrHt`: each level halves the side, and
# the coarsest must still hold the 9x9 lofilt); below it `ifcvec.m` stops with an error.
MIN_SIDE = _FILTERS["lofilt"].shape[0] * 2 ** (LEVELS - 1)


def _corr(img: np.ndarray, filt: np.ndarray, step: int = 1) -> np.ndarray:
    """`corrDn(img, filt, 'reflect1', [step step])` for an odd-sized filter.

    With `step` > 1 only the kept samples are computed: the sum over the step x step phases of the
    reflected image of its valid correlation with the same phase of the filter."""
    if step == 1:
        return correlate(img, filt, mode="mirror")
    padded = np.pad(img, filt.shape[0] // 2, mode="reflect")  # reflect1: mirror about the edge pixel
    h, w = (-(-s // step) for s in img.shape)
    out = np.zeros((h, w))
    for p in range(step):
        for q in range(step):
            f = filt[p::step, q::step]
            r, c = f.shape[0] // 2, f.shape[1] // 2
            out += correlate(padded[p::step, q::step], f, mode="constant")[r : r + h, c : c + w]
    return out


def subbands(img: np.ndarray) -> dict[tuple[int, int], np.ndarray]:
    """The (level, orientation) subbands that IFC uses, of `SteerablePyramidSpace(img, 4, order=5, 'reflect1')`."""
    size = int(np.sqrt(_FILTERS["bfilts"].shape[0]))
    lo = _corr(np.asarray(img, np.float64), _FILTERS["lo0filt"])
    bands = {}
    for level in range(LEVELS):
        for b in ORIENTATIONS:
            bands[level, b] = _corr(lo, _FILTERS["bfilts"][:, b].reshape(size, size).T)
        lo = _corr(lo, _FILTERS["lofilt"], step=2)
    return bands


def window_size(level: int) -> int:
    """Side of the distortion-estimation window: 2^lev + 1 with MATLAB's lev = 4 - level."""
    return 2 ** (LEVELS - level) + 1


def _block_sums(x: np.ndarray, win: int) -> np.ndarray:
    """`corrDn(x, ones(win), 'reflect1', [M M], [2 2], size - 1)`: the win x win sums centred on
    each M x M block, adding only the rows and columns they keep."""
    r, c = win // 2, M // 2
    padded = np.pad(x, r, mode="reflect")
    n, m = (len(range(c, s, M)) for s in x.shape)
    rows = padded[c : c + M * n : M].copy()
    for k in range(1, win):
        rows += padded[c + k : c + k + M * n : M]
    sums = rows[:, c : c + M * m : M].copy()
    for k in range(1, win):
        sums += rows[:, c + k : c + k + M * m : M]
    return sums


def distortion_channel(y: np.ndarray, yn: np.ndarray, win: int) -> tuple[np.ndarray, np.ndarray]:
    """Gain g and noise variance vv per block (`ifcsub_est_M`), fix-ups in the original's order."""
    n = win * win
    mean_x = _block_sums(y, win) / n
    mean_y = _block_sums(yn, win) / n
    cov_xy = _block_sums(y * yn, win) - n * mean_x * mean_y
    ss_x = _block_sums(y * y, win) - n * mean_x**2
    ss_y = _block_sums(yn * yn, win) - n * mean_y**2
    ss_x[ss_x < 0] = 0
    ss_y[ss_y < 0] = 0
    g = cov_xy / (ss_x + TOL)
    vv = (ss_y - g * cov_xy) / n
    flat_x = ss_x < TOL
    g[flat_x] = 0
    vv[flat_x] = ss_y[flat_x]
    flat_y = ss_y < TOL
    g[flat_y] = 0
    vv[flat_y] = 0
    negative = g < 0
    vv[negative] = ss_y[negative]
    g[negative] = 0
    vv[vv <= TOL] = TOL
    return g, vv


def source_field(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """S field per non-overlapping block and the nine eigenvalues of the block covariance (`refparams_vecgsm`)."""
    h, w = y.shape
    centred = np.empty((M * M, h - M + 1, w - M + 1))  # the M x M neighbourhood of every pixel, column-major
    for i in range(M * M):
        j, k = divmod(i, M)
        centred[i] = y[k : h - (M - 1 - k), j : w - (M - 1 - j)]
    centred = centred.reshape(M * M, -1)
    centred -= centred.mean(axis=1, keepdims=True)
    cu = centred @ centred.T / centred.shape[1]
    blocks = np.stack([y[k::M, j::M].ravel() for j in range(M) for k in range(M)])
    ss = np.sum((np.linalg.inv(cu) @ blocks) * blocks, axis=0) / (M * M)
    return ss.reshape(h // M, w // M), np.linalg.eigvalsh(cu)


def ifc(ref: np.ndarray, dist: np.ndarray) -> float:
    """IFC of `dist` against `ref` (both 2-D, 0..255 scale), per pixel of the reference."""
    ref = np.asarray(ref, np.float64)
    dist = np.asarray(dist, np.float64)
    if ref.shape != dist.shape:
        raise ValueError(f"IFC needs images of one shape, got {ref.shape} and {dist.shape}")
    if min(ref.shape) < MIN_SIDE:
        raise ValueError(f"IFC's {LEVELS}-level pyramid needs at least {MIN_SIDE} pixels a side, got {ref.shape}")
    ref_bands, dist_bands = subbands(ref), subbands(dist)
    total = 0.0
    for key, y in ref_bands.items():
        h, w = (s // M * M for s in y.shape)
        y, yn = y[:h, :w], dist_bands[key][:h, :w]
        win = window_size(key[0])
        g, vv = distortion_channel(y, yn, win)
        ss, eigenvalues = source_field(y)
        off = -(-((win - 1) // 2) // M)  # ceil(((win - 1) / 2) / M)
        crop = (slice(off, -off), slice(off, -off))
        g, vv, ss = g[crop], vv[crop], ss[crop]
        ratio = (g * g * ss / (vv + EPS_VV))[..., None] * eigenvalues
        total += float(np.log2(1 + ratio).sum())
    return total / ref.size
