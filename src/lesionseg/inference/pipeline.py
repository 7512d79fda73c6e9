"""Predict a subject end to end: files in, label map (and probabilities) out on its own grid.

:func:`predict_subject` matches the subject's channels to the models' by name,
preprocesses them as each model was trained (its config's ``preprocess``),
predicts (ensemble mean, optional flip test-time augmentation), runs the recipe's
post-processing steps, maps the result back onto the input grid with the
preprocessing record, and writes ``<case>_seg.nii.gz`` (uint8 labels) and, when
asked, ``<case>_prob.nii.gz`` (one map per class) with the input's header.

Post-processing: the recipe's ``predict.postprocess`` steps (names or
``{name: ..., <options>}``, looked up in ``lesionseg.postprocess.POSTPROCESS``), with
the command line's overrides (:mod:`lesionseg.postprocess.overrides`), run in order on
the preprocessed grid with its spacing, each passing ``(probabilities, labels)`` on to
the next as :mod:`lesionseg.postprocess.chain` defines; the last label map (or the
argmax of the last probabilities) is mapped back to the input grid.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lesionseg.data.dataset import Subject
from lesionseg.data.nifti import save_nifti
from lesionseg.data.prediction_files import FILE_ENDING, SEGMENTATION_SUFFIX, beside
from lesionseg.errors import LesionsegError
from lesionseg.inference.method import LoadedMethod, load_method
from lesionseg.inference.predictor import labels_from_probabilities
from lesionseg.inference.uncertainty import UNCERTAINTY_MAPS, UncertaintyAccumulator
from lesionseg.postprocess.chain import Step, apply_step, parse_steps
from lesionseg.postprocess.overrides import PostprocessOverrides
from lesionseg.preprocess import PreprocessConfig, preprocess_subject

#: Flip axes used by ``--tta``: the sagittal reflection DeepMedic is trained with.
TTA_FLIP_AXES = (0,)


@dataclass
class PredictionOutputs:
    """Files written for one subject."""

    subject_id: str
    segmentation: Path
    probabilities: Path | None = None
    uncertainty: Path | None = None


def load_models(
    folders: Sequence[str | Path], device: str | torch.device = "cpu"
) -> list[LoadedMethod]:
    """Load model folders (each a method: its networks and graph) and check they agree.

    Several folders are an ensemble of whole methods: the mean of their final
    probabilities.

    Raises:
        LesionsegError: A bad folder, or members with different labels.
    """
    loaded = [load_method(folder, device=device) for folder in folders]
    check_compatible(loaded)
    return loaded


def check_compatible(models: Sequence[LoadedMethod]) -> None:
    """Ensemble members must predict the same labels.

    Raises:
        LesionsegError: No models, or labels / class counts that differ.
    """
    if not models:
        raise LesionsegError("no model given")
    first = models[0]
    for other in models[1:]:
        if {str(k): v for k, v in other.config["labels"].items()} != {
            str(k): v for k, v in first.config["labels"].items()
        }:
            raise LesionsegError(
                f"models {first.folder} and {other.folder} predict different labels "
                f"({first.config['labels']} vs {other.config['labels']})"
            )
        if other.num_outputs != first.num_outputs:
            raise LesionsegError(f"models {first.folder} and {other.folder} differ in class count")


def required_channels(models: Sequence[LoadedMethod]) -> list[str]:
    """Channels the ensemble needs, in the first model's order, then any others."""
    names: list[str] = []
    for m in models:
        names += [c for c in m.channel_names if c not in names]
    return names


def file_channels(models: Sequence[LoadedMethod]) -> list[str]:
    """What ``<case>_XXXX`` files mean: the first model's training channels in file order.

    A recipe that reads fewer channels than its data set (``channels: [DWI]``) still names
    channel ``_0001`` as the data set did; channels another member needs follow.
    """
    names = list(models[0].data_channel_names)
    return names + [c for c in required_channels(models) if c not in names]


def check_channels(subject: Subject, models: Sequence[LoadedMethod]) -> None:
    """The subject must have the channels the models use, by name.

    Channels the training data set had but the recipe did not read (``channels``) are
    ignored; any other channel is an error, as it points at files given in the wrong order.

    Raises:
        LesionsegError: A missing channel or one no model knows.
    """
    needed = required_channels(models)
    known = {c for m in models for c in m.data_channel_names} | set(needed)
    missing = [c for c in needed if c not in subject.channels]
    extra = [c for c in subject.channels if c not in known]
    if missing:
        raise LesionsegError(
            f"subject {subject.id!r} lacks channel(s) {', '.join(missing)} needed by the model "
            f"(model channels: {', '.join(needed)}; given: {', '.join(subject.channels) or 'none'})"
        )
    if extra:
        raise LesionsegError(
            f"subject {subject.id!r} has channel(s) {', '.join(extra)} that the model does not use "
            f"(model channels: {', '.join(needed)})"
        )


#: How outputs are named: lesionseg's ``<case>_seg.nii.gz`` (beside ``<case>_prob.nii.gz``),
#: or nnU-Net's ``<case>.nii.gz``, which ``nnUNetv2_evaluate_simple`` and nnU-Net's folder
#: tools read (every ``.nii.gz`` of the folder is a case there, so no probability maps).
NAMINGS = ("lesionseg", "nnunet")


def output_paths(
    out_dir: str | Path, subject_id: str, naming: str = "lesionseg"
) -> tuple[Path, Path]:
    """The label map and probability map files of a subject in ``out_dir``.

    Raises:
        LesionsegError: An unknown ``naming``.
    """
    out_dir = Path(out_dir)
    prob = beside(out_dir, subject_id, "probabilities")
    if naming == "nnunet":
        return out_dir / f"{subject_id}{FILE_ENDING}", prob
    if naming != "lesionseg":
        raise LesionsegError(f"--naming must be one of {', '.join(NAMINGS)}, got {naming!r}")
    return out_dir / f"{subject_id}{SEGMENTATION_SUFFIX}{FILE_ENDING}", prob


def uncertainty_paths(out_dir: str | Path, subject_id: str) -> tuple[Path, Path]:
    """The uncertainty maps and member label maps of a subject (``--save-uncertainty``)."""
    return beside(out_dir, subject_id, "uncertainty"), beside(out_dir, subject_id, "members")


def check_naming(naming: str, save_probabilities: bool) -> None:
    """nnU-Net's naming has no place for probability or uncertainty maps.

    Raises:
        LesionsegError: ``--naming nnunet`` with ``--save-probabilities`` (or
            ``--save-uncertainty``), or a bad name.
    """
    output_paths(".", "case", naming)
    if naming == "nnunet" and save_probabilities:
        raise LesionsegError(
            "--naming nnunet writes <case>.nii.gz only (nnU-Net's tools read every .nii.gz "
            "of the folder as a case); leave out --save-probabilities and --save-uncertainty "
            "or use the default naming"
        )


def check_uncertainty(
    models: Sequence[LoadedMethod], tta: bool, mc_dropout: int, save_uncertainty: bool
) -> None:
    """Uncertainty needs several predictions of each case.

    Raises:
        LesionsegError: ``--save-uncertainty`` with one model, no ``--tta`` and no
            ``--mc-dropout``.
    """
    if save_uncertainty and sample_count(models, tta, mc_dropout) < 2:
        raise LesionsegError(
            "--save-uncertainty needs several predictions of each case: an ensemble "
            "(-m A -m B), --tta or --mc-dropout N"
        )


PREDICTIONS_KIND = "predictions"


def prepare_predictions(
    out_dir: str | Path,
    subject_ids: Sequence[str],
    save_probabilities: bool,
    *,
    overwrite: bool = False,
    skip_existing: bool = False,
    inputs: Sequence[str | Path] = (),
    naming: str = "lesionseg",
    save_uncertainty: bool = False,
) -> dict[str, bool]:
    """Check the output folder before any work; return the subjects still to predict.

    The folder may hold other files (lesionseg adds its own beside them); an existing
    output is skipped with ``skip_existing``, and replaced with ``overwrite`` only in a
    folder lesionseg made for predictions. Temporary files a killed run left are removed.

    Args:
        out_dir: The output folder (created).
        subject_ids: Subjects to predict.
        save_probabilities: Probability maps are written too.
        overwrite: Replace earlier outputs (only in a lesionseg predictions folder).
        skip_existing: Leave subjects whose outputs exist (finish an interrupted run).
        inputs: The ``-i`` inputs: the output may not replace them nor lie in a folder whose
            every file is read as a case (``imagesTr``, a folder of ``<case>_0000`` files).
        naming: Output names (:data:`NAMINGS`).
        save_uncertainty: Uncertainty and member maps are written too.

    Returns:
        Subject id → whether its earlier outputs may be replaced (``overwrite``, or a case
        that an interrupted run left half-written), for every subject still to predict.

    Raises:
        LesionsegError: Naming the first existing output or the folder in the way.
    """
    from lesionseg.data.ownership import owner_kind, prepare_output_folder, scanned_folders

    inputs = [Path(str(i).split("=", 1)[-1]) for i in inputs]
    out = prepare_output_folder(
        out_dir,
        PREDICTIONS_KIND,
        overwrite=overwrite,
        reusable=True,
        shared=True,
        protect=[i for i in inputs if i.is_dir() or i.suffix.lower() in (".csv", ".tsv", ".tab")],
        scanned=[f for i in inputs for f in scanned_folders(i)],
    )
    todo: dict[str, bool] = {}  # subject → whether its earlier outputs may be replaced
    check_naming(naming, save_probabilities or save_uncertainty)
    for sid in subject_ids:
        wanted = _wanted(out, sid, naming, save_probabilities, save_uncertainty)
        existing = [p for p in wanted if p.exists()]
        if not existing:
            todo[sid] = False
        elif skip_existing and len(existing) == len(wanted):
            continue
        elif not (overwrite or skip_existing):
            raise LesionsegError(
                "exists already; use --overwrite to replace it or --skip-existing to keep it",
                existing[0],
            )
        elif owner_kind(out) != PREDICTIONS_KIND:
            raise LesionsegError(
                "exists, and lesionseg did not make this folder: refusing to replace it",
                existing[0],
            )
        else:  # --overwrite, or a case a kill left half-written (--skip-existing redoes it)
            todo[sid] = True
    return todo


def _wanted(
    out: Path, sid: str, naming: str, save_probabilities: bool, save_uncertainty: bool
) -> list[Path]:
    """The files a subject's prediction writes."""
    seg, prob = output_paths(out, sid, naming)
    wanted = [seg] + ([prob] if save_probabilities else [])
    return wanted + (list(uncertainty_paths(out, sid)) if save_uncertainty else [])


def check_outputs_free(
    out_dir: str | Path,
    subject_ids: Sequence[str],
    save_probabilities: bool,
    overwrite: bool,
    naming: str = "lesionseg",
    save_uncertainty: bool = False,
) -> None:
    """Refuse to start when an output exists already and ``overwrite`` is False.

    Raises:
        LesionsegError: Naming the first existing output.
    """
    if overwrite:
        return
    for sid in subject_ids:
        for path in _wanted(Path(out_dir), sid, naming, save_probabilities, save_uncertainty):
            if path.exists():
                raise LesionsegError("exists already; use --overwrite to replace it", path)


def postprocess_steps(config: dict, overrides: PostprocessOverrides | None = None) -> list[Step]:
    """The post-processing steps for a model: its recipe's, with command-line ``overrides``.

    Args:
        config: The model's config (its recipe's ``predict.postprocess``).
        overrides: Steps from ``lesionseg predict`` options, or None.

    Returns:
        ``(name, options)`` pairs, in the order they run.

    Raises:
        LesionsegError: A step that cannot be read or is not registered.
    """
    raw = ((config.get("recipe") or {}).get("predict") or {}).get("postprocess")
    steps = parse_steps(raw)
    if overrides is not None:
        steps = overrides.apply(steps)
    if steps:
        from lesionseg.postprocess import POSTPROCESS  # the registry as it is at call time

        for name, _ in steps:
            POSTPROCESS.get(name)
    return steps


def run_postprocess(
    steps: Sequence[Step],
    probs: np.ndarray,
    image: np.ndarray,
    mask: np.ndarray,
    spacing: Sequence[float],
) -> tuple[np.ndarray, np.ndarray | None]:
    """Run post-processing steps on the preprocessed grid (contract: ``postprocess.chain``).

    Returns:
        The (possibly refined) probabilities, and the label map a step made, or None.
    """
    labels = None
    if not steps:
        return probs, labels
    from lesionseg.postprocess import POSTPROCESS  # the registry as it is at call time

    for name, options in steps:
        probs, labels = apply_step(
            name,
            POSTPROCESS.get(name),
            probs,
            labels,
            options=options,
            image=image,
            mask=mask,
            spacing=spacing,
        )
    return probs, labels


def _preprocess_key(config: dict) -> str:
    return json.dumps(
        {"channels": config["channel_names"], "preprocess": config.get("preprocess") or {}},
        sort_keys=True,
    )


def _samples(
    member: LoadedMethod,
    image: np.ndarray,
    mask: np.ndarray | None,
    kwargs: dict,
    tta: bool,
    mc_dropout: int,
) -> Iterator[np.ndarray]:
    """The member's predictions one by one: each flip of ``--tta``, each dropout pass.

    Their mean is the member's prediction (what :func:`predict_volume` returns with the
    same flips); one at a time, so that uncertainty can be gathered without keeping them.
    """
    from lesionseg.inference.predictor import flip_sets

    for flip in flip_sets(TTA_FLIP_AXES if tta else ()):
        axes = [a + 1 for a in flip]
        img = np.flip(image, axes) if flip else image
        msk = np.flip(mask, list(flip)) if (flip and mask is not None) else mask
        for index in range(max(mc_dropout, 1)):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(index)  # pass i draws the same dropout masks every run
                probs = member.predict(img, msk, **kwargs, dropout=mc_dropout > 0)
            yield np.flip(probs, axes) if flip else probs


def check_mc_dropout(models: Sequence[LoadedMethod], passes: int) -> None:
    """``--mc-dropout N`` needs N ≥ 2 and networks that have dropout.

    Raises:
        LesionsegError: Naming the model folder without dropout.
    """
    if passes == 0:
        return
    if passes < 2:
        raise LesionsegError(f"--mc-dropout needs at least 2 passes, got {passes}")
    from lesionseg.inference.predictor import has_dropout

    for method in models:
        if not any(has_dropout(net) for net in method.networks.values()):
            raise LesionsegError(
                "--mc-dropout: the model's networks have no dropout (rate > 0); use an "
                "ensemble (-m A -m B) or --tta for uncertainty",
                method.folder,
            )


def sample_count(models: Sequence[LoadedMethod], tta: bool, mc_dropout: int) -> int:
    """How many predictions the uncertainty maps are made from."""
    return len(models) * (2 if tta else 1) * max(mc_dropout, 1)


def predict_subject(
    models: Sequence[LoadedMethod],
    subject: Subject,
    out_dir: str | Path,
    *,
    tile_size: int | None = None,
    device: str | torch.device = "cpu",
    tta: bool = False,
    save_probabilities: bool = False,
    overwrite: bool = False,
    amp: bool = False,
    batch_size: int = 1,
    postprocess: PostprocessOverrides | None = None,
    naming: str = "lesionseg",
    save_uncertainty: bool = False,
    mc_dropout: int = 0,
    layout: str = "auto",
) -> PredictionOutputs:
    """Predict one subject with one model or an ensemble and write the outputs.

    Args:
        models: Loaded models (:func:`load_models`).
        subject: The subject's channel files, named as the models' channels.
        out_dir: Output folder.
        tile_size: Output tile side for 3D models (None: chosen from free memory).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
        tta: Average with the sagittally flipped prediction.
        save_probabilities: Also write the per-class probabilities.
        overwrite: Replace existing outputs.
        amp: Mixed precision.
        batch_size: Tiles per forward pass.
        postprocess: Post-processing options overriding the recipe's steps.
        naming: Output names (:data:`NAMINGS`).
        save_uncertainty: Also write ``<case>_uncertainty.nii.gz`` (entropy of the mean
            and mutual information, :mod:`lesionseg.inference.uncertainty`) and
            ``<case>_members.nii.gz`` (every prediction's label map), from the ensemble
            members, the flips of ``tta`` and the dropout passes.
        mc_dropout: Monte-Carlo dropout passes per member (0: none).
        layout: Memory layout (:mod:`lesionseg.inference.layout`).

    Returns:
        The files written.

    Raises:
        LesionsegError: Channels that do not match, unreadable inputs, existing outputs,
            uncertainty from a single prediction.
    """
    check_compatible(models)
    check_channels(subject, models)
    check_naming(naming, save_probabilities or save_uncertainty)
    check_mc_dropout(models, mc_dropout)
    check_uncertainty(models, tta, mc_dropout, save_uncertainty)
    seg_path, prob_path = output_paths(out_dir, subject.id, naming)
    check_outputs_free(
        out_dir, [subject.id], save_probabilities, overwrite, naming, save_uncertainty
    )

    groups: dict[str, list[LoadedMethod]] = {}
    for m in models:
        groups.setdefault(_preprocess_key(m.config), []).append(m)
    steps = postprocess_steps(models[0].config, postprocess)
    if steps and len(groups) > 1:
        raise LesionsegError(
            "ensemble members preprocess differently; post-processing needs one preprocessed grid"
        )
    kwargs = dict(tile_size=tile_size, device=device, amp=amp, batch_size=batch_size, layout=layout)
    k = models[0].num_outputs
    fill = [1.0] + [0.0] * (k - 1)
    total, labels, record = None, None, None
    gathered = UncertaintyAccumulator() if save_uncertainty else None
    for members in groups.values():
        first = members[0]
        pre = preprocess_subject(
            subject, first.channel_names, PreprocessConfig.from_dict(first.config.get("preprocess"))
        )
        probs, count = None, 0
        for member in members:
            if gathered is None and not mc_dropout:  # one pass, flips averaged inside
                flips = TTA_FLIP_AXES if tta else ()
                found = [member.predict(pre.image, pre.mask, **kwargs, flip_axes=flips)]
            else:
                found = _samples(member, pre.image, pre.mask, kwargs, tta, mc_dropout)
            for p in found:
                if gathered is not None:
                    gathered.add(
                        np.moveaxis(pre.record.invert(p, is_label=False, fill=fill), -1, 0)
                    )
                probs = p if probs is None else probs + p
                count += 1
        probs /= count
        probs, labels = run_postprocess(steps, probs, pre.image, pre.mask, pre.spacing)
        back = pre.record.invert(probs, is_label=False, fill=fill) * (len(members) / len(models))
        total = back if total is None else total + back
        if labels is not None:
            labels = pre.record.invert(labels, is_label=True, fill=0)
        record = pre.record
    if labels is None:
        labels = labels_from_probabilities(np.moveaxis(total, -1, 0))
    grid = record.original_grid
    save_nifti(labels.astype(np.uint8), grid, seg_path, overwrite=overwrite)
    written_prob = None
    if save_probabilities:
        written_prob = save_nifti(total.astype(np.float32), grid, prob_path, overwrite=overwrite)
    written_uncertainty = None
    if gathered is not None:
        unc_path, members_path = uncertainty_paths(out_dir, subject.id)
        maps = gathered.maps()
        stacked = np.stack([maps[name] for name in UNCERTAINTY_MAPS], axis=-1)
        written_uncertainty = save_nifti(stacked, grid, unc_path, overwrite=overwrite)
        save_nifti(gathered.label_maps(), grid, members_path, overwrite=overwrite)
    return PredictionOutputs(subject.id, seg_path, written_prob, written_uncertainty)
