"""``lesionseg export``: a trained network as an ONNX file."""

from __future__ import annotations

import argparse

from lesionseg.cli.options import add_overwrite

NAME = "export"
ORDER = 45
HELP = "export a trained network to ONNX (channels, labels, preprocessing as metadata)"
DESCRIPTION = """Export the network of a model folder to ONNX, for onnxruntime or another runtime.
A method of several networks (the MSSEG cascade, EDD + MUSCLE) exports one of them with
--network; the way lesionseg combines them is not part of the file. The input is
image (N, C, *size) with N free and the spatial size fixed (--size: output voxels per
axis, rounded to what the network accepts; a patch classifier takes its patch); the
output is the logits. The metadata (lesionseg_config, lesionseg_geometry) hold the
channel names and order, labels, preprocessing and sizes as JSON.

examples:
  lesionseg export models/dm -o dm.onnx --size 45
  lesionseg export models/edd-muscle -o edd.onnx --network edd --size 256 256"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``lesionseg export``."""
    parser.add_argument("model", metavar="MODEL_DIR", help="trained model folder")
    parser.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    parser.add_argument("--network", help="which network of a multi-network method")
    parser.add_argument(
        "--size", type=int, nargs="+", metavar="N", help="output size per axis (one or all)"
    )
    add_overwrite(parser, "file")


def run(args: argparse.Namespace) -> int:
    """Export and print what was exported."""
    from lesionseg.inference.onnx_export import export_onnx

    done = export_onnx(args.model, args.output, args.network, args.size, args.overwrite)
    shape = "×".join(map(str, done["input"][1:]))
    print(f"exported network {done['network']!r}: input (N, {shape}) -> {args.output}")
    return 0
