"""Validation: full-volume segmentation of held-out cases, or the loss on held-out examples.

Each validation case is segmented whole with the same predictor as
``lesionseg predict`` (tiled, valid-convolution aware), on the preprocessed grid,
and compared with its reference labels inside the volume (mean Dice). A recipe may
instead measure the stage's loss on examples its sampler held out (the MSSEG cascade
holds out 25 % of its patches and stops early on their loss): :func:`held_out_loss`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn


def dice_per_class(pred: np.ndarray, ref: np.ndarray, classes: Sequence[int]) -> list[float]:
    """Dice of each foreground class (1.0 when both prediction and reference are empty)."""
    scores = []
    for k in classes:
        p, r = pred == k, ref == k
        denom = int(p.sum()) + int(r.sum())
        scores.append(1.0 if denom == 0 else 2.0 * int((p & r).sum()) / denom)
    return scores


def validate(
    model: nn.Module,
    subjects: Sequence,
    *,
    classes: Sequence[int],
    device: torch.device | str = "cpu",
    amp: bool = False,
    tile_size: Sequence[int] | None = None,
) -> tuple[float, dict[str, float]]:
    """Segment each subject whole with one network and return (mean Dice, Dice per case).

    Args:
        model: The network (in eval mode during prediction, restored afterwards).
        subjects: Preprocessed subjects with ``image``, ``mask`` and ``label``.
        classes: Foreground classes whose Dice is averaged (per case, then over cases).
        device: Device to predict on.
        amp: Mixed precision (CUDA only).
        tile_size: Predictor tile (output) size; None lets the predictor choose.

    A 2D network predicts along ``geometry.slice_axis``, the axis it was trained on.
    """
    return validate_graph(
        "net",
        {"net": model},
        subjects,
        classes=classes,
        device=device,
        amp=amp,
        tile_size=tile_size,
    )


def validate_graph(
    graph,
    networks: Mapping[str, nn.Module],
    subjects: Sequence,
    *,
    classes: Sequence[int],
    device: torch.device | str = "cpu",
    amp: bool = False,
    tile_size: Sequence[int] | None = None,
) -> tuple[float, dict[str, float]]:
    """Segment each subject with a method's prediction graph: (mean Dice, Dice per case).

    The same graph as ``lesionseg predict`` runs, so a later network is chosen on what the
    method outputs. Arguments as :func:`validate`; ``graph`` is a node of
    :mod:`lesionseg.inference.graph` over the names of ``networks``.
    """
    from lesionseg.inference.predictor import labels_from_probabilities

    per_case: dict[str, float] = {}
    for subject in subjects:
        probs = graph_probabilities(
            graph, networks, subject, device=device, amp=amp, tile_size=tile_size
        )
        # A sigmoid model has two maps (1 − p, p) here: the argmax is then p > 0.5.
        pred = labels_from_probabilities(probs)
        scores = dice_per_class(pred, np.asarray(subject.label), classes)
        per_case[subject.id] = float(np.mean(scores))
    mean = float(np.mean(list(per_case.values()))) if per_case else float("nan")
    return mean, per_case


def held_out_loss(
    model: nn.Module, loss_fn: nn.Module, batches, device: torch.device | str = "cpu"
) -> float:
    """Mean loss of ``model`` (eval mode: no dropout) over held-out batches.

    Args:
        model: The network being trained (its mode is restored afterwards).
        loss_fn: The stage's loss (per batch mean).
        batches: Iterable of ``{"image", "target"}`` numpy batches.
        device: Device to run on.

    Returns:
        The example-weighted mean of the batch losses (NaN for no examples).
    """
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        with torch.no_grad():
            for batch in batches:
                image = torch.from_numpy(batch["image"]).to(device)
                target = torch.from_numpy(batch["target"]).to(device)
                outputs = model(image)
                logits = outputs if isinstance(outputs, torch.Tensor) else outputs[0]
                total += float(loss_fn(logits.float(), target)) * len(image)
                count += len(image)
    finally:
        model.train(was_training)
    return total / count if count else float("nan")


def training_layout(model: nn.Module, device: torch.device | str) -> str:
    """The fixed memory layout of predictions made while training.

    Not ``auto``: a layout chosen by timing could differ between two runs, and with it the
    last digits of a validation Dice, hence the epoch kept; the same seed must give the
    same model. Channels-last for 3D networks on the CPU (oneDNN's faster layout for them,
    what prediction always used before it measured), contiguous otherwise.
    """
    cpu = torch.device(device).type == "cpu"
    return "channels_last" if cpu and model.geometry.spatial_dims == 3 else "contiguous"


def graph_probabilities(
    graph,
    networks: Mapping[str, nn.Module],
    subject,
    *,
    device: torch.device | str = "cpu",
    amp: bool = False,
    tile_size: Sequence[int] | None = None,
) -> np.ndarray:
    """``(K, *spatial)`` probabilities of a graph on one preprocessed subject (eval mode)."""
    from lesionseg.inference.graph import NetworkInput, evaluate
    from lesionseg.inference.predictor import predict_volume

    def predict(model, image, mask):
        return predict_volume(
            model,
            image,
            mask=mask,
            tile_size=None if tile_size is None else tuple(tile_size),
            device=str(device),
            amp=amp,
            axis=model.geometry.slice_axis,
            layout=training_layout(model, device),
        )

    modes = {name: net.training for name, net in networks.items()}
    try:
        for net in networks.values():
            net.eval()
        image, mask = np.asarray(subject.image), np.asarray(subject.mask)
        names = list(getattr(subject, "channel_names", None) or [])
        inputs = {n: NetworkInput(m, image, mask, predict, names) for n, m in networks.items()}
        return evaluate(graph, inputs)
    finally:
        for name, net in networks.items():
            net.train(modes[name])
