"""The end-to-end demo: phantoms → training → prediction on held-out subjects → evaluation.

Every step goes through the public API that a user would call; the demo only
chains them and keeps their outputs in one folder::

    DIR/data/          the synthesised data set (nnU-Net layout; imagesTs held out)
    DIR/model/         the trained model (progress.png, log.csv, ...)
    DIR/predictions/   <case>_seg.nii.gz for the held-out subjects
    DIR/evaluation/    per-case and summary tables
    DIR/pictures/      held-out subjects with reference and predicted outlines
    DIR/report/        lesion tables, location classes and HTML pages (index.html)

Steps whose outputs exist are reused (a finished model, the data set), so running
the demo again only redoes what is missing.

The held-out subjects are the last 20 % of ``subjects`` phantoms, as ``lesionseg synth``
splits them. A method may train on more phantoms than that split leaves
(:data:`EXTRA_TRAINING`): they are the phantoms that follow, added to the training
split only, so the held-out subjects stay the same whatever the number of training
phantoms.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lesionseg.errors import LesionsegError

#: Method → (phantom task, recipe) of the demo.
METHODS = {
    "deepmedic": ("ms", "deepmedic-tiny"),
    "dunet": ("stroke-chronic", "dunet-demo"),
    "cascade": ("ms", "msseg-tiny"),
    "brainsegnet": ("tumor", "brainsegnet-brats-tiny"),
    "edd-muscle": ("stroke-acute", "edd-muscle-tiny"),
}

#: Method → (merged regions of ``lesionseg evaluate``, the region whose Dice the demo
#: reports); methods not listed report their single lesion label.
REGIONS = {"brainsegnet": ("brats", "whole")}

#: Method → training phantoms added after the ``subjects`` phantoms (ids ``subjects``,
#: ``subjects + 1``, ...; the held-out split is unchanged). D-UNet's chronic-stroke
#: lesions range from a few dozen voxels to thousands: 16 training phantoms show too
#: few small ones (docs/dunet.md). MUSCLE Net learns from EDD's small components on the
#: training scans: 16 phantoms give about 90 (docs/edd-muscle.md).
EXTRA_TRAINING = {"dunet": 28, "edd-muscle": 24}

#: Voxel size of the demo's phantoms (mm).
SPACING_MM = 2.0


@dataclass
class DemoResult:
    """What the demo produced.

    Attributes:
        out_dir: The demo folder.
        dice: Held-out Dice per case.
        seconds: Wall time per step.
        files: Named outputs (model, predictions, evaluation, pictures).
    """

    out_dir: Path
    dice: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def mean_dice(self) -> float:
        """Mean held-out Dice."""
        return float(np.mean(list(self.dice.values()))) if self.dice else float("nan")


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _dice(pred: np.ndarray, ref: np.ndarray) -> float:
    p, r = pred > 0, ref > 0
    denom = int(p.sum() + r.sum())
    return 1.0 if denom == 0 else 2.0 * int((p & r).sum()) / denom


def _evaluate(
    pred_dir: Path,
    data_dir: Path,
    out: Path,
    cases: list[str],
    regions: tuple[str, str] | None = None,
) -> dict[str, float]:
    """Dice per case through the evaluation API (plain Dice if it is not installed).

    ``regions``: a scheme of merged regions and the region reported (the tumour's whole
    tumour), or None for the lesion label.
    """
    try:
        from lesionseg.evaluation import evaluate
        from lesionseg.evaluation.outputs import write_outputs
    except ImportError:
        from lesionseg.data.nifti import load_nifti

        return {
            c: _dice(
                load_nifti(pred_dir / f"{c}_seg.nii.gz").data,
                load_nifti(data_dir / "labelsTs" / f"{c}.nii.gz").data,
            )
            for c in cases
        }
    scheme, reported = regions if regions else (None, None)
    result = evaluate(pred_dir, data_dir / "labelsTs", regions=scheme)
    write_outputs(result, out, overwrite=True)
    dice: dict[str, float] = {}
    found = {str(r.get("region")) for r in result.rows}
    wanted = (reported,) if reported else ("label1", "1", "lesion")
    for row in result.rows:  # the lesion label's (or the reported region's) row of each case
        if len(found) == 1 or str(row.get("region")) in wanted:
            dice[str(row["case"])] = float(row["dice"])
    return dice


def _add_training_phantoms(data: Path, task: str, first: int, count: int, seed: int) -> None:
    """Add phantoms ``first … first + count − 1`` of ``task`` to the training split of ``data``.

    They are the phantoms ``lesionseg synth`` would write with more subjects (same
    seed, same settings), put in ``imagesTr``; ``phantoms.json`` lists them and
    ``dataset.json`` (rewritten last, so an interrupted run leaves none) counts them.
    """
    from lesionseg.data.atomic import write_json_atomic
    from lesionseg.data.phantoms import generate_subject, get_task
    from lesionseg.data.phantoms.writer import (
        case_record,
        decathlon_lists,
        write_case,
        write_metadata,
    )

    phantom_task = get_task(task)
    spec = json.loads((data / "dataset.json").read_text())
    records = json.loads((data / "phantoms.json").read_text())["cases"]
    (data / "dataset.json").unlink()
    for index in range(first, first + count):
        phantom = generate_subject(phantom_task, index, seed, SPACING_MM, None, -1.0)
        write_case(data, phantom_task, phantom, "train")
        records.append(case_record(phantom, "train"))
    write_metadata(data, phantom_task, records)
    spec["numTraining"] = int(spec["numTraining"]) + count
    spec.update(decathlon_lists(list(phantom_task.channels), records))
    spec["lesionseg_phantom"]["extra_training_subjects"] = count
    write_json_atomic(data / "dataset.json", spec)


def _has_data(data: Path, training: int) -> bool:
    """A complete demo data set with ``training`` training phantoms is in ``data``."""
    try:
        return int(json.loads((data / "dataset.json").read_text())["numTraining"]) == training
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _pictures(
    data_dir: Path, pred_dir: Path, cases: list[str], channel: str, path: Path
) -> Path | None:
    """Reference and predicted outlines of up to two held-out subjects."""
    try:
        from lesionseg.report.slices import SliceRow, lesion_centre, save_slices
    except ImportError:
        return None
    from lesionseg.data.dataset import load_dataset
    from lesionseg.data.nifti import load_nifti, to_canonical

    dataset = load_dataset(data_dir)
    rows = []
    for case in cases[:2]:
        subject = dataset.subject(case)
        image, _ = to_canonical(load_nifti(subject.channels[channel]))
        ref, _ = to_canonical(load_nifti(subject.label, dtype=None))
        pred, _ = to_canonical(load_nifti(pred_dir / f"{case}_seg.nii.gz", dtype=None))
        centre = tuple(int(c) for c in lesion_centre(np.asarray(ref.data)))
        for title, label in (("reference", ref.data), ("prediction", pred.data)):
            rows.append(
                SliceRow(
                    f"{case} {title}",
                    {channel: image.data},
                    image.grid.spacing,
                    label=np.asarray(label).astype(np.uint8),
                    centre=centre,
                )
            )
    return save_slices(rows, path)


def run_demo(
    out_dir: str | Path = "lesionseg-demo",
    *,
    method: str = "deepmedic",
    subjects: int = 20,
    seed: int = 0,
    device: str = "auto",
    overwrite: bool = False,
    progress: bool = True,
) -> DemoResult:
    """Synthesise phantoms, train the method's tiny recipe, predict and evaluate held-out cases.

    Args:
        out_dir: Demo folder.
        method: ``deepmedic`` (MS phantoms) or another key of :data:`METHODS`.
        subjects: Phantoms to synthesise (the last 20 % are held out); the method's
            :data:`EXTRA_TRAINING` phantoms come on top, for training only.
        seed: Seed of the phantoms and of training.
        device: Training and prediction device.
        overwrite: Redo every step.
        progress: Progress bars.

    Raises:
        LesionsegError: Unknown method, or a step's own error.
    """
    from lesionseg.cli.main import main as cli
    from lesionseg.training.recipe import find_recipe
    from lesionseg.training.trainer import resume, train

    if method not in METHODS:
        raise LesionsegError(f"--method: unknown method {method!r} (known: {', '.join(METHODS)})")
    task, recipe = METHODS[method]
    find_recipe(recipe)  # fail now, not after synthesis, if the recipe is missing
    out = Path(out_dir)
    data, model = out / "data", out / "model"
    preds, evaluation, pictures = out / "predictions", out / "evaluation", out / "pictures"
    report = out / "report"
    result = DemoResult(out)

    # quiet (no progress): errors and the final summary only
    say = _say if progress else (lambda message: None)

    def run_step(argv: list[str]) -> int:
        """A ``lesionseg`` command of the demo; quiet, its summary line is not shown either."""
        if progress:
            return cli(argv)
        with contextlib.redirect_stdout(io.StringIO()):
            return cli(argv)

    extra = EXTRA_TRAINING.get(method, 0)
    n_test = min(int(round(subjects * 0.2)), subjects - 1) if subjects >= 1 else 0
    tic = time.perf_counter()
    if overwrite or not _has_data(data, subjects - n_test + extra):
        more = f" (+{extra} for training)" if extra else ""
        say(f"[1/5] synthesising {subjects}{more} '{task}' phantoms at 2 mm into {data}")
        args = [
            "synth",
            task,
            "-o",
            str(data),
            "--subjects",
            str(subjects),
            "--seed",
            str(seed),
            "--spacing",
            str(SPACING_MM),
            "--test-fraction",
            "0.2",
            "--overwrite",
        ]
        if not progress:
            args.append("--quiet")
        if run_step(args) != 0:
            raise LesionsegError("phantom synthesis failed (see the message above)")
        if extra:
            _add_training_phantoms(data, task, subjects, extra, seed)
    else:
        say(f"[1/5] reusing the phantoms in {data}")
    result.seconds["synthesis"] = time.perf_counter() - tic

    tic = time.perf_counter()
    finished = (model / "training.json").is_file() and (model / "model.safetensors").is_file()
    if finished and not overwrite:
        say(f"[2/5] reusing the trained model in {model}")
    elif (model / "checkpoint.pt").is_file() and not overwrite:
        say(f"[2/5] resuming the training in {model}")
        resume(model, device=device, progress=progress)
    else:
        say(f"[2/5] training {recipe} on the training phantoms into {model}")
        train(
            recipe,
            data,
            model,
            seed=seed,
            device=device,
            overwrite=True,
            progress=progress,
            cache=out / "cache",
        )
    result.seconds["training"] = time.perf_counter() - tic

    tic = time.perf_counter()
    say(f"[3/5] predicting the held-out phantoms into {preds}")
    args = ["predict", "-m", str(model), "-i", str(data), "-o", str(preds), "--overwrite"]
    if not progress:
        args.append("--quiet")
    if device != "auto":
        args += ["--device", device]
    if run_step(args) != 0:
        raise LesionsegError("prediction failed (see the message above)")
    cases = sorted(p.name[: -len("_seg.nii.gz")] for p in preds.glob("*_seg.nii.gz"))
    result.seconds["prediction"] = time.perf_counter() - tic

    tic = time.perf_counter()
    say(f"[4/5] evaluating against the reference labels into {evaluation}")
    result.dice = _evaluate(preds, data, evaluation, cases, REGIONS.get(method))
    channel = json.loads((data / "dataset.json").read_text())["channel_names"]
    channel_names = [channel[k] for k in sorted(channel, key=int)]
    main_channel = "FLAIR" if "FLAIR" in channel_names else channel_names[0]
    picture = _pictures(data, preds, cases, main_channel, pictures / "heldout.png")
    result.seconds["evaluation"] = time.perf_counter() - tic

    tic = time.perf_counter()
    say(f"[5/5] writing the lesion report of the held-out phantoms into {report}")
    # The affine registration keeps the demo within its minutes (lesionseg report's
    # default adds a B-spline: a few more seconds a case, a few points of agreement).
    args = ["report", str(preds), "-i", str(data), "-o", str(report), "--overwrite"]
    if run_step([*args, "--registration", "affine", "--channel", main_channel]) != 0:
        raise LesionsegError("the report failed (see the message above)")
    result.seconds["report"] = time.perf_counter() - tic

    result.files = {
        "model": model,
        "predictions": preds,
        "evaluation": evaluation,
        "training curves": model / "progress.png",
        "report": report / "index.html",
    }
    if picture is not None:
        result.files["pictures"] = picture
    return result
