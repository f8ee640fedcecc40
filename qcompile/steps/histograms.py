"""Activation histograms collected batch by batch, with the result of one-shot collection.

ORT's histogram calibrators either hold every intermediate tensor of every sample (one ``collect_data`` call:
tens of GB on ResNet-50) or, fed batch by batch, re-bin their histogram each time a batch widens the range, so
the result depends on how samples were grouped. Here each tensor's values are counted on a fine grid of
power-of-two bin width ``w`` (bin ``j`` holds ``[j*w, (j+1)*w)``): ``x / w`` is exact in float32, so a value
always lands in the same bin, and when a batch widens the range the grid coarsens by merging whole bins.
The final fine histogram is therefore the one a single pass over all samples would count, whatever the batch
size or memory budget. At the end it is re-binned to the histogram ORT's one-shot collection builds (its bin
count over ``[-t, t]``, ``t`` the largest magnitude), and ORT's own threshold rules run on that.
"""

from __future__ import annotations

import math
from typing import Any

HALF_BINS = 1 << 14  # fine bins each side of zero: 16-32 fine bins per bin of a 2048-bin one-shot histogram


class FineHistogram:
    """Counts of one tensor's values on a power-of-two grid, plus its exact min and max."""

    def __init__(self, track_abs_min: bool = False):
        self.counts = None  # int64[2 * HALF_BINS]: bin j holds [(j - HALF_BINS) * w, (j - HALF_BINS + 1) * w)
        self.exp: int | None = None  # w = 2 ** exp
        self.min = math.inf
        self.max = -math.inf
        self.abs_min = math.inf
        self.track_abs_min = track_abs_min

    @property
    def total(self) -> int:
        """How many values were counted."""
        return 0 if self.counts is None else int(self.counts.sum())

    def update(self, x, scratch: dict[str, Any]) -> None:
        """Count the values of ``x`` (any shape; NaN ignored, as ORT's nanmin/nanmax do)."""
        import numpy as np

        flat = x.reshape(-1)
        if flat.size == 0:
            return
        lo, hi = float(np.fmin.reduce(flat)), float(np.fmax.reduce(flat))
        if math.isnan(lo):  # every value NaN
            return
        self.min, self.max = min(self.min, lo), max(self.max, hi)
        absmax = max(-self.min, self.max)
        exp = _exponent(absmax)
        if self.counts is None:
            self.counts, self.exp = np.zeros(2 * HALF_BINS, np.int64), exp
        elif exp > self.exp:
            self.counts = _coarsen(self.counts, exp - self.exp)
            self.exp = exp
        y = _buffer(scratch, "f", flat.size, np.float32)
        np.multiply(flat, np.float32(2.0 ** -self.exp), out=y)  # exact: a power of two
        if self.track_abs_min:
            self.abs_min = min(self.abs_min, float(np.fmin.reduce(np.abs(flat))))
        np.floor(y, out=y)
        np.add(y, np.float32(HALF_BINS), out=y)  # integers below 2**24: exact in float32
        idx = _buffer(scratch, "i", flat.size, np.intp)
        np.copyto(idx, y, casting="unsafe")
        try:
            # +1: the largest magnitude itself lands one past the last bin; it is folded back below.
            counts = np.bincount(idx, minlength=2 * HALF_BINS + 1)
        except ValueError:  # NaN values cast to a negative index: count the others
            keep = ~np.isnan(y)
            counts = np.bincount(idx[keep], minlength=2 * HALF_BINS + 1)
        counts[-2] += counts[-1]
        self.counts += counts[:-1]

    def relu(self) -> FineHistogram:
        """The histogram of ``max(x, 0)`` over the values counted here, without counting them again.

        Exact on this grid: every negative bin folds into the bin holding zero, and the extremes follow. The grid
        may be coarser than counting the Relu's output directly would pick (the input's negative tail sets it),
        still a power-of-two grid independent of batching.
        """
        out = FineHistogram(self.track_abs_min)
        if self.counts is None:
            return out
        out.counts, out.exp = self.counts.copy(), self.exp
        out.counts[HALF_BINS] += out.counts[:HALF_BINS].sum()
        out.counts[:HALF_BINS] = 0
        out.min, out.max = max(self.min, 0.0), max(self.max, 0.0)
        out.abs_min = self.abs_min if self.min > 0 else 0.0
        return out

    # ------------------------------------------------------------------ the one-shot histograms
    def signed(self, bins: int):
        """(hist, edges, min, max, threshold) as ORT's one-shot ``collect_value`` builds them."""
        import numpy as np

        lo, hi = np.float32(self.min), np.float32(self.max)
        t = np.array(max(abs(lo), abs(hi)), dtype=np.float32)
        edges = np.histogram_bin_edges(np.zeros(1, np.float32), bins=bins, range=(-t, t))
        fine_edges = (np.arange(2 * HALF_BINS + 1, dtype=np.float64) - HALF_BINS) * 2.0 ** self.exp
        return _rebin(self.counts, fine_edges, edges), edges, lo, hi, t

    def absolute(self, bins: int):
        """(hist, edges, min, max) as ORT's one-shot ``collect_absolute_value`` builds them (|x|, symmetric)."""
        import numpy as np

        folded = self.counts[HALF_BINS:] + self.counts[:HALF_BINS][::-1]
        fine_edges = np.arange(HALF_BINS + 1, dtype=np.float64) * 2.0 ** self.exp
        amin, amax = np.float32(self.abs_min), np.float32(max(abs(self.min), abs(self.max)))
        edges = np.histogram_bin_edges(np.array([amin, amax], np.float32), bins=bins).astype(np.float32)
        return _rebin(folded, fine_edges, edges), edges, np.float32(self.min), np.float32(self.max)


def _exponent(absmax: float) -> int:
    """The smallest power-of-two bin width with ``absmax`` inside ``HALF_BINS`` bins."""
    if absmax <= 0 or not math.isfinite(absmax):
        return -126 if absmax <= 0 else 127
    return max(-126, math.ceil(math.log2(absmax / HALF_BINS)))


def _coarsen(counts, steps: int):
    """Merge bins ``2 ** steps`` at a time around zero (exact: old edges include the new ones)."""
    import numpy as np

    j = np.arange(counts.size) - HALF_BINS
    return np.bincount((j >> min(steps, 62)) + HALF_BINS, weights=counts, minlength=counts.size).astype(np.int64)


def _rebin(counts, fine_edges, edges):
    """Counts on ``edges`` from counts on ``fine_edges``: a fine bin cut by an edge is shared in proportion."""
    import numpy as np

    cum = np.concatenate([[0.0], np.cumsum(counts, dtype=np.float64)])
    at = np.rint(np.interp(edges.astype(np.float64), fine_edges, cum))
    at[0], at[-1] = 0.0, cum[-1]  # every value lies within [edges[0], edges[-1]]: both are the data's extremes
    return np.diff(at).astype(np.int64)


def _buffer(scratch: dict[str, Any], name: str, size: int, dtype):
    """A reusable scratch array of at least ``size`` items: fresh pages per batch cost more than the counting."""
    import numpy as np

    buf = scratch.get(name)
    if buf is None or buf.size < size:
        buf = scratch[name] = np.empty(size, dtype)
    return buf[:size]


def entropy_threshold(hist, edges, lo, hi, quantized_bins: int):
    """The threshold of ORT's ``get_entropy_threshold`` (TensorRT's entropy calibration: the cut whose
    ``quantized_bins``-level quantization loses the least KL divergence), every candidate cut at once.

    ORT loops over candidates and, inside each, over quantized bins in Python (half a second per tensor at
    2048 bins); here each candidate is a row of one matrix. The reference and candidate distributions are
    built exactly as ORT builds them (outliers folded into the end bins, integer truncation of the expanded
    bins, the same smoothing); the divergence is summed in float64 where ORT uses float32, so a near-tie
    between two cuts may resolve to the neighbouring one.
    """
    import numpy as np

    h = np.asarray(hist, dtype=np.int64)
    n, zero = h.size, h.size // 2
    i = np.arange(quantized_bins // 2, zero + 1)
    start, end = zero - i, np.minimum(zero + i + 1, n)
    below = np.concatenate([[0], np.cumsum(h)])
    nonzero_below = np.concatenate([[0], np.cumsum(h != 0)])
    # Rows of similar length together (candidates grow by two bins each), so the matrices stay narrow.
    div = np.concatenate([_divergences(h, below, nonzero_below, start[c:c + 96], end[c:c + 96], quantized_bins)
                          for c in range(0, i.size, 96)])
    best = int(np.argmin(div))
    lo_t, hi_t = edges[start[best]], edges[end[best]]
    if lo_t < lo:
        lo_t = lo
    if hi_t > hi:
        hi_t = hi
    return np.asarray(lo_t, dtype=edges.dtype), np.asarray(hi_t, dtype=edges.dtype)


def _divergences(h, below, nonzero_below, start, end, nq: int):
    """KL divergence of each candidate cut ``[start, end)`` (one row each), as ORT's loop computes it."""
    import numpy as np

    length = end - start
    merged = length // nq
    body = nq * merged
    k = np.arange(nq)
    first = start[:, None] + k[None, :] * merged[:, None]  # each quantized bin's first fine bin
    last = first + merged[:, None]
    upto = last.copy()
    upto[:, -1] = end  # the last quantized bin also takes the remainder past nq * merged
    qbins = below[upto] - below[first]
    norm = nonzero_below[last] - nonzero_below[first]
    # p (the reference) is the slice with the outliers added to its end bins, which may make them non-zero.
    p_first = h[start] + below[start]
    p_last = h[end - 1] + (below[-1] - below[end])
    rows = np.arange(start.size)
    norm[:, 0] += (p_first != 0).astype(np.int64) - (h[start] != 0)
    in_body = (length - 1) < body
    last_bin = np.minimum((length - 1) // merged, nq - 1)
    np.add.at(norm, (rows[in_body], last_bin[in_body]),
              ((p_last != 0).astype(np.int64) - (h[end - 1] != 0))[in_body])
    with np.errstate(divide="ignore", invalid="ignore"):
        expanded = np.where(norm != 0, qbins / np.where(norm == 0, 1, norm), 0.0).astype(np.int64)  # ORT truncates
    cols = np.arange(int(length.max()))
    valid = cols[None, :] < length[:, None]
    p = np.where(valid, h[np.minimum(start[:, None] + cols[None, :], h.size - 1)], 0)
    p[rows, 0] = p_first
    p[rows, length - 1] = p_last
    q = np.take_along_axis(expanded, np.minimum(cols[None, :] // merged[:, None], nq - 1), axis=1)
    q = np.where(cols[None, :] < body[:, None], q, 0)
    # From here on ORT works in float32, where near-equal divergences differ by rounding alone: the smoothing is
    # elementwise (the same on a matrix row as on ORT's array) and each sum runs over the row's own length, so
    # rounding, and with it the chosen cut, match ORT's.
    ps, ok_p = _smooth(p, valid, length)
    qs, ok_q = _smooth(q, valid, length)
    ps = ps / np.array([[ps[r, :n].sum()] for r, n in enumerate(length)], dtype=np.float32)
    qs = qs / np.array([[qs[r, :n].sum()] for r, n in enumerate(length)], dtype=np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = ps * np.log(ps / qs)
    div = np.array([terms[r, :n].sum() for r, n in enumerate(length)], dtype=np.float64)
    return np.where(ok_p & ok_q, div, np.inf)


def _smooth(x, valid, length, eps: float = 0.0001):
    """ORT's ``smooth_distribution`` on every row, in float32 as ORT computes it: zeros become ``eps``, taken
    off the non-zero bins. Returns (smoothed rows, False for rows that are all zero)."""
    import numpy as np

    zeros = ((x == 0) & valid).astype(np.float32)
    nonzeros = ((x != 0) & valid).astype(np.float32)
    n_zeros = zeros.sum(axis=1, dtype=np.float32)  # whole numbers below 2**24: exact in any summation order
    n_nonzeros = length - n_zeros
    ok = n_nonzeros > 0
    eps1 = np.where(ok, eps * n_zeros.astype(np.float64) / np.maximum(n_nonzeros, 1), 0.0).astype(np.float32)
    out = x.astype(np.float32) + (np.float32(eps) * zeros + (-eps1)[:, None] * nonzeros)
    out[~valid] = 1.0  # padding past a row's length: never read by the sums, kept finite for the logs
    return out, ok
