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
* Vertices are found with a hash table while splatting, then sorted by their packed key,
  remainder first. A lattice neighbour along any direction is then the vertex whose
  packed key is the own key plus a constant that depends only on the remainder and the
  direction, so the neighbours of a sorted run of vertices form a sorted run too: the
  blur finds them by merging two sorted lists, streaming through memory, and no
  neighbour table (``2 (d + 1)`` integers per vertex in the reference code) is stored.
* Voxels on a regular grid are passed as per-channel values plus the grid geometry; the
  position features are computed on the fly instead of being stored.
"""

from __future__ import annotations

import math
import time

import numba as nb
import numpy as np

_HASH_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)
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
def _locate(dense, dense_scale, shape, grid_scale, n_grid, d, scale, codes, weights):
    """First pass: the simplex enclosing every point and its barycentric weights.

    The simplex is written to ``codes[i, c] = quotient_c << 8 | rank_c``, in the array
    that the second pass overwrites with vertex ids (so it costs no extra memory).

    Returns:
        Per coordinate, the smallest and largest quotient (for the key layout).
    """
    n_dense = dense.shape[0]
    n = codes.shape[0]
    dp1 = d + 1
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


@nb.njit(cache=True, inline="always")
def _hash_slot(words, n_words, bits):  # pragma: no cover - compiled
    h = np.uint64(0)
    for w in range(n_words):
        h = (h ^ np.uint64(words[w])) * _HASH_MULTIPLIER
    return np.int64(h >> np.uint64(64 - bits))


@nb.njit(cache=True, inline="always")
def _find_slot(table, bits, words, n_words):  # pragma: no cover - compiled
    """Slot of ``words`` in the open-addressing table (inserted if absent).

    Returns:
        The slot, or ``-(slot + 1)`` when the key was inserted.
    """
    mask = (1 << bits) - 1
    slot = _hash_slot(words, n_words, bits)
    while True:
        if table[slot, 0] == 0:  # 0 marks an empty slot: packed keys are never 0
            for w in range(n_words):
                table[slot, w] = words[w]
            return -(slot + 1)
        equal = True
        for w in range(n_words):
            if table[slot, w] != words[w]:
                equal = False
                break
        if equal:
            return slot
        slot = (slot + 1) & mask


@nb.njit(cache=True)
def _number_vertices(
    codes, d, n_words, field_word, field_shift, q_low, r_shift, table, bits, max_fill
):
    """Second pass: find every simplex vertex in a hash table; its slot is its provisional id.

    Kept apart from the arithmetic of the first pass so that this loop is short and the
    processor overlaps the cache misses of successive probes (ids being slots, no probe
    waits for the previous one).

    Returns:
        The number of vertices, or -1 if more than ``max_fill`` were needed (``codes`` is
        then partly overwritten).
    """
    n = codes.shape[0]
    dp1 = d + 1
    filled = 0
    prev = np.full(dp1, -1, np.int32)
    ids = np.zeros(dp1, np.int32)
    by_rank = np.zeros(dp1, np.int64)
    words = np.zeros(n_words, np.int64)
    for index in range(n):
        same = True
        for c in range(dp1):
            if codes[index, c] != prev[c]:
                same = False
                break
        if not same:
            for c in range(dp1):
                prev[c] = codes[index, c]
                by_rank[codes[index, c] & 0xFF] = c
            # vertex 0 is the remainder-0 point; vertex r moves the coordinate of rank
            # d - r + 1 down by one quotient, so each key follows from the previous one
            for w in range(n_words):
                words[w] = 0
            for c in range(1, dp1):
                quot = codes[index, c] >> 8
                words[field_word[c]] += (quot - q_low[c] + 1) << field_shift[c]
            for r in range(dp1):
                if r > 0:
                    words[0] += 1 << r_shift
                    c = by_rank[d - r + 1]
                    if c > 0:
                        words[field_word[c]] -= 1 << field_shift[c]
                slot = _find_slot(table, bits, words, n_words)
                if slot < 0:
                    slot = -slot - 1
                    filled += 1
                    if filled > max_fill:
                        return -1
                ids[r] = slot
        for r in range(dp1):
            codes[index, r] = ids[r]
    return filled


@nb.njit(cache=True)
def _occupied(table, m):
    """Keys and slots of the ``m`` filled slots, in slot order."""
    n_words = table.shape[1]
    keys = np.empty((m, n_words), np.int64)
    slots = np.empty(m, np.int32)
    k = 0
    for slot in range(table.shape[0]):
        if table[slot, 0] != 0:
            for w in range(n_words):
                keys[k, w] = table[slot, w]
            slots[k] = slot
            k += 1
    return keys, slots


@nb.njit(cache=True)
def _radix_sort(keys, payload, bits):
    """Sort one-word keys (< 2**bits) with an int32 payload: LSD radix, 11-bit digits.

    Faster than ``np.argsort`` followed by the two gathers, and needs no index array.
    """
    n = keys.shape[0]
    keys2 = np.empty_like(keys)
    payload2 = np.empty_like(payload)
    radix = 11
    size = 1 << radix
    mask = size - 1
    count = np.empty(size + 1, np.int64)
    shift = 0
    while shift < bits:
        count[:] = 0
        for i in range(n):
            count[((keys[i] >> shift) & mask) + 1] += 1
        if count.max() == n:  # every key has the same digit here: nothing to do
            shift += radix
            continue
        for b in range(size):
            count[b + 1] += count[b]
        for i in range(n):
            b = (keys[i] >> shift) & mask
            pos = count[b]
            count[b] = pos + 1
            keys2[pos] = keys[i]
            payload2[pos] = payload[i]
        keys, keys2 = keys2, keys
        payload, payload2 = payload2, payload
        shift += radix
    return keys, payload


@nb.njit(cache=True)
def _slot_ids(n_slots, sorted_slots):
    """Map from table slot to vertex id (the rank of its key in sorted order)."""
    ids = np.empty(n_slots, np.int32)
    for i in range(sorted_slots.shape[0]):
        ids[sorted_slots[i]] = i
    return ids


@nb.njit(cache=True)
def _neighbour_pairs_1(keys, group_start, deltas):
    """:func:`_neighbour_pairs` for one-word keys, as a branch-free merge (3× faster)."""
    m = keys.shape[0]
    dp1 = deltas.shape[0]
    # a vertex has at most one neighbour per direction: (d + 1) m pairs at most; the
    # buffer is reserved, not touched, so only the pairs written occupy memory
    pairs = np.empty((dp1 * m + 1, 2), np.int32)
    start = np.zeros(dp1 + 1, np.int64)
    count = 0
    for j in range(dp1):
        for g in range(dp1):
            t = g - 1 if g > 0 else dp1 - 1
            i = group_start[g]
            i_end = group_start[g + 1]
            p = group_start[t]
            p_end = group_start[t + 1]
            delta = deltas[g, j, 0]
            while i < i_end and p < p_end:
                a = keys[i, 0] + delta
                b = keys[p, 0]
                # always write, keep only on a match
                pairs[count, 0] = i
                pairs[count, 1] = p
                count += a == b
                i += a <= b
                p += b <= a
        start[j + 1] = count
    return pairs[:count], start


@nb.njit(cache=True)
def _neighbour_pairs(keys, group_start, deltas):
    """All pairs of existing lattice neighbours, per blur direction.

    Along direction ``j`` the neighbour of a vertex in remainder group ``g`` lies in group
    ``g - 1`` (cyclically) at key ``key + deltas[g, j]``; a constant offset keeps sorted keys
    sorted, so one merge of two sorted runs finds every pair.

    Returns:
        ``pairs (P, 2) int32`` and ``start (d + 2,)``: direction ``j``'s pairs are
        ``pairs[start[j]:start[j + 1]]``.
    """
    m, n_words = keys.shape
    dp1 = deltas.shape[0]
    pairs = np.empty((dp1 * m + 1, 2), np.int32)
    start = np.zeros(dp1 + 1, np.int64)
    count = 0
    query = np.empty(n_words, np.int64)
    for j in range(dp1):
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
        start[j + 1] = count
    return pairs[:count], start


@nb.njit(cache=True, parallel=True)
def _relabel(offsets, new_id):
    """Replace creation-order vertex ids by their rank in sorted key order."""
    n, k = offsets.shape
    for i in nb.prange(n):
        for r in range(k):
            offsets[i, r] = new_id[offsets[i, r]]


@nb.njit(cache=True)
def _splat(values, offsets, weights, lattice):
    """Accumulate ``values (V, n)`` onto the lattice vertices with barycentric weights."""
    n_values, n = values.shape
    k = offsets.shape[1]
    lattice[:] = 0.0
    for i in range(n):
        for r in range(k):
            o = offsets[i, r]
            w = weights[i, r]
            for v in range(n_values):
                lattice[o, v] += w * values[v, i]


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


@nb.njit(cache=True)
def _blur(lattice, scratch, pairs, start, reverse):
    """Blur with ``[1 2 1] / 2`` along each lattice direction (a Jacobi update per direction)."""
    n_values = lattice.shape[1]
    dp1 = start.shape[0] - 1
    src = lattice
    dst = scratch
    for step in range(dp1):
        j = dp1 - 1 - step if reverse else step
        dst[:] = src
        for k in range(start[j], start[j + 1]):
            a = pairs[k, 0]
            b = pairs[k, 1]
            for v in range(n_values):
                dst[a, v] += 0.5 * src[b, v]
                dst[b, v] += 0.5 * src[a, v]
        src, dst = dst, src
    return src


@nb.njit(cache=True, parallel=True)
def _slice(lattice, offsets, weights, alpha, out):
    """Interpolate the blurred lattice values back at the points: ``out (V, n)``."""
    n_values, n = out.shape
    k = offsets.shape[1]
    for i in nb.prange(n):
        for v in range(n_values):
            acc = 0.0
            for r in range(k):
                acc += weights[i, r] * lattice[offsets[i, r], v]
            out[v, i] = acc * alpha


def _scale_factors(d: int) -> np.ndarray:
    """Diagonal of the elevation matrix times the lattice's expected standard deviation."""
    inv_std = math.sqrt(2.0 / 3.0) * (d + 1)
    return np.array([inv_std / math.sqrt((i + 1) * (i + 2)) for i in range(d)], dtype=np.float64)


class PermutohedralLattice:
    """A permutohedral lattice built once for a set of points, then used to filter many signals.

    Points are given as ``dense`` features (one row per feature, already in units of the
    kernel's standard deviation after multiplying by ``dense_scale``) and, optionally, the
    coordinates of a regular 3D grid (``grid_shape`` with ``grid_scale`` = voxel spacing /
    σ per axis), point ``i`` being voxel ``i`` of the grid in C order.

    Args:
        dense: ``(D, n)`` array of features (any real dtype; uint8 intensities work), or
            ``None`` for grid positions only.
        dense_scale: Factor per dense feature (1 / σ). Default 1.
        grid_shape: Shape ``(X, Y, Z)`` of the grid when positions are features.
        grid_scale: Factor per grid axis (spacing / σ), used with ``grid_shape``.

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
    ):
        if dense is None and grid_shape is None:
            raise ValueError("a lattice needs dense features, a grid, or both")
        n_grid = 3 if grid_shape is not None else 0
        if dense is None:
            dense = np.zeros((0, int(np.prod(grid_shape))), np.float32)
        dense = np.ascontiguousarray(dense)
        n_dense, n = dense.shape
        if grid_shape is not None and int(np.prod(grid_shape)) != n:
            raise ValueError(f"grid {tuple(grid_shape)} has {np.prod(grid_shape)} voxels, not {n}")
        d = n_dense + n_grid
        if d < 1:
            raise ValueError("a lattice needs at least one feature")
        self.n_points = n
        self.dim = d
        dense_scale = np.ones(n_dense) if dense_scale is None else np.asarray(dense_scale)
        dense_scale = dense_scale.astype(np.float64)
        shape = np.asarray(grid_shape if grid_shape is not None else (1, 1, n), dtype=np.int64)
        gscale = np.asarray(grid_scale if grid_scale is not None else (0, 0, 0), dtype=np.float64)
        scale = _scale_factors(d)
        args = (dense, dense_scale, shape, gscale, n_grid, d, scale)

        self.timings: dict[str, float] = {}  # CPU seconds per build stage, for benchmarks
        clock = time.process_time()

        def lap(stage: str) -> None:
            nonlocal clock
            now = time.process_time()
            self.timings[stage] = self.timings.get(stage, 0.0) + now - clock
            clock = now

        offsets = np.empty((n, d + 1), np.int32)
        weights = np.empty((n, d + 1), np.float32)
        bits = max(10, int(math.ceil(math.log2(4 * n))))
        while True:
            quot_low, quot_high = _locate(*args, offsets, weights)
            layout = _key_layout(quot_low, quot_high, d)
            # zero pages cost nothing until touched
            table = np.zeros((1 << bits, layout["n_words"]), np.int64)
            lap("locate")
            m = _number_vertices(
                offsets,
                d,
                layout["n_words"],
                layout["field_word"],
                layout["field_shift"],
                layout["q_low"],
                layout["r_shift"],
                table,
                bits,
                int(0.6 * (1 << bits)),
            )
            lap("hash")
            if m >= 0:
                break
            bits += 1  # rare: many more vertices than points; start again with a bigger table
        self.n_words = layout["n_words"]
        keys, slots = _occupied(table, m)
        del table
        # sort the vertices by key (remainder first): ids follow the sorted order
        if self.n_words == 1:
            sorted_keys, slots = _radix_sort(keys.reshape(-1), slots, layout["r_shift"] + 8)
            keys = sorted_keys.reshape(-1, 1)
            del sorted_keys
        else:
            order = np.lexsort(keys.T[::-1])
            keys, slots = keys[order], slots[order]
            del order
        lap("sort")
        ids = _slot_ids(1 << bits, slots)
        del slots
        _relabel(offsets, ids)
        del ids
        lap("relabel")
        remainders = keys[:, 0] >> layout["r_shift"]
        group_start = np.searchsorted(remainders, np.arange(d + 2)).astype(np.int64)
        find_pairs = _neighbour_pairs_1 if self.n_words == 1 else _neighbour_pairs
        self.pairs, self.pair_start = find_pairs(keys, group_start, _neighbour_deltas(layout, d))
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
        if self._buffers is None or self._buffers[0].shape[1] != vals.shape[0]:
            # kept between calls: mean field filters the same lattice many times
            self._buffers = tuple(
                np.empty((self.n_vertices, vals.shape[0]), np.float32) for _ in "ab"
            )
        lattice, scratch = self._buffers
        _splat(vals, self.offsets, self.weights, lattice)
        blurred = _blur(lattice, scratch, self.pairs, self.pair_start, reverse)
        out = np.empty_like(vals)
        _slice(blurred, self.offsets, self.weights, np.float32(self.alpha), out)
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
