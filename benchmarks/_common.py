"""Helpers shared by the benchmarks: measuring children in fresh processes, matmul FLOP/s.

A figure of peak memory (``ru_maxrss``) is only the benchmark's own if it is taken in
a process that ran nothing else: :func:`run_child` calls a module-level function of a
benchmark module in a fresh Python process and returns the JSON-able dict it returns.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterator

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_child(module: str, function: str, args: list, env: dict[str, str] | None = None) -> dict:
    """``benchmarks.<module>.<function>(*args)`` in a fresh Python process.

    Args:
        module: Module of the ``benchmarks`` package, e.g. ``"bench_dunet"``.
        function: Its function; it must return a JSON-serialisable dict.
        args: Positional arguments (JSON-serialisable).
        env: Extra environment variables of the child.

    Returns:
        The function's dict.

    Raises:
        RuntimeError: The child failed (with the end of its stderr).
    """
    code = (
        f"import json, sys; from benchmarks import {module} as b; "
        f"print('RESULT ' + json.dumps(b.{function}(*json.loads(sys.argv[1]))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(args)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
        check=False,
    )
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"benchmark child {function} failed:\n{done.stderr[-3000:]}")


def peak_rss_bytes() -> int:
    """Peak resident memory of this process so far, in bytes (``ru_maxrss`` is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@contextlib.contextmanager
def measure() -> Iterator[dict[str, float]]:
    """Measure a block: on exit the dict holds ``wall`` and ``cpu`` seconds and ``peak_rss``."""
    record: dict[str, float] = {}
    wall, cpu = time.perf_counter(), time.process_time()
    yield record
    record["wall"] = time.perf_counter() - wall
    record["cpu"] = time.process_time() - cpu
    record["peak_rss"] = peak_rss_bytes()


def child_matmul(n: int = 2048, dtype: str = "float32") -> dict:
    """The machine's reference FLOP/s: best of 10 ``n``×``n`` products, after 3 warm-ups."""
    a, b = torch.randn(n, n).to(getattr(torch, dtype)), torch.randn(n, n).to(getattr(torch, dtype))
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(10):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return {"flops": 2 * n**3 / best}


def records(benchmark: str, rows: list[tuple], common: dict) -> list[dict]:
    """``(name, metric, value, unit)`` rows as the JSON records every benchmark writes."""
    return [
        {
            "benchmark": f"{benchmark}: {name}",
            "metric": metric,
            "value": float(value),
            "unit": unit,
            **common,
        }
        for name, metric, value, unit in rows
    ]


#: How every paper model's prediction is measured, one after another in the same run:
#: (row name, ``layout`` of the predictor, bfloat16 autocast).
VARIANTS = (
    ("float32, default layout", "contiguous", False),
    ("float32, channels-last", "channels_last", False),
    ("bfloat16, channels-last", "channels_last", True),
)


def variant_settings() -> tuple[str, bool]:
    """In a child: the ``(layout, amp)`` its parent's :func:`measure_variants` asked for."""
    return os.environ.get("BENCH_LAYOUT", "auto"), os.environ.get("BENCH_AMP") == "1"


def _labels(array: np.ndarray) -> np.ndarray:
    """Labels from what a child saved: a foreground probability (> 0.5) or a label map."""
    return array > 0.5 if np.issubdtype(array.dtype, np.floating) else array


def measure_variants(
    module: str,
    function: str,
    args: list,
    useful_flops: float | None,
    brain: np.ndarray | None,
    workdir: str,
    label: str = "lesionseg predict_volume",
) -> list[tuple]:
    """Rows for the three :data:`VARIANTS` of one prediction, each in a fresh process.

    The child ``benchmarks.<module>.<function>(*args)`` reads :func:`variant_settings`,
    predicts, saves its labels (or foreground probability) with ``np.save`` to the path
    in ``BENCH_OUT`` and returns :func:`measure`'s record. Useful FLOP/s are compared
    with the matrix product of the same precision, measured in the same run; labels with
    those of the first variant (float32, default layout) on the ``brain`` voxels (None:
    all that was saved). ``useful_flops`` None: the child's record gives them.

    Returns:
        ``(name, metric, value, unit)`` rows.
    """
    matmul = {
        bf16: run_child("_common", "child_matmul", [2048, "bfloat16" if bf16 else "float32"])
        for bf16 in (False, True)
    }
    rows: list[tuple] = [
        ("matmul 2048 float32 (same run)", "FLOP/s", matmul[False]["flops"] / 1e9, "GFLOP/s"),
        ("matmul 2048 bfloat16 (same run)", "FLOP/s", matmul[True]["flops"] / 1e9, "GFLOP/s"),
    ]
    reference, first_wall = None, None
    for name, layout, bf16 in VARIANTS:
        out = os.path.join(workdir, f"variant-{layout}-{int(bf16)}.npy")
        env = {"BENCH_LAYOUT": layout, "BENCH_AMP": "1" if bf16 else "0", "BENCH_OUT": out}
        record = run_child(module, function, args, env=env)
        labels = _labels(np.load(out))
        reference = labels if reference is None else reference
        first_wall = record["wall"] if first_wall is None else first_wall
        where = slice(None) if brain is None else brain > 0
        useful = (useful_flops or record["useful_flops"]) / record["wall"]
        rows += [
            (f"{label}, {name}", "wall time", record["wall"], "s"),
            (f"{label}, {name}", "peak memory", record["peak_rss"] / 2**30, "GiB"),
            (f"{label}, {name}", "useful FLOP/s", useful / 1e9, "GFLOP/s"),
            (f"{label}, {name}", "useful FLOP/s / matmul", useful / matmul[bf16]["flops"], ""),
            (f"{label}, {name}", "speed-up over float32 default", first_wall / record["wall"], "x"),
            (
                f"{label}, {name}",
                "label agreement with float32 default",
                float((labels == reference)[where].mean()),
                "fraction of brain voxels",
            ),
        ]
    return rows
