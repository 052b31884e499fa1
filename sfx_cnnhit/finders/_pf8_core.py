"""Compiled kernels of our peakfinder8 (numba); the public wrapper is :mod:`sfx_cnnhit.finders.peakfinder8`.

The arithmetic follows the reference implementations (Cheetah / OM / CrystFEL) bit for bit where it
decides anything: sums are accumulated in float32 in the order those programs visit the pixels, so
thresholds, rounded centroids and filter decisions come out identical to OM's compiled peakfinder8.

Conventions: ``data`` is a float32 ``(ss, fs)`` slab, ``usable`` a uint8 map (1 = pixel may be used),
``bins`` the int32 radial bin ``rint(r)`` of every pixel (0 for unusable pixels).
"""

from __future__ import annotations

import numba
import numpy as np
from numpy.typing import NDArray

FLT_MAX = np.float32(np.finfo(np.float32).max)
FLT_MIN = np.float32(np.finfo(np.float32).tiny)  # C's FLT_MIN: the smallest *positive* normal float
RADIAL_ITERATIONS = 5
DEGENERATE_SIGMA = np.float32(0.01)

# Offsets (fs, ss) probed around a pixel while growing a peak, in the reference order.
_GROW_DFS = np.array([0, -1, 0, 1, -1, 1, -1, 0, 1], np.int64)
_GROW_DSS = np.array([0, -1, -1, -1, 0, 0, 1, 1, 1], np.int64)

# Columns of the peak table returned by :func:`search_peaks`.
COL_FS, COL_SS, COL_INTENSITY, COL_NPIX, COL_MAX_I, COL_SIGMA, COL_SNR = range(7)
N_COLS = 7


@numba.njit(cache=True, nogil=True)
def radial_thresholds(
    data: NDArray[np.float32],
    usable: NDArray[np.uint8],
    order: NDArray[np.int32],
    bin_starts: NDArray[np.int64],
    min_snr: np.float32,
    adc_threshold: np.float32,
    check_usable: bool,
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Sigma-clipped radial background: per-bin mean and detection threshold.

    Args:
        data, usable: flattened frame and usable map, ``(n_pix,)``.
        order: flat indices of the pixels that enter the statistics, grouped by radial bin in
            increasing bin order (scan order inside a bin, or the fast-mode sample order).
        bin_starts: ``(n_bins + 1,)`` offsets of each bin's group in ``order``.
        min_snr: clipping width and threshold in units of the bin's sigma.
        adc_threshold: lower limit of the threshold (ADU).
        check_usable: consult ``usable`` (False when ``order`` holds usable pixels only).

    Returns:
        ``(offset, threshold)`` float32 ``(n_bins,)``. Bins left without pixels get offset 0 and
        threshold FLT_MAX (never a candidate); their next pass then keeps values in
        ``(FLT_MIN, FLT_MAX)``, i.e. positive values only, as in the reference programs.
    """
    n_bins = bin_starts.size - 1
    values = np.empty(order.size, np.float32)
    keep = np.ones(order.size if check_usable else 0, np.uint8)
    for i in range(order.size):
        values[i] = data[order[i]]
    if check_usable:
        for i in range(order.size):
            keep[i] = usable[order[i]]
    offset = np.zeros(n_bins, np.float32)
    threshold = np.empty(n_bins, np.float32)
    zero = np.float32(0.0)
    for b in range(n_bins):
        upper = np.float32(1e9)
        lower = np.float32(-1e9)
        mean = zero
        prev_sum = zero
        prev_squares = zero
        prev_count = -1
        for _ in range(RADIAL_ITERATIONS):
            total = zero
            squares = zero
            count = 0
            for i in range(bin_starts[b], bin_starts[b + 1]):
                v = values[i]
                inside = (v < upper) & (v > lower)
                if check_usable:
                    inside &= keep[i] != 0
                w = v if inside else zero  # adding +0.0 leaves a float sum unchanged
                total += w
                squares += w * w
                count += inside
            # The next thresholds depend only on (total, squares, count): once they repeat, every
            # later pass would reproduce them, so the remaining passes can be skipped.
            if count == prev_count and total == prev_sum and squares == prev_squares:
                break
            prev_sum, prev_squares, prev_count = total, squares, count
            if count == 0:
                mean = zero
                upper = FLT_MAX
                lower = FLT_MIN
            else:
                n = np.float32(count)
                mean = total / n
                sigma = squares / n - mean * mean
                if sigma >= 0:
                    sigma = np.sqrt(sigma)
                upper = mean + min_snr * sigma
                lower = mean - min_snr * sigma
                if upper < adc_threshold:
                    upper = adc_threshold
        offset[b] = mean
        threshold[b] = upper
    return offset, threshold


@numba.njit(cache=True, nogil=True)
def _grow(
    data: NDArray[np.float32],
    usable: NDArray[np.uint8],
    bins: NDArray[np.int32],
    offset: NDArray[np.float32],
    threshold: NDArray[np.float32],
    in_peak: NDArray[np.uint8],
    work_fs: NDArray[np.int32],
    work_ss: NDArray[np.int32],
    written: NDArray[np.int64],
    origin_fs: int,
    origin_ss: int,
    asic_nx: int,
    asic_ny: int,
    stale_probe: bool,
) -> tuple[int, np.float32, np.float32, np.float32]:
    """Grow the 8-connected above-threshold component seeded at ``work_[fs,ss][0]`` inside one ASIC.

    The work list holds ASIC-local coordinates; its entries ``0..n-1`` are the peak's pixels in the
    order they were added. ``written[0]`` counts the slots ever written in this frame; the slot after
    them is kept at (0, 0), so the list behaves as if zero-filled without clearing it per frame.
    Growth repeats whole passes over the list until a pass adds nothing. With ``stale_probe`` each
    pass also probes the entry just past the end of the list, which still holds a pixel of an
    earlier (larger) component: the reference programs do this, and it can attach an unconnected
    cluster to the peak; it is kept so results match them exactly.

    Returns:
        ``(n, sum_i, sum_i_fs, sum_i_ss)``: pixel count and the float32 sums of ``v - offset[bin]``
        and of that weight times the global fs / ss coordinate.
    """
    sum_i = np.float32(0.0)
    sum_fs = np.float32(0.0)
    sum_ss = np.float32(0.0)
    n = 0
    while True:
        n_before = n
        p = 0
        while p < n or (p == n and (stale_probe or n == 0)):
            for k in range(9):
                lfs = work_fs[p] + _GROW_DFS[k]
                lss = work_ss[p] + _GROW_DSS[k]
                if lfs < 0 or lfs >= asic_nx or lss < 0 or lss >= asic_ny:
                    continue
                gfs = lfs + origin_fs
                gss = lss + origin_ss
                v = data[gss, gfs]
                b = bins[gss, gfs]
                if v > threshold[b] and in_peak[gss, gfs] == 0 and usable[gss, gfs] != 0:
                    weight = v - offset[b]
                    sum_i += weight
                    sum_fs += weight * np.float32(gfs)
                    sum_ss += weight * np.float32(gss)
                    work_fs[n] = lfs
                    work_ss[n] = lss
                    in_peak[gss, gfs] = 1
                    n += 1
                    if n > written[0]:
                        written[0] = n
                        work_fs[n] = 0
                        work_ss[n] = 0
            p += 1
        if n == n_before:
            return n, sum_i, sum_fs, sum_ss


@numba.njit(cache=True, nogil=True)
def _local_background(
    data: NDArray[np.float32],
    usable: NDArray[np.uint8],
    bins: NDArray[np.int32],
    threshold: NDArray[np.float32],
    in_peak: NDArray[np.uint8],
    centre_fs: int,
    centre_ss: int,
    origin_fs: int,
    origin_ss: int,
    asic_nx: int,
    asic_ny: int,
    ring_width: int,
) -> tuple[int, np.float32, np.float32, np.float32]:
    """Background statistics in a disk of radius ``ring_width`` around an ASIC-local centre.

    Uses the ASIC's pixels with ``dfs, dss`` in ``[-ring_width, ring_width)`` and
    ``dfs**2 + dss**2 <= ring_width**2`` that are below threshold, usable and in no peak.

    Returns:
        ``(count, mean, sigma, max_value)``; ``max_value`` starts at 0.
    """
    s = np.float32(0.0)
    s2 = np.float32(0.0)
    vmax = np.float32(0.0)
    count = 0
    r2 = ring_width * ring_width
    for dss in range(-ring_width, ring_width):
        lss = centre_ss + dss
        if lss < 0 or lss >= asic_ny:
            continue
        for dfs in range(-ring_width, ring_width):
            lfs = centre_fs + dfs
            if lfs < 0 or lfs >= asic_nx:
                continue
            if dfs * dfs + dss * dss > r2:
                continue
            gfs = lfs + origin_fs
            gss = lss + origin_ss
            v = data[gss, gfs]
            if v < threshold[bins[gss, gfs]] and in_peak[gss, gfs] == 0 and usable[gss, gfs] != 0:
                count += 1
                s += v
                s2 += v * v
                if v > vmax:
                    vmax = v
    if count == 0:
        return 0, np.float32(0.0), DEGENERATE_SIGMA, vmax
    n = np.float32(count)
    mean = s / n
    var = s2 / n - mean * mean
    sigma = np.sqrt(var) if var >= 0 else DEGENERATE_SIGMA
    return count, mean, sigma, vmax


@numba.njit(cache=True, nogil=True)
def search_peaks(
    data: NDArray[np.float32],
    usable: NDArray[np.uint8],
    bins: NDArray[np.int32],
    offset: NDArray[np.float32],
    threshold: NDArray[np.float32],
    asic_nx: int,
    asic_ny: int,
    nasics_x: int,
    nasics_y: int,
    min_pix_count: int,
    max_pix_count: int,
    local_bg_radius: int,
    min_snr: np.float32,
    max_num_peaks: int,
    stale_probe: bool,
) -> NDArray[np.float32]:
    """Find, measure and filter peaks ASIC by ASIC (ss-major ASIC order, then ss-major pixels).

    Returns:
        float32 ``(n_peaks, N_COLS)`` table (columns ``COL_*``), at most ``max_num_peaks`` rows.
    """
    n_fs = data.shape[1]
    in_peak = np.zeros(data.shape, np.uint8)
    # Work list of ASIC-local coordinates, shared by all peaks of the frame (see _grow).
    work_fs = np.empty(asic_nx * asic_ny + 1, np.int32)
    work_ss = np.empty(asic_nx * asic_ny + 1, np.int32)
    work_fs[0] = 0
    work_ss[0] = 0
    written = np.zeros(1, np.int64)
    out = np.zeros((max_num_peaks, N_COLS), np.float32)
    found = 0
    ring_width = 2 * local_bg_radius
    for a_ss in range(nasics_y):
        for a_fs in range(nasics_x):
            origin_fs = a_fs * asic_nx
            origin_ss = a_ss * asic_ny
            for lss0 in range(1, asic_ny - 1):
                for lfs0 in range(1, asic_nx - 1):
                    gss0 = lss0 + origin_ss
                    gfs0 = lfs0 + origin_fs
                    if not (
                        data[gss0, gfs0] > threshold[bins[gss0, gfs0]]
                        and in_peak[gss0, gfs0] == 0
                        and usable[gss0, gfs0] != 0
                    ):
                        continue
                    work_fs[0] = lfs0
                    work_ss[0] = lss0
                    npix, sum_i, sum_fs, sum_ss = _grow(
                        data, usable, bins, offset, threshold, in_peak, work_fs, work_ss, written,
                        origin_fs, origin_ss, asic_nx, asic_ny, stale_probe,
                    )
                    if npix < min_pix_count or npix > max_pix_count:
                        continue
                    if abs(sum_i) < 1e-10:
                        continue
                    com_fs = sum_fs / abs(sum_i)
                    com_ss = sum_ss / abs(sum_i)
                    centre_fs = int(np.rint(com_fs))
                    centre_ss = int(np.rint(com_ss))
                    n_bg, bg_mean, bg_sigma, bg_max = _local_background(
                        data, usable, bins, threshold, in_peak,
                        centre_fs - origin_fs, centre_ss - origin_ss,
                        origin_fs, origin_ss, asic_nx, asic_ny, ring_width,
                    )
                    if n_bg == 0:
                        flat = min(max(centre_ss * n_fs + centre_fs, 0), data.size - 1)
                        bg_mean = offset[bins[flat // n_fs, flat % n_fs]]

                    tot_i = np.float32(0.0)
                    tot_raw = np.float32(0.0)
                    raw_fs = np.float32(0.0)
                    raw_ss = np.float32(0.0)
                    max_i = np.float32(0.0)
                    for i in range(npix):
                        gfs = work_fs[i] + origin_fs
                        gss = work_ss[i] + origin_ss
                        v = data[gss, gfs]
                        above = v - bg_mean
                        tot_i += above
                        tot_raw += v
                        raw_fs += v * np.float32(gfs)
                        raw_ss += v * np.float32(gss)
                        if above > max_i:
                            max_i = above
                    if abs(tot_raw) < 1e-10:
                        continue
                    com_fs = raw_fs / abs(tot_raw)
                    com_ss = raw_ss / abs(tot_raw)
                    snr = tot_i / bg_sigma if abs(bg_sigma) > 1e-10 else np.float32(0.0)
                    if snr < min_snr:
                        continue
                    if max_i < bg_max - bg_mean:
                        continue
                    if (
                        com_fs < origin_fs
                        or com_fs > origin_fs + asic_nx - 1
                        or com_ss < origin_ss
                        or com_ss > origin_ss + asic_ny - 1
                    ):
                        continue
                    for i in range(npix):
                        in_peak[work_ss[i] + origin_ss, work_fs[i] + origin_fs] = 2
                    out[found, COL_FS] = com_fs
                    out[found, COL_SS] = com_ss
                    out[found, COL_INTENSITY] = tot_i
                    out[found, COL_NPIX] = npix
                    out[found, COL_MAX_I] = max_i
                    out[found, COL_SIGMA] = bg_sigma
                    out[found, COL_SNR] = snr
                    found += 1
                    if found == max_num_peaks:
                        return out
    return out[:found]
