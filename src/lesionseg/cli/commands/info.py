"""``lesionseg info``: describe a NIfTI file or a data set."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "info"
ORDER = 10
HELP = "shape, spacing, orientation, channels, labels and lesions of a file or data set"
DESCRIPTION = """Describe a NIfTI file (geometry; label counts, lesion volume in ml and number of
connected lesions for a label map; per volume for a 4D file such as the class probabilities
`lesionseg predict --save-probabilities` writes), a data set (channels, labels, one row per
subject), or a plain folder of NIfTI files (one line each).

example:
  lesionseg info data/ms
  lesionseg info data/ms/labelsTr/ms_000.nii.gz"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``lesionseg info``."""
    parser.add_argument("source", help="a .nii/.nii.gz file, a data set folder or a CSV manifest")


def run(args: argparse.Namespace) -> int:
    """Print the description."""
    from lesionseg.data.dataset import load_dataset
    from lesionseg.data.nifti import is_nifti_path
    from lesionseg.data.summary import describe_dataset, describe_folder, describe_volume

    source = Path(args.source)
    if is_nifti_path(source) or (source.is_file() and source.suffix not in (".csv", ".tsv")):
        lines = describe_volume(source)
    elif source.is_dir() and not (source / "dataset.json").is_file():
        lines = describe_folder(source)
    else:
        lines = describe_dataset(load_dataset(source))
    print("\n".join(lines))
    return 0
