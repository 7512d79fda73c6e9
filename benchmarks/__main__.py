"""Run benchmarks and write their results as JSON and a Markdown table.

Each ``benchmarks/bench_<name>.py`` defines ``run(quick: bool) -> list[dict]``;
every row has at least ``benchmark``, ``metric``, ``value`` and ``unit`` and may
carry more fields (device, sizes, peers). Results go to
``benchmarks/results/<name>.json`` and ``benchmarks/results/<name>.md``, and a
table is printed.

Usage:
    python -m benchmarks                 # all benchmarks
    python -m benchmarks phantoms crf    # some
    python -m benchmarks --quick         # smaller sizes, for a smoke run
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def available() -> list[str]:
    """Names of the benchmark modules in this folder."""
    return sorted(p.stem[len("bench_") :] for p in HERE.glob("bench_*.py"))


def machine() -> dict:
    """Facts about the machine the figures were measured on."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def markdown(rows: list[dict]) -> str:
    """Rows as a Markdown table (value rounded to 4 significant digits)."""
    lines = ["| benchmark | metric | value | unit | notes |", "|---|---|---:|---|---|"]
    for row in rows:
        notes = ", ".join(
            f"{k}={v}" for k, v in row.items() if k not in ("benchmark", "metric", "value", "unit")
        )
        value = row["value"]
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        lines.append(
            f"| {row['benchmark']} | {row['metric']} | {shown} | {row['unit']} | {notes} |"
        )
    return "\n".join(lines) + "\n"


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as stream:
        stream.write(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    """Run the named benchmarks (all by default)."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n")[0]
    )
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default all: {available()})")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    args = parser.parse_args(argv)
    names = args.names or available()
    unknown = sorted(set(names) - set(available()))
    if unknown:
        print(f"python -m benchmarks: error: unknown benchmark(s) {unknown}", file=sys.stderr)
        return 2
    RESULTS.mkdir(exist_ok=True)
    for name in names:
        module = importlib.import_module(f"benchmarks.bench_{name}")
        start = time.perf_counter()
        rows = module.run(quick=args.quick)
        record = {
            "benchmark": name,
            "quick": args.quick,
            "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "seconds": round(time.perf_counter() - start, 1),
            "machine": machine(),
            "rows": rows,
        }
        suffix = "-quick" if args.quick else ""
        _write_atomic(RESULTS / f"{name}{suffix}.json", json.dumps(record, indent=2) + "\n")
        table = markdown(rows)
        _write_atomic(RESULTS / f"{name}{suffix}.md", table)
        print(f"\n## {name}\n\n{table}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
