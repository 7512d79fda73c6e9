"""High-dimensional Gaussian filtering with the permutohedral lattice.

The filter computes, for every point ``i`` with feature vector ``f_i`` (already divided by
the kernel's standard deviations), ``out_i ≈ Σ_j exp(-|f_i - f_j|² / 2) · v_j`` in time
linear in the number of points (Adams, Baek & Davis, Eurographics 2010). Each point is
splatted onto the ``d + 1`` vertices of the lattice simplex that encloses it with
barycentric weights, the lattice values are blurred with a ``[1 2 1]`` kernel along each
of the ``d + 1`` lattice directions, and the result is sliced back with the same weights.
The elevation, rounding, barycentric weights, blur and the final scaling constant follow
the published algorithm (as in Krähenbühl & Koltun's dense CRF code), so that a CRF
built on it matches the official DeepMedic post-processing.

What differs from the reference implementation is the data structure, chosen for speed and
memory on brain-size volumes (7 million voxels, d = 7):

* A lattice vertex is identified by its remainder ``r`` (all its coordinates are
  ``≡ r (mod d + 1)``) and the quotients ``q_c = (k_c - r) / (d + 1)`` of ``d`` of its
  coordinates; these small integers are packed into one (rarely two) 64-bit words.
* Vertices are numbered by sorting their packed keys, one remainder at a time (vertex
  ``r`` of every simplex has remainder ``r``), with an LSD radix sort: sorting streams
  through memory where a hash table misses the cache at every probe, and on brain images
  nearly every one of a voxel's ``d + 1`` vertices is its own (98%), so there is little
  to deduplicate anyway. A lattice neighbour along any direction is then the vertex whose
  packed key is the own key plus a constant that depends only on the remainder and the
  direction, so the neighbours of a sorted run of vertices form a sorted run too: they
  are found by merging two sorted lists (four directions at a time), and no neighbour
  table (``2 (d + 1)`` integers per vertex in the reference code) is stored.
* The blur touches only the vertices that have a neighbour along the direction (old
  values gathered, then added), not a copy of the whole lattice per direction.
* Voxels on a regular grid (all of them, or a subset given by their indices) are passed
  as per-channel values plus the grid geometry; the position features are computed on
  the fly instead of being stored.
* Splat, blur and slice run on several threads without races: splatting threads take
  different remainders (disjoint vertex ranges), blur threads update the two ends of the
  pairs in two loops (each vertex is at most once an end of each kind per direction).
"""

from __future__ import annotations

import math
import time

import numba as nb
import numpy as np

_WORD_BITS = 62  # packed keys stay below 2**62 so that adding a neighbour offset never wraps


@nb.njit(cache=True, inline="always")
def _elevate(
    dense, dense_scale, n_dense, index, position, d, scale, elevated
):  # pragma: no cover - compiled
    """Project a feature vector onto the lattice hyperplane (``E f``, Adams et al. p. 5).

    Features are the dense channels of point ``index`` (times ``dense_scale``) followed by
    ``position`` (grid coordinates times grid scale, fastest axis first).
    """
    total = 0.0
    for j in range(d, 0, -1):
        if j - 1 < n_dense:
            cf = dense[j - 1, index] * dense_scale[j - 1]
        else:
            cf = position[j - 1 - n_dense]
        cf *= scale[j - 1]
        elevated[j] = total - j * cf
        total += cf
    elevated[0] = total


@nb.njit(cache=True, inline="always")
def _enclosing_simplex(elevated, d, rem0, quot, rank, bary):  # pragma: no cover - compiled
    """Nearest remainder-0 point, ordering of the residual and barycentric weights."""
    dp1 = d + 1
    total = 0
    for i in range(dp1):
        # nearest multiple of d + 1 (ties round down, as the reference code does)
        v = elevated[i] / dp1
        q = math.floor(v)
        if v - q > 0.5:
            q += 1
        quot[i] = q
        rem0[i] = q * dp1
        total += q
    for i in range(dp1):
        rank[i] = 0
    for i in range(d):
        di = elevated[i] - rem0[i]
        for j in range(i + 1, dp1):
            smaller = di < elevated[j] - rem0[j]  # branch-free: the outcome is unpredictable
            rank[i] += smaller
            rank[j] += 1 - smaller
    for i in range(dp1):
        rank[i] += total
        if rank[i] < 0:
            rank[i] += dp1
            rem0[i] += dp1
            quot[i] += 1
        elif rank[i] > d:
            rank[i] -= dp1
            rem0[i] -= dp1
            quot[i] -= 1
    for i in range(d + 2):
        bary[i] = 0.0
    for i in range(dp1):
        v = (elevated[i] - rem0[i]) / dp1
        bary[d - rank[i]] += v
        bary[d - rank[i] + 1] -= v
    bary[0] += 1.0 + bary[d + 1]


@nb.njit(cache=True, parallel=True)
def _locate(dense, dense_scale, shape, grid_scale, n_grid, grid_index, d, scale, codes, weights):
    """First pass: the simplex enclosing every point and its barycentric weights.

    Point ``i`` is voxel ``grid_index[i]`` of the grid (C order), or voxel ``i`` when
    ``grid_index`` is empty. The simplex is written to ``codes[i, c] = quotient_c << 8 |
    rank_c``, in the array that the second pass overwrites with vertex ids (so it costs no
    extra memory).

    Returns:
        Per coordinate, the smallest and largest quotient (for the key layout).
    """
    n_dense = dense.shape[0]
    n = codes.shape[0]
    dp1 = d + 1
    subset = grid_index.shape[0] > 0
    n_chunks = max(1, min(256, n // 8192))
    lows = np.empty((n_chunks, dp1), np.int64)
    highs = np.empty((n_chunks, dp1), np.int64)
    for chunk in nb.prange(n_chunks):
        begin = chunk * n // n_chunks
        end = (chunk + 1) * n // n_chunks
        elevated = np.empty(dp1)
        position = np.zeros(3)
        rem0 = np.zeros(dp1, np.int64)
        quot = np.zeros(dp1, np.int64)
        rank = np.zeros(dp1, np.int64)
        bary = np.empty(d + 2)
        low = np.full(dp1, 1 << 40, np.int64)
        high = np.full(dp1, -(1 << 40), np.int64)
        z = begin % shape[2]
        y = (begin // shape[2]) % shape[1]
        x = begin // (shape[1] * shape[2])
        for index in range(begin, end):
            if subset:
                voxel = grid_index[index]
                z = voxel % shape[2]
                y = (voxel // shape[2]) % shape[1]
                x = voxel // (shape[1] * shape[2])
            if n_grid:
                position[0] = z * grid_scale[2]
                position[1] = y * grid_scale[1]
                position[2] = x * grid_scale[0]
            _elevate(dense, dense_scale, n_dense, index, position, d, scale, elevated)
            _enclosing_simplex(elevated, d, rem0, quot, rank, bary)
            for c in range(dp1):
                codes[index, c] = (quot[c] << 8) | rank[c]
                weights[index, c] = bary[c]
                low[c] = min(low[c], quot[c])
                high[c] = max(high[c], quot[c])
            z += 1
            if z == shape[2]:
                z = 0
                y += 1
                if y == shape[1]:
                    y = 0
                    x += 1
        lows[chunk] = low
        highs[chunk] = high
    low = lows[0].copy()
    high = highs[0].copy()
    for chunk in range(1, n_chunks):
        for c in range(dp1):
            low[c] = min(low[c], lows[chunk, c])
            high[c] = max(high[c], highs[chunk, c])
    return low, high


@nb.njit(cache=True, parallel=True)
def _base_keys(codes, field_word, field_shift, q_low, keys, by_rank):
    """Packed key of every point's remainder-0 vertex, and its coordinates by rank.

    ``keys[i]`` holds the quotients of coordinates ``1..d`` (coordinate 0 is minus their
    sum), without the remainder field; ``by_rank[i, ρ]`` is the coordinate of rank ``ρ``,
    which tells how the other vertices of the simplex follow (:func:`_next_vertex`).
    """
    n, dp1 = codes.shape
    n_words = keys.shape[1]
    for i in nb.prange(n):
        for w in range(n_words):
            keys[i, w] = 0
        for c in range(dp1):
            code = codes[i, c]
            by_rank[i, code & 0xFF] = c
            if c > 0:
                keys[i, field_word[c]] += ((code >> 8) - q_low[c] + 1) << field_shift[c]


@nb.njit(cache=True, parallel=True)
def _next_vertex(keys, by_rank, r, field_word, field_shift):
    """Keys of vertex ``r`` from those of vertex ``r - 1``, in place.

    Vertex ``r`` adds ``r`` to every coordinate and subtracts ``d + 1`` from those of the
    ``r`` highest ranks: in quotients, the coordinate of rank ``d - r + 1`` drops by one.
    """
    n = keys.shape[0]
    d = by_rank.shape[1] - 1
    for i in nb.prange(n):
        c = by_rank[i, d - r + 1]
        if c > 0:
            keys[i, field_word[c]] -= 1 << field_shift[c]


@nb.njit(cache=True)
def _radix_argsort(keys, bits, sorted_keys, order, spare_keys, spare_order):
    """Sort one-word keys (< 2**bits) and their indices: LSD radix, 11-bit digits.

    ``keys`` is left as it is; the result is in ``sorted_keys``/``order`` or in
    ``spare_keys``/``spare_order`` (the four buffers are reused between calls), whichever
    is returned. The counts of every digit come from one pass over the keys, and digits
    that are the same in every key (the unused low bits of the packed layout) cost
    nothing. 3× faster than ``np.argsort`` with the gather.
    """
    n = keys.shape[0]
    radix = 11
    size = 1 << radix
    mask = size - 1
    n_digits = (bits + radix - 1) // radix
    count = np.zeros((n_digits, size), np.int64)
    for i in range(n):
        key = keys[i]
        for p in range(n_digits):
            count[p, (key >> (p * radix)) & mask] += 1
    src_keys, src_order = keys, order  # order is only read once src_keys is a buffer
    dst_keys, dst_order = sorted_keys, spare_order
    first = True
    for p in range(n_digits):
        if count[p].max() == n:  # every key has the same digit here: nothing to do
            continue
        total = 0
        for b in range(size):
            c = count[p, b]
            count[p, b] = total
            total += c
        shift = p * radix
        for i in range(n):
            key = src_keys[i]
            b = (key >> shift) & mask
            pos = count[p, b]
            count[p, b] = pos + 1
            dst_keys[pos] = key
            dst_order[pos] = i if first else src_order[i]
        if first:
            src_keys, dst_keys = dst_keys, spare_keys
            src_order, dst_order = dst_order, order
            first = False
        else:
            src_keys, dst_keys = dst_keys, src_keys
            src_order, dst_order = dst_order, src_order
    if first:  # all keys equal
        for i in range(n):
            sorted_keys[i] = keys[i]
            order[i] = i
        return sorted_keys, order
    return src_keys, src_order


@nb.njit(cache=True)
def _number_sorted(sorted_keys, order, r, first_id, offsets, unique):
    """Ids of one remainder's vertices from its sorted keys (``unique``: the distinct keys).

    Returns:
        The number of distinct keys; ``offsets[order[k], r]`` gets the id of key ``k``.
    """
    n, n_words = sorted_keys.shape
    m = -1
    for k in range(n):
        new = k == 0
        if not new:
            for w in range(n_words):
                if sorted_keys[k, w] != sorted_keys[k - 1, w]:
                    new = True
                    break
        if new:
            m += 1
            for w in range(n_words):
                unique[m, w] = sorted_keys[k, w]
        offsets[order[k], r] = first_id + m
    return m + 1


@nb.njit(cache=True, inline="always")
def _merge_one(keys, i, i_end, p, p_end, delta, buffer, c):  # pragma: no cover - compiled
    """Branch-free merge of one direction within one pair of groups; returns the new count."""
    while i < i_end and p < p_end:
        a = keys[i, 0] + delta
        b = keys[p, 0]
        # always write, keep only on a match
        buffer[c, 0] = i
        buffer[c, 1] = p
        c += a == b
        i += a <= b
        p += b <= a
    return c


@nb.njit(cache=True)
def _merge_four(keys, group_start, deltas, j, m, buffer, counts):  # pragma: no cover
    """Merges of directions ``j..j+3`` run in one loop (see :func:`_neighbour_pairs_1`)."""
    dp1 = deltas.shape[0]
    c0, c1, c2, c3 = j * m, (j + 1) * m, (j + 2) * m, (j + 3) * m
    for g in range(dp1):
        t = g - 1 if g > 0 else dp1 - 1
        i_end = group_start[g + 1]
        p_end = group_start[t + 1]
        d0 = deltas[g, j, 0]
        d1 = deltas[g, j + 1, 0]
        d2 = deltas[g, j + 2, 0]
        d3 = deltas[g, j + 3, 0]
        i0 = i1 = i2 = i3 = group_start[g]
        p0 = p1 = p2 = p3 = group_start[t]
        while (
            i0 < i_end
            and p0 < p_end
            and i1 < i_end
            and p1 < p_end
            and i2 < i_end
            and p2 < p_end
            and i3 < i_end
            and p3 < p_end
        ):
            a0 = keys[i0, 0] + d0
            b0 = keys[p0, 0]
            a1 = keys[i1, 0] + d1
            b1 = keys[p1, 0]
            a2 = keys[i2, 0] + d2
            b2 = keys[p2, 0]
            a3 = keys[i3, 0] + d3
            b3 = keys[p3, 0]
            buffer[c0, 0] = i0
            buffer[c0, 1] = p0
            buffer[c1, 0] = i1
            buffer[c1, 1] = p1
            buffer[c2, 0] = i2
            buffer[c2, 1] = p2
            buffer[c3, 0] = i3
            buffer[c3, 1] = p3
            c0 += a0 == b0
            c1 += a1 == b1
            c2 += a2 == b2
            c3 += a3 == b3
            i0 += a0 <= b0
            p0 += b0 <= a0
            i1 += a1 <= b1
            p1 += b1 <= a1
            i2 += a2 <= b2
            p2 += b2 <= a2
            i3 += a3 <= b3
            p3 += b3 <= a3
        c0 = _merge_one(keys, i0, i_end, p0, p_end, d0, buffer, c0)
        c1 = _merge_one(keys, i1, i_end, p1, p_end, d1, buffer, c1)
        c2 = _merge_one(keys, i2, i_end, p2, p_end, d2, buffer, c2)
        c3 = _merge_one(keys, i3, i_end, p3, p_end, d3, buffer, c3)
    counts[j] = c0 - j * m
    counts[j + 1] = c1 - (j + 1) * m
    counts[j + 2] = c2 - (j + 2) * m
    counts[j + 3] = c3 - (j + 3) * m


@nb.njit(cache=True, parallel=True)
def _neighbour_pairs_1(keys, group_start, deltas):
    """:func:`_neighbour_pairs` for one-word keys, as branch-free merges.

    Each merge step depends on the previous one (which list advances), so a single merge
    waits on its own loads; four directions are merged in the same loop to let the
    processor overlap the chains (1.9× faster than one at a time, which is itself 3×
    faster than a branching merge). Groups of directions run in parallel, each writing
    its own part of the buffer.
    """
    m = keys.shape[0]
    dp1 = deltas.shape[0]
    # a vertex has at most one neighbour per direction: m pairs per direction at most;
    # the buffer is reserved, not touched, so only the pairs written occupy memory (and
    # they stay where they are written: no copy)
    buffer = np.empty((dp1 * m + 1, 2), np.int32)
    counts = np.zeros(dp1, np.int64)
    n_four = dp1 // 4
    for job in nb.prange(n_four + dp1 % 4):
        if job < n_four:
            _merge_four(keys, group_start, deltas, 4 * job, m, buffer, counts)
            continue
        j = 4 * n_four + job - n_four
        c = j * m
        for g in range(dp1):
            t = g - 1 if g > 0 else dp1 - 1
            c = _merge_one(
                keys,
                group_start[g],
                group_start[g + 1],
                group_start[t],
                group_start[t + 1],
                deltas[g, j, 0],
                buffer,
                c,
            )
        counts[j] = c - j * m
    first = np.arange(dp1) * m
    return buffer, first, counts


@nb.njit(cache=True)
def _neighbour_pairs(keys, group_start, deltas):
    """All pairs of existing lattice neighbours, per blur direction.

    Along direction ``j`` the neighbour of a vertex in remainder group ``g`` lies in group
    ``g - 1`` (cyclically) at key ``key + deltas[g, j]``; a constant offset keeps sorted keys
    sorted, so one merge of two sorted runs finds every pair.

    Returns:
        ``pairs``, ``first`` and ``count``: direction ``j``'s pairs ``(a, b)`` (``b`` the
        neighbour of ``a``) are ``pairs[first[j]:first[j] + count[j]]``.
    """
    m, n_words = keys.shape
    dp1 = deltas.shape[0]
    pairs = np.empty((dp1 * m + 1, 2), np.int32)  # reserved, touched only where written
    first = np.arange(dp1) * m
    counts = np.zeros(dp1, np.int64)
    query = np.empty(n_words, np.int64)
    for j in range(dp1):
        count = first[j]
        for g in range(dp1):
            t = g - 1 if g > 0 else dp1 - 1
            p = group_start[t]
            p_end = group_start[t + 1]
            for i in range(group_start[g], group_start[g + 1]):
                for w in range(n_words):
                    query[w] = keys[i, w] + deltas[g, j, w]
                while p < p_end and _less(keys, p, query, n_words):
                    p += 1
                if p == p_end:
                    break
                if _equal(keys, p, query, n_words):
                    pairs[count, 0] = i
                    pairs[count, 1] = p
                    count += 1
        counts[j] = count - first[j]
    return pairs, first, counts


@nb.njit(cache=True, parallel=True)
def _splat(values, offsets, weights, group_start, n_tasks, lattice):
    """Accumulate one signal ``values (n,)`` onto the lattice vertices with barycentric weights.

    Point by point, in grid order: the vertices written by successive points are close
    together in each remainder's range (on a brain-size grid, 1.4× faster than gathering
    the values vertex by vertex). Vertex ``r`` of every simplex has remainder ``r`` and
    the vertices are sorted by remainder first (group ``r`` is
    ``group_start[r]:group_start[r + 1]``), so ``n_tasks`` threads that take different
    remainders write to different parts of the lattice: no two threads ever add to the
    same vertex.
    """
    n, k = offsets.shape
    if n_tasks <= 1:
        # the plain loop: 1.4× faster than the partitioned one run by a single thread
        lattice[:] = 0.0
        for i in range(n):
            x = values[i]
            for r in range(k):
                lattice[offsets[i, r]] += weights[i, r] * x
        return
    n_tasks = min(k, n_tasks)
    for t in nb.prange(n_tasks):
        r_begin = t * k // n_tasks
        r_end = (t + 1) * k // n_tasks
        lattice[group_start[r_begin] : group_start[r_end]] = 0.0
        for i in range(n):
            x = values[i]
            for r in range(r_begin, r_end):
                lattice[offsets[i, r]] += weights[i, r] * x


@nb.njit(cache=True, inline="always")
def _less(keys, a, query, n_words):  # pragma: no cover - compiled
    for w in range(n_words):
        if keys[a, w] != query[w]:
            return keys[a, w] < query[w]
    return False


@nb.njit(cache=True, inline="always")
def _equal(keys, a, query, n_words):  # pragma: no cover - compiled
    for w in range(n_words):
        if keys[a, w] != query[w]:
            return False
    return True


@nb.njit(cache=True, parallel=True)
def _blur(lattice, scratch, pairs, pair_first, pair_count, reverse, threads):
    """Blur in place with ``[1 2 1] / 2`` along each lattice direction (Jacobi per direction).

    A vertex has at most one neighbour on each side along a direction, so a direction's
    pairs ``(a, b)`` name every vertex at most once as ``a`` and once as ``b``. The old
    values of both ends are gathered first, then added: only the vertices that have
    neighbours are touched (no copy of the whole lattice per direction: about 2× faster).
    With several ``threads``, the ``a`` ends and the ``b`` ends are updated in two loops,
    so that no two threads write the same vertex.
    """
    dp1 = pair_first.shape[0]
    for step in range(dp1):
        j = dp1 - 1 - step if reverse else step
        first = pair_first[j]
        count = pair_count[j]
        for k in nb.prange(count):
            scratch[k, 0] = lattice[pairs[first + k, 1]]
            scratch[k, 1] = lattice[pairs[first + k, 0]]
        if threads <= 1:
            for k in range(count):
                lattice[pairs[first + k, 0]] += 0.5 * scratch[k, 0]
                lattice[pairs[first + k, 1]] += 0.5 * scratch[k, 1]
            continue
        for k in nb.prange(count):
            lattice[pairs[first + k, 0]] += 0.5 * scratch[k, 0]
        for k in nb.prange(count):
            lattice[pairs[first + k, 1]] += 0.5 * scratch[k, 1]


@nb.njit(cache=True, parallel=True)
def _slice(lattice, offsets, weights, alpha, out):
    """Interpolate the blurred lattice values back at the points: ``out (n,)``."""
    n, k = offsets.shape
    for i in nb.prange(n):
        acc = np.float32(0.0)
        for r in range(k):
            acc += weights[i, r] * lattice[offsets[i, r]]
        out[i] = acc * alpha


def _scale_factors(d: int) -> np.ndarray:
    """Diagonal of the elevation matrix times the lattice's expected standard deviation."""
    inv_std = math.sqrt(2.0 / 3.0) * (d + 1)
    return np.array([inv_std / math.sqrt((i + 1) * (i + 2)) for i in range(d)], dtype=np.float64)


class PermutohedralLattice:
    """A permutohedral lattice built once for a set of points, then used to filter many signals.

    Points are given as ``dense`` features (one row per feature, already in units of the
    kernel's standard deviation after multiplying by ``dense_scale``) and, optionally, the
    coordinates of a regular 3D grid (``grid_shape`` with ``grid_scale`` = voxel spacing /
    σ per axis), point ``i`` being voxel ``i`` of the grid in C order, or voxel
    ``grid_index[i]`` when only some voxels are points.

    Args:
        dense: ``(D, n)`` array of features (any real dtype; uint8 intensities work), or
            ``None`` for grid positions only.
        dense_scale: Factor per dense feature (1 / σ). Default 1.
        grid_shape: Shape ``(X, Y, Z)`` of the grid when positions are features.
        grid_scale: Factor per grid axis (spacing / σ), used with ``grid_shape``.
        grid_index: Flat (C-order) voxel index of every point, when the points are a
            subset of the grid's voxels.

    Example:
        >>> lat = PermutohedralLattice(np.random.rand(2, 1000).astype(np.float32))
        >>> smoothed = lat.filter(np.ones((1, 1000), np.float32))
    """

    def __init__(
        self,
        dense: np.ndarray | None,
        dense_scale: np.ndarray | None = None,
        grid_shape: tuple[int, int, int] | None = None,
        grid_scale: tuple[float, float, float] | None = None,
        grid_index: np.ndarray | None = None,
    ):
        if dense is None and grid_shape is None:
            raise ValueError("a lattice needs dense features, a grid, or both")
        n_grid = 3 if grid_shape is not None else 0
        if grid_index is not None:
            if grid_shape is None:
                raise ValueError("grid_index needs grid_shape")
            grid_index = np.ascontiguousarray(grid_index, dtype=np.int64)
            size = int(np.prod(grid_shape))
            if grid_index.size and (grid_index.min() < 0 or grid_index.max() >= size):
                raise ValueError(f"grid_index outside the grid {tuple(grid_shape)}")
        n_expected = None
        if grid_shape is not None:
            n_expected = int(np.prod(grid_shape)) if grid_index is None else grid_index.size
        if dense is None:
            dense = np.zeros((0, n_expected), np.float32)
        dense = np.ascontiguousarray(dense)
        n_dense, n = dense.shape
        if n_expected is not None and n_expected != n:
            what = "grid_index has" if grid_index is not None else f"grid {tuple(grid_shape)} has"
            raise ValueError(f"{what} {n_expected} voxels, not {n}")
        d = n_dense + n_grid
        if d < 1:
            raise ValueError("a lattice needs at least one feature")
        if d > 254:  # ranks are stored in 8 bits
            raise ValueError(f"a lattice takes at most 254 features, got {d}")
        if n < 1:
            raise ValueError("a lattice needs at least one point")
        self.n_points = n
        self.dim = d
        dense_scale = np.ones(n_dense) if dense_scale is None else np.asarray(dense_scale)
        dense_scale = dense_scale.astype(np.float64)
        shape = np.asarray(grid_shape if grid_shape is not None else (1, 1, n), dtype=np.int64)
        gscale = np.asarray(grid_scale if grid_scale is not None else (0, 0, 0), dtype=np.float64)
        index = grid_index if grid_index is not None else np.zeros(0, np.int64)
        scale = _scale_factors(d)

        self.timings: dict[str, float] = {}  # CPU seconds per build stage, for benchmarks
        clock = time.process_time()

        def lap(stage: str) -> None:
            nonlocal clock
            now = time.process_time()
            self.timings[stage] = self.timings.get(stage, 0.0) + now - clock
            clock = now

        offsets = np.empty((n, d + 1), np.int32)
        weights = np.empty((n, d + 1), np.float32)
        quot_low, quot_high = _locate(
            dense, dense_scale, shape, gscale, n_grid, index, d, scale, offsets, weights
        )
        layout = _key_layout(quot_low, quot_high, d)
        self.n_words = n_words = layout["n_words"]
        lap("locate")
        # Vertices are numbered by sorting, one remainder at a time (vertex r of every
        # simplex has remainder r): the ids follow key order, as the neighbour search
        # needs, and sorting streams through memory where a hash table of the vertices
        # would miss the cache at every probe (4× slower on brain volumes, where nearly
        # every one of a voxel's d + 1 vertices is its own)
        word = layout["field_word"]
        shift = layout["field_shift"]
        running = np.empty((n, n_words), np.int64)
        by_rank = np.empty((n, d + 1), np.uint8)
        _base_keys(offsets, word, shift, layout["q_low"], running, by_rank)
        if n_words == 1:
            buffers = [np.empty(n, dtype) for dtype in (np.int64, np.int32) * 2]
        # room for every reference; only the pages written (one per vertex) occupy memory
        keys = np.empty(((d + 1) * n, n_words), np.int64)
        self.group_start = np.zeros(d + 2, np.int64)  # group r: vertices of remainder r
        m = 0
        for r in range(d + 1):
            if r > 0:
                _next_vertex(running, by_rank, r, word, shift)
            if n_words == 1:
                sorted_keys, order = _radix_argsort(
                    running.reshape(-1), layout["r_shift"], *buffers
                )
                sorted_keys = sorted_keys.reshape(n, 1)
            else:
                order = np.lexsort(running.T[::-1]).astype(np.int32)
                sorted_keys = running[order]
            # the simplices are now in the keys and ranks: ids overwrite them
            count = _number_sorted(sorted_keys, order, r, m, offsets, keys[m:])
            keys[m : m + count, 0] += r << layout["r_shift"]
            m += count
            self.group_start[r + 1] = m
        del running, by_rank, sorted_keys, order
        if n_words == 1:
            del buffers
        keys = keys[:m]
        lap("number")
        find_pairs = _neighbour_pairs_1 if self.n_words == 1 else _neighbour_pairs
        self.pairs, self.pair_first, self.pair_count = find_pairs(
            keys, self.group_start, _neighbour_deltas(layout, d)
        )
        lap("neighbours")
        self.n_vertices = int(keys.shape[0])
        del keys
        self.offsets = offsets
        self.weights = weights
        self.alpha = 1.0 / (1.0 + 2.0 ** (-d))
        self._buffers: tuple[np.ndarray, np.ndarray] | None = None

    def filter(self, values: np.ndarray, reverse: bool = False) -> np.ndarray:
        """Gaussian-filter ``values`` (``(V, n)`` or ``(n,)``) over the points' features.

        Args:
            values: Signal(s) at the points.
            reverse: Blur the lattice directions in reverse order (the transpose of the
                forward filter; the two agree to lattice accuracy).

        Returns:
            float32 array of the shape of ``values``: ``Σ_j k(f_i, f_j) v_j`` approximated.
        """
        flat = values.ndim == 1
        vals = np.ascontiguousarray(values.reshape(1, -1) if flat else values, dtype=np.float32)
        if vals.shape[1] != self.n_points:
            raise ValueError(f"expected {self.n_points} values per signal, got {vals.shape[1]}")
        if self._buffers is None:
            # kept between calls: mean field filters the same lattice many times; the
            # scratch holds the two ends of one direction's pairs
            most = int(self.pair_count.max(initial=0))
            self._buffers = (
                np.empty(self.n_vertices, np.float32),
                np.empty((most, 2), np.float32),
            )
        lattice, scratch = self._buffers
        threads = nb.get_num_threads()
        out = np.empty_like(vals)
        # one signal at a time: the kernels on 1-D arrays are 1.2-2× faster than on (n, V)
        for v in range(vals.shape[0]):
            _splat(vals[v], self.offsets, self.weights, self.group_start, threads, lattice)
            _blur(lattice, scratch, self.pairs, self.pair_first, self.pair_count, reverse, threads)
            _slice(lattice, self.offsets, self.weights, np.float32(self.alpha), out[v])
        return out.reshape(values.shape) if flat else out


def _key_layout(quot_low: np.ndarray, quot_high: np.ndarray, d: int) -> dict:
    """Bit layout of packed vertex keys: remainder on top, then one field per coordinate.

    Coordinates ``1..d`` are stored (coordinate 0 is minus their sum); coordinate ``d``
    depends on the last feature only, so it is the most significant field and sorted keys
    roughly follow the slowest grid axis.

    Args:
        quot_low: Per coordinate, the smallest quotient of the points' remainder-0 vertex.
        quot_high: The largest.
        d: Number of features.
    """
    dp1 = d + 1
    r_bits = max(1, int(d).bit_length())
    q_low = np.zeros(dp1, np.int64)
    bits = np.zeros(dp1, np.int64)
    for c in range(1, dp1):
        # a vertex's quotient is that of the remainder-0 vertex or one less; a neighbour's
        # differs by at most one more, and the field keeps room for it
        q_low[c] = int(quot_low[c]) - 1
        bits[c] = int(int(quot_high[c]) - int(quot_low[c]) + 3).bit_length()
    field_word = np.zeros(dp1, np.int64)
    field_shift = np.zeros(dp1, np.int64)
    word, free = 0, _WORD_BITS - r_bits
    r_shift = free
    for c in range(d, 0, -1):
        if bits[c] > free:
            word, free = word + 1, _WORD_BITS
        free -= bits[c]
        field_word[c] = word
        field_shift[c] = free
    return {
        "n_words": word + 1,
        "field_word": field_word,
        "field_shift": field_shift,
        "q_low": q_low,
        "r_shift": r_shift,
    }


def _neighbour_deltas(layout: dict, d: int) -> np.ndarray:
    """Packed-key offset from a vertex of remainder ``g`` to its neighbour along direction ``j``.

    The neighbour along ``j`` subtracts 1 from every coordinate and adds ``d + 1`` to
    coordinate ``j``. In remainder/quotient form: for ``g ≥ 1`` the remainder drops by one
    and quotient ``j`` grows by one; for ``g = 0`` the remainder becomes ``d``, every
    quotient drops by one and quotient ``j`` grows by one.
    """
    dp1 = d + 1
    n_words = layout["n_words"]
    deltas = np.zeros((dp1, dp1, n_words), np.int64)
    word, shift = layout["field_word"], layout["field_shift"]
    for g in range(dp1):
        for j in range(dp1):
            delta = deltas[g, j]
            if g >= 1:
                delta[0] -= 1 << layout["r_shift"]
            else:
                delta[0] += d << layout["r_shift"]
                for c in range(1, dp1):
                    delta[word[c]] -= 1 << shift[c]
            if j >= 1:
                delta[word[j]] += 1 << shift[j]
    return deltas
