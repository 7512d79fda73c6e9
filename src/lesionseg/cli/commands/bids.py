"""``lesionseg bids``: a BIDS App that segments the lesions of a BIDS data set."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from lesionseg.cli.options import (
    add_device,
    add_models,
    add_overwrite,
    add_quiet,
    add_speed,
    check_device,
    reduced_precision,
)

if TYPE_CHECKING:
    from lesionseg.data.bids import OutputPlan, VisitInputs
    from lesionseg.inference.method import LoadedMethod

NAME = "bids"
ORDER = 45
HELP = "BIDS App: segment the lesions of a BIDS data set into BIDS derivatives"
DESCRIPTION = """Segment every subject (and session) of a BIDS data set with a trained model,
following the BIDS-Apps convention: BIDS_DIR OUTPUT_DIR participant.

The model's channels are found by suffix in anat/ and dwi/: T1 = *_T1w (no ce-),
T1c/T1ce/T1Gd = *_ce-<agent>_T1w, T2 = *_T2w, PD = *_PDw, FLAIR = *_FLAIR,
DWI = dwi/*_dwi (a 3D trace image; not acq-ADC), ADC = dwi/*_acq-ADC_dwi or *_ADC,
any other name = the suffix of that name; --channel-map NAME=SPEC names another file
(SPEC: a suffix with optional entities, e.g. T1c=ce-gadolinium_T1w). The channels of a
subject must share one grid (co-registered). Several files for a channel that differ only
in run give the last run; other differences are an error naming the entities.

OUTPUT_DIR becomes a BIDS-derivatives data set (BIDS_DIR/derivatives/lesionseg, or a
folder outside BIDS_DIR), on the input's own grid (space-orig), desc = the model's recipe
name (--desc to change it):
  sub-<l>[/ses-<s>]/anat/sub-<l>[_ses-<s>]_space-orig_label-lesion_desc-<m>_mask.nii.gz
  ..._probseg.nii.gz with --save-probabilities (the lesion probability)
  a model of several classes: ..._space-orig_desc-<m>_dseg.nii.gz, desc-<m>_dseg.tsv, and
  a 4D probseg; DWI-based models write into dwi/ instead of anat/.
Each image has a JSON sidecar naming its Sources. Running again adds subjects; existing
outputs need --overwrite.

examples:
  lesionseg bids data/bids data/bids/derivatives/lesionseg participant -m models/dm
  lesionseg bids data/bids out participant -m models/dm --participant-label 01 02
  lesionseg bids data/bids out participant -m models/bs --channel-map T1c=ce-gd_T1w"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``lesionseg bids`` (the BIDS-Apps positional arguments first)."""
    parser.add_argument("bids_dir", type=Path, metavar="BIDS_DIR", help="the raw BIDS data set")
    parser.add_argument(
        "output_dir", type=Path, metavar="OUTPUT_DIR", help="the derivatives folder to write"
    )
    parser.add_argument(
        "analysis_level",
        choices=("participant",),
        help="participant: one segmentation per subject (and session)",
    )
    add_models(parser)
    parser.add_argument(
        "--participant-label",
        "--participant_label",
        nargs="+",
        default=None,
        metavar="LABEL",
        help="subjects to segment (01 or sub-01; default: all)",
    )
    parser.add_argument(
        "--session-label",
        "--session_label",
        nargs="+",
        default=None,
        metavar="LABEL",
        help="sessions to segment (1 or ses-1; default: all)",
    )
    parser.add_argument(
        "--channel-map",
        nargs="+",
        default=[],
        metavar="NAME=SPEC",
        help="the file of a model channel: a suffix with optional entities "
        "(T1c=ce-gadolinium_T1w, DWI=acq-trace_dwi)",
    )
    parser.add_argument(
        "--desc",
        default=None,
        metavar="LABEL",
        help="desc- label of the outputs (default: the recipe name, letters and digits only)",
    )
    parser.add_argument(
        "--variant",
        default=None,
        metavar="NAME",
        help="one of the recipe's prediction variants (`lesionseg describe MODEL` lists them)",
    )
    parser.add_argument(
        "--save-probabilities",
        action="store_true",
        help="also write the probabilities (_probseg.nii.gz)",
    )
    add_device(parser)
    add_speed(parser)
    add_overwrite(parser, "outputs")
    add_quiet(parser)
    parser.add_argument(
        "--shard",
        metavar="K/N",
        help="segment only the K-th of N shares of the subjects/sessions (a job array; "
        "under torchrun each process takes its RANK's share without it)",
    )


def _load_models(args: argparse.Namespace, device: str) -> list[LoadedMethod]:
    """The model(s), with the chosen prediction variant."""
    from lesionseg.inference.pipeline import load_models

    models = load_models(args.model, device=device)
    if args.variant is not None:
        models = [m.variant(args.variant) for m in models]
    return models


def _method(models: list[LoadedMethod]) -> str:
    """The model's recipe name (or folder name), for sidecars and the default ``desc``."""
    first = models[0]
    name = (first.config.get("recipe") or {}).get("name")
    folder = first.folder.name if first.folder is not None else "lesionseg"
    return str(name) if isinstance(name, str) and name else folder


def _desc(args: argparse.Namespace, models: list[LoadedMethod]) -> str:
    from lesionseg.data.bids import check_label, method_label

    if args.desc is not None:
        return check_label(args.desc, "--desc")
    return method_label(_method(models), args.variant, "lesionseg")


def _generated_by(args: argparse.Namespace, models: list[LoadedMethod], desc: str) -> str:
    variant = f", variant {args.variant}" if args.variant else ""
    return f"lesionseg bids with model {_method(models)}{variant} (desc-{desc})"


def _predict(
    models: list[LoadedMethod],
    plan: OutputPlan,
    work: Path,
    args: argparse.Namespace,
    device: str,
    amp: bool,
) -> None:
    """Predict one visit into ``work`` (inside the output), then move it to its BIDS names."""
    from lesionseg.data.bids import is_binary, store_outputs
    from lesionseg.data.dataset import Subject
    from lesionseg.inference.pipeline import predict_subject

    inputs = plan.inputs
    subject = Subject(inputs.visit.id, {c: image.path for c, image in inputs.channels.items()})
    out = predict_subject(
        models,
        subject,
        work,
        device=device,
        save_probabilities=args.save_probabilities,
        overwrite=True,  # the work folder is this run's own
        amp=amp,
        layout=args.layout,
    )
    labels = models[0].config["labels"]
    store_outputs(
        plan, out.segmentation, out.probabilities, is_binary(labels), _method(models), labels
    )


def _find_inputs(args: argparse.Namespace, models: list[LoadedMethod]) -> list[VisitInputs]:
    """Every selected visit's files, matched to the models' channels (before any writing)."""
    from lesionseg.data import bids
    from lesionseg.inference.inputs import parse_shard, shard_subjects
    from lesionseg.inference.pipeline import required_channels

    channel_map = bids.parse_channel_map(args.channel_map)
    participants = bids.strip_labels(args.participant_label, "sub", "--participant-label")
    sessions = bids.strip_labels(args.session_label, "ses", "--session-label")
    layout = bids.load_layout(args.bids_dir)
    visits = shard_subjects(
        bids.select_visits(layout, participants, sessions), parse_shard(args.shard)
    )
    return bids.find_inputs(layout, visits, required_channels(models), channel_map)


def _prepare_output(
    args: argparse.Namespace, models: list[LoadedMethod], inputs: list[VisitInputs], desc: str
) -> tuple[Path, list[OutputPlan]]:
    """Check the derivatives folder and every output; write its top-level files."""
    from lesionseg.data import bids
    from lesionseg.data.atomic import write_json_atomic

    out = bids.prepare_derivatives(args.output_dir, args.bids_dir, args.overwrite)
    labels = models[0].config["labels"]
    binary = bids.is_binary(labels)
    plans = bids.plan_outputs(out, inputs, desc, binary, args.save_probabilities, args.overwrite)
    description = bids.derivative_description(out, args.bids_dir, _generated_by(args, models, desc))
    write_json_atomic(out / "dataset_description.json", description)
    if not binary:
        bids.write_label_table(out, desc, labels)
    return out, plans


def _predict_all(
    models: list[LoadedMethod],
    plans: list[OutputPlan],
    out: Path,
    args: argparse.Namespace,
    device: str,
    amp: bool,
) -> None:
    """Predict each visit with a progress bar, through a work folder inside ``out``."""
    from tqdm import tqdm

    from lesionseg.data.atomic import make_folder
    from lesionseg.data.ownership import remove_owned, temp_prefix

    # a temporary name: a killed run's work folder is removed by the next run
    work = make_folder(out / f"{temp_prefix()}work")
    try:
        bar = tqdm(plans, desc="bids", unit="subject", disable=args.quiet)
        for plan in bar:
            bar.set_postfix_str(plan.inputs.visit.id)
            t0 = time.perf_counter()
            _predict(models, plan, work, args, device, amp)
            if not args.quiet:
                written = plan.labels.relative_to(out)
                tqdm.write(f"{plan.inputs.visit}: {written} ({time.perf_counter() - t0:.1f} s)")
    finally:
        remove_owned(work, out)


def run(args: argparse.Namespace) -> int:
    """Find every visit's inputs, check the outputs, then predict each visit."""
    device = check_device(args.device)
    models = _load_models(args, device)
    amp = reduced_precision(args, models, device)
    desc = _desc(args, models)
    inputs = _find_inputs(args, models)
    out, plans = _prepare_output(args, models, inputs, desc)
    if not args.quiet:
        for note in (n for item in inputs for n in item.notes):
            print(note, file=sys.stderr)
    start = time.perf_counter()
    _predict_all(models, plans, out, args, device, amp)
    seconds = time.perf_counter() - start
    print(f"{len(plans)} subject(s)/session(s) in {seconds:.1f} s -> {out} (desc-{desc})")
    return 0
