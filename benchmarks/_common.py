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


def child_matmul(n: int = 2048) -> dict:
    """The machine's reference FLOP/s: best of 10 float32 ``n``×``n`` products, after 3 warm-ups."""
    a, b = torch.randn(n, n), torch.randn(n, n)
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
