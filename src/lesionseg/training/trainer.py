"""The one training loop that every recipe runs.

A run is a list of stages (see :mod:`lesionseg.training.recipe`): a train stage
trains one named network with its own sampler, loss, optimiser slot (kept across
stages with ``optimizer: continue``, :mod:`~lesionseg.training.slots`), schedule and
length; a predict stage stores the probability maps of the networks trained so far in
the cache. After every epoch the loop may validate (the method's prediction graph, or
the stage's network, on the validation cases: mean Dice), steps the learning-rate
schedule, keeps the stage's selected model (:mod:`~lesionseg.training.selection`:
best or last) and the last one, logs (progress bar, CSV, TensorBoard, ``progress.png``) and
writes a checkpoint from which :func:`resume` continues exactly: batches are a
function of (seed, stage, epoch, rank, batch), and the torch random state (dropout)
is reseeded from (seed, stage, epoch, rank) at the start of each epoch, so a
resumed run repeats the interrupted epoch bit for bit.

Model folder::

    model.safetensors, config.json   the final network's selected model
    last/                            the model after the last epoch
    networks/<name>/                 other networks of multi-network runs (cascade)
    method.json                      the prediction graph over the networks
    recipe.yaml  run.json  splits.json  log.csv  progress.png  tensorboard/
    checkpoint.pt                    for --resume
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from lesionseg import __version__
from lesionseg.data.atomic import write_json_atomic, write_text_atomic
from lesionseg.data.ownership import (
    clean_temporaries,
    owner_kind,
    prepare_output_folder,
    scanned_folders,
)
from lesionseg.errors import LesionsegError
from lesionseg.inference.layout import channels_last_format, set_layout
from lesionseg.models.builder import ModelSpec, build_model
from lesionseg.training import distributed as dist_utils
from lesionseg.training.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from lesionseg.training.history import TensorBoardLog, plot_progress, write_csv
from lesionseg.training.recipe import (
    Recipe,
    final_network,
    is_train,
    load_recipe,
    recipe_from_dict,
)
from lesionseg.training.regularization import penalised_weights, weight_penalty
from lesionseg.training.selection import StageSelection
from lesionseg.training.slots import NetworkSlot, build_slot
from lesionseg.training.splits import holdout_split, kfold_splits


@dataclass
class RunSettings:
    """Everything about a run that is not in the recipe (saved as ``run.json``).

    Attributes:
        dataset: Data set folder or manifest.
        out_dir: Model folder.
        fold: Validation fold (None: hold out ``validation.cases``).
        folds: Number of folds.
        seed: Run seed (default: the recipe's).
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
        cache: Preprocessed cache folder (default: shared, next to the model folder).
        progress: Show progress bars (rank 0).
    """

    dataset: str
    out_dir: str
    fold: int | None = None
    folds: int = 5
    seed: int | None = None
    device: str = "auto"
    cache: str | None = None
    progress: bool = True


@dataclass
class TrainResult:
    """What a finished run reports.

    Attributes:
        out_dir: The model folder.
        best_dice: Best validation Dice of the final network (None without validation).
        epochs: Epochs trained in all stages.
        seconds: Wall time of this invocation.
        history: One row per epoch.
    """

    out_dir: Path
    best_dice: float | None
    epochs: int
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)


#: What lesionseg writes in a model folder: ``--overwrite`` removes these and nothing else.
MODEL_KIND = "model"
MODEL_FOLDER_ENTRIES = (
    "model.safetensors", "config.json", "recipe.yaml", "run.json", "splits.json", "log.csv",
    "progress.png", "tensorboard", CHECKPOINT_NAME, "last", "networks", "training.json",
    "method.json", "precision.json",
)  # fmt: skip


def _derived_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def default_cache_dir(dataset, out_dir: Path, preprocess: dict) -> Path:
    """A cache folder next to the model folder, shared by runs with the same data and settings."""
    key = json.dumps([str(dataset.root), dataset.channel_names, preprocess], sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    name = "".join(c if c.isalnum() or c in "-_" else "_" for c in dataset.name)
    return out_dir.resolve().parent / "lesionseg-cache" / f"{name}-{digest}"


def build_network(
    model_spec: dict, in_channels: int, num_classes: int, seed: int, slice_axis: int = 2
) -> nn.Module:
    """Build a stage's network from its ``{name, options}`` with a seeded initialisation.

    Raises:
        LesionsegError: Unknown model, bad option, or channel count that does not fit the data.
    """
    return build_model(ModelSpec.parse(model_spec), in_channels, num_classes, seed, slice_axis)


def model_config(
    recipe: Recipe, channel_names, labels, network: str, extra=None, data_channel_names=None
) -> dict:
    """The ``config.json`` content saved with a trained network.

    ``data_channel_names``: the training data set's channels in file order, kept when the
    recipe reads fewer (``channels``) so that ``<case>_0001`` still means the same image.
    """
    resolved = recipe.resolved()
    stage = next((s for s in resolved["stages"] if s.get("network") == network), None)
    if stage is not None:
        resolved["model"] = stage["model"]
    # Flat {name, **options}: the form every reader of config.json understands.
    resolved["model"] = ModelSpec.parse(resolved["model"]).flat()
    # A 2D network predicts along the axis its slices were drawn from.
    slice_axis = int(((stage or {}).get("sampler") or {}).get("axis", 2))
    return {
        "slice_axis": slice_axis,
        "recipe": resolved,
        "channel_names": list(channel_names),
        "data_channel_names": list(data_channel_names or channel_names),
        "labels": {str(k): v for k, v in labels.items()},
        "preprocess": resolved["preprocess"],
        "lesionseg_version": __version__,
        "network": network,
        **(extra or {}),
    }


PRECISIONS = (None, "fp32", "bf16", "auto")


def training_autocast(stage: dict, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a stage's forward pass (None: float32), from ``precision``.

    Raises:
        LesionsegError: An unknown precision.
    """
    precision = stage.get("precision")
    if precision not in PRECISIONS:
        raise LesionsegError(f"train.precision must be fp32, bf16, auto or null, got {precision!r}")
    cuda = device.type == "cuda"
    if precision is None:
        return torch.float16 if cuda and stage["amp"] else None
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    from lesionseg.inference.precision import cpu_has_bf16

    if cuda:
        return torch.float16
    return torch.bfloat16 if cpu_has_bf16() else None


def as_float(outputs):
    """Outputs in float32 for the loss: a tensor, or a tuple/list of them (several heads)."""
    if isinstance(outputs, torch.Tensor):
        return outputs.float()
    return type(outputs)(as_float(o) for o in outputs)


def check_output_matches_target(outputs, target: torch.Tensor, where: str) -> None:
    """Raise a clear error when the model's output grid is not the sampler's target grid.

    Dense models give ``(N, K, *spatial)`` for targets ``(N, *spatial)`` (or
    ``(N, 1, *spatial)``); patch classifiers give ``(N, K)`` for targets ``(N,)``; models
    with several outputs (deep supervision, EDD's heads) are checked on the first,
    full-resolution one.
    """
    logits = outputs if isinstance(outputs, torch.Tensor) else outputs[0]
    spatial = tuple(logits.shape[2:])
    if spatial:
        matches = tuple(target.shape[-len(spatial) :]) == spatial
    else:
        matches = target.shape[0] == logits.shape[0] and target.numel() == logits.shape[0]
    if not matches:
        raise LesionsegError(
            f"model output {tuple(logits.shape)} does not match the sampler's "
            f"target {tuple(target.shape)}; check {where}.sampler against the model's geometry"
        )


@dataclass
class _Step:
    """What one optimisation step needs (model may be the DDP wrapper of network)."""

    model: nn.Module
    network: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: Any
    loss_fn: nn.Module
    penalised: list
    l1: float
    l2: float
    grad_clip: float | None
    autocast: torch.dtype | None
    device: torch.device
    channels_last: bool = False
    #: ``train.precision: auto`` in bfloat16: a step with non-finite gradients is redone
    #: in float32, and so is the rest of the stage (else such a step is an error).
    fallback_to_fp32: bool = False
    #: Where the fallback happened (``where`` of the step), once it has.
    fell_back: str | None = None

    def __call__(self, batch: dict[str, torch.Tensor], where: str) -> float:
        """Forward, loss (+ L1/L2), backward and update; returns the loss.

        Raises:
            LesionsegError: bfloat16 gave non-finite gradients and ``train.precision`` is
                ``bf16`` (with ``auto`` the step is redone in float32).
        """
        image = batch["image"].to(self.device, non_blocking=True)
        if self.channels_last:
            image = image.contiguous(memory_format=channels_last_format(image.dim()))
        target = batch["target"].to(self.device, non_blocking=True)
        dtype = self.autocast or torch.float32
        with torch.autocast(self.device.type, dtype=dtype, enabled=self.autocast is not None):
            outputs = self.model(image)
        check_output_matches_target(outputs, target, where)
        # The loss outside autocast: all of it in float32 (inside, autocast would run its
        # matrix products and reductions in reduced precision; D-UNet's Enhanced Mixing
        # Loss became NaN in bfloat16 on the training benchmark's data)
        loss = self.loss_fn(as_float(outputs), target)
        objective = loss
        if self.l1 or self.l2:
            objective = loss + weight_penalty(self.penalised, self.l1, self.l2)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(objective).backward()
            if self.grad_clip:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.network.parameters(), self.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            objective.backward()
            if self.autocast == torch.bfloat16 and not finite_step(loss, self.network):
                return self._without_bfloat16(batch, where)
            if self.grad_clip:
                nn.utils.clip_grad_norm_(self.network.parameters(), self.grad_clip)
            self.optimizer.step()
        return float(loss.detach())

    def _without_bfloat16(self, batch: dict[str, torch.Tensor], where: str) -> float:
        """The step that bfloat16 broke, in float32 (``auto``), or a clear error (``bf16``)."""
        # PyTorch 2.13's CPU bfloat16 Conv3d gives non-finite weight gradients for some
        # inputs (depth-2 maps: D-UNet diverged after 5–29 steps of the training benchmark)
        if not self.fallback_to_fp32:
            raise LesionsegError(
                f"{where}: bfloat16 training gave non-finite gradients; set "
                "train.precision to fp32, or auto to fall back to float32 when this happens"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.autocast, self.fell_back = None, where
        return self(batch, where)


def finite_step(loss: torch.Tensor, network: nn.Module) -> bool:
    """Whether the loss and every gradient of ``network`` are finite (one sync per step)."""
    grads = [p.grad for p in network.parameters() if p.grad is not None]
    flags = [torch.isfinite(loss.detach()).all()] + [torch.isfinite(g).all() for g in grads]
    return bool(torch.stack(flags).all())


def precision_name(autocast: torch.dtype | None) -> str:
    """``fp32``, ``bf16`` or ``fp16``: the precision of a step's forward pass."""
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[autocast]


class Trainer:
    """Runs a recipe on a data set (see the module docstring).

    Args:
        recipe: The validated recipe.
        settings: Data set, model folder, fold, seed, device, cache.
    """

    def __init__(self, recipe: Recipe, settings: RunSettings):
        self.recipe = recipe
        self.settings = settings
        self.out = Path(settings.out_dir)
        self.seed = int(settings.seed if settings.seed is not None else recipe.data["seed"])
        self.info = dist_utils.DistInfo()
        self.networks: dict[str, nn.Module] = {}
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, dict[str, Any]] = {}

    # -- set-up ---------------------------------------------------------------------------
    def _log(self, message: str) -> None:
        if self.info.is_main and self.settings.progress:
            tqdm.write(message, file=sys.stderr)

    def _prepare_data(self) -> None:
        from lesionseg.data.dataset import load_dataset
        from lesionseg.preprocess import PreprocessConfig, open_cache, preprocess_dataset

        dataset = load_dataset(self.settings.dataset)
        self.data_channel_names = list(dataset.channel_names)
        dataset = dataset.select_channels(self.recipe.data.get("channels"))
        train_subjects = dataset.split("train")
        if not train_subjects:
            raise LesionsegError("the data set has no training subjects", self.settings.dataset)
        preprocess = self.recipe.data["preprocess"]
        cache_dir = (
            Path(self.settings.cache)
            if self.settings.cache
            else default_cache_dir(dataset, self.out, preprocess)
        )
        if self.info.is_main:
            self._log(f"preprocessing {len(train_subjects)} subject(s) into {cache_dir}")
            preprocess_dataset(
                dataset,
                cache_dir,
                PreprocessConfig.from_dict(preprocess),
                subjects=train_subjects,
                progress=self.settings.progress,
            )
        dist_utils.barrier(self.info)
        cache = open_cache(cache_dir)
        self.channel_names = list(dataset.channel_names)
        self.labels = dict(dataset.labels)
        self.num_classes = max(self.labels) + 1
        by_id = {s.id: s for s in cache.subjects}
        ids = [s.id for s in train_subjects]
        splits_path = self.out / "splits.json"
        if splits_path.is_file() and self._resuming:
            split = json.loads(splits_path.read_text())["split"]
        else:
            if self.settings.fold is not None:
                all_splits = kfold_splits(ids, self.settings.folds, self.seed)
                if not 0 <= self.settings.fold < self.settings.folds:
                    raise LesionsegError(
                        f"--fold must be in 0..{self.settings.folds - 1}, got {self.settings.fold}"
                    )
                split = all_splits[self.settings.fold]
            else:
                all_splits = None
                split = holdout_split(ids, self.recipe.data["validation"]["cases"], self.seed)
            if self.info.is_main:
                write_json_atomic(
                    splits_path,
                    {
                        "fold": self.settings.fold,
                        "folds": self.settings.folds,
                        "seed": self.seed,
                        "split": split,
                        "all_folds": all_splits,
                    },
                )
        self.train_subjects = [by_id[i] for i in split["train"]]
        limit = self.recipe.data["validation"].get("max_cases")
        self.val_subjects = [by_id[i] for i in split["validation"]][: limit or None]

    def _network(self, stage_index: int, stage: dict) -> nn.Module:
        name = stage["network"]
        if name not in self.networks:
            order = [s["network"] for s in self.recipe.data["stages"] if is_train(s)]
            index = list(dict.fromkeys(order)).index(name)
            self.networks[name] = build_network(
                stage["model"],
                len(self.channel_names),
                self.num_classes,
                _derived_seed(self.seed, 1_000_003, index),
                slice_axis=int(stage["sampler"].get("axis", 2)),
            )
        return self.networks[name]

    # -- saving ---------------------------------------------------------------------------
    def _save_network(self, name: str, folder: Path, extra: dict | None = None) -> None:
        from lesionseg.models.io import save_model

        config = model_config(
            self.recipe, self.channel_names, self.labels, name, extra, self.data_channel_names
        )
        save_model(self.networks[name], config, folder, overwrite=True)

    def _network_folder(self, name: str, final: str) -> Path:
        return self.out if name == final else self.out / "networks" / name

    def _write_logs(self, tensorboard: TensorBoardLog) -> None:
        write_csv(self.out / "log.csv", self.history)
        if self.history:
            tensorboard.log(self.history[-1])
            plot_progress(self.out / "progress.png", self.history)

    # -- the loop ---------------------------------------------------------------------------
    def _train_epoch(
        self, step: _Step, loader, stage: dict, si: int, epoch: int, per_rank: int
    ) -> tuple[float, int, float]:
        """One epoch of steps with a progress bar; returns (loss sum, steps, seconds)."""
        info = self.info
        step.model.train()
        tic = time.perf_counter()
        total, count = 0.0, 0
        bar = tqdm(
            total=loader.batches_per_epoch,
            unit="batch",
            leave=False,
            desc=f"{stage['name']} {epoch + 1}/{stage['epochs']}",
            disable=not (info.is_main and self.settings.progress),
        )
        for batch in loader.epoch(si, epoch):
            value = step(batch, f"stages[{si}]")
            if not math.isfinite(value):
                raise LesionsegError(
                    f"training loss became {value} in stage {stage['name']!r}, "
                    f"epoch {epoch + 1}; lower the learning rate"
                )
            total += value
            count += 1
            bar.update(1)
            speed = count * per_rank * info.world_size / (time.perf_counter() - tic)
            bar.set_postfix(loss=f"{total / count:.4f}", seg_s=f"{speed:.1f}")
        bar.close()
        dist_utils.broadcast_buffers(info, step.network)
        return total, count, time.perf_counter() - tic

    def run(self, state: dict[str, Any] | None = None) -> TrainResult:
        """Train every stage (from the checkpoint ``state`` when resuming)."""
        started = time.perf_counter()
        self._resuming = state is not None
        self.info = dist_utils.setup(self.settings.device)
        try:
            self._prepare_data()
            stages = self.recipe.stages()
            start_stage, start_epoch = self._restore(state, stages)
            tensorboard = None
            if self.info.is_main:
                tensorboard = TensorBoardLog(
                    self.out / "tensorboard", purge_step=len(self.history) + 1
                )
            for stage in stages[:start_stage]:  # stored outputs of finished predict stages
                if not is_train(stage):
                    self._register_outputs(stage)
            for si in range(start_stage, len(stages)):
                resumed = state if si == start_stage else None
                if is_train(stages[si]):
                    self._run_stage(si, stages, start_epoch if resumed else 0, resumed, tensorboard)
                else:
                    self._run_predict_stage(si, stages[si])
            self._finish(final_network(stages), started, tensorboard)
        finally:
            dist_utils.cleanup(self.info)
        best = self.best.get(final_network(stages))
        return TrainResult(
            self.out,
            None if best is None else best["dice"],
            len(self.history),
            time.perf_counter() - started,
            self.history,
        )

    def _restore(self, state: dict[str, Any] | None, stages: list[dict]) -> tuple[int, int]:
        """Networks, history and slots from a checkpoint; returns (stage, epoch) to start at."""
        self.slots: dict[str, NetworkSlot] = {}
        self._saved_slots: dict[str, dict] = {}
        if state is None:
            return 0, 0
        self.history = list(state["history"])
        self.best = dict(state["best"])
        for name, weights in state["networks"].items():
            index = next(i for i, s in enumerate(stages) if s.get("network") == name)
            self._network(index, stages[index]).load_state_dict(weights)
        self._saved_slots = dict(state.get("slots") or {})
        return int(state["stage"]), int(state["epoch"])

    def _slot(self, stage: dict, network: nn.Module, first_epoch: int, use_amp: bool):
        """The stage's optimiser slot: the network's own with ``optimizer: continue``, or new."""
        name = stage["network"]
        saved = self._saved_slots.pop(name, None)
        if stage["continue_optimizer"] and name in self.slots:
            return self.slots[name]
        slot = build_slot(stage, network, use_amp, epochs=self._chain_epochs(stage))
        if saved is not None and (first_epoch > 0 or stage["continue_optimizer"]):
            slot.load_state_dict(saved)
        self.slots[name] = slot
        return slot

    def _chain_epochs(self, stage: dict) -> int:
        """The schedule's length: a stage's epochs and those of the stages continuing it.

        A poly schedule thus decays over the whole curriculum instead of reaching 0 at the
        end of the first stage.
        """
        stages = self.recipe.data["stages"]
        index = next(i for i, s in enumerate(stages) if s["name"] == stage["name"])
        total = stage["epochs"]
        for later in stages[index + 1 :]:
            if not is_train(later) or later["network"] != stage["network"]:
                continue
            if not later["continue_optimizer"]:
                break
            total += later["epochs"]
        return total

    def _loader(self, si: int, stage: dict, network: nn.Module):
        from lesionseg.sampling import SAMPLERS
        from lesionseg.sampling.loader import BatchLoader

        context = {"networks": self.networks, "stage": stage, "device": self.info.device}
        sampler_spec = dict(stage["sampler"])
        try:
            sampler = SAMPLERS.build(
                sampler_spec.pop("name"),
                subjects=self.train_subjects,
                geometry=network.geometry,
                context=context,
                seed=_derived_seed(self.seed, si, 31),
                **sampler_spec,
            )
        except ValueError as err:
            raise LesionsegError(f"recipe stages[{si}].sampler: {err}") from None
        counts = sampler.counts()
        if counts:
            chosen = ", ".join(f"{n:,} {k.replace('_', ' ')}" for k, n in counts.items())
            self._log(f"{stage['name']}: training on {chosen}")
        per_rank = -(-stage["batch_size"] // self.info.world_size)
        loader = BatchLoader(
            sampler,
            batch_size=per_rank,
            batches_per_epoch=stage["batches_per_epoch"],
            seed=self.seed,
            rank=self.info.rank,
            world=self.info.world_size,
            workers=stage["workers"],
            pin_memory=self.info.device.type == "cuda",
        )
        return loader, per_rank

    def _run_stage(self, si, stages, first_epoch, state, tensorboard) -> None:
        """Train one stage: its loader, slot, selection and epochs, then keep its model."""
        from lesionseg.losses import build_loss

        info, stage = self.info, stages[si]
        name = stage["network"]
        folder = self._network_folder(name, final_network(stages))
        network = self._network(si, stage).to(info.device)
        if stage["layout"] not in ("contiguous", "channels_last"):
            raise LesionsegError(
                f"train.layout must be contiguous or channels_last, got {stage['layout']!r}"
            )
        set_layout(network, stage["layout"] == "channels_last")  # before DDP registers them
        model = network
        if info.distributed:
            ids = [info.device.index] if info.device.type == "cuda" else None
            model = nn.parallel.DistributedDataParallel(network, device_ids=ids)
        loader, per_rank = self._loader(si, stage, network)
        autocast = training_autocast(stage, info.device)
        use_amp = autocast is not None
        slot = self._slot(stage, network, first_epoch, autocast == torch.float16)
        metric = self.recipe.data["validation"]["metric"]
        selection = StageSelection(
            stage["select"], stage["early_stopping"], higher_is_better=metric == "dice"
        )
        if state is not None and state.get("selection") is not None:
            selection.load_state_dict(state["selection"])
        step = _Step(
            model,
            network,
            slot.optimizer,
            slot.scaler,
            build_loss(stage["loss"]).to(info.device),
            penalised_weights(network),
            float(stage["l1"]),
            float(stage["l2"]),
            stage["grad_clip"],
            autocast,
            info.device,
            stage["layout"] == "channels_last",
            fallback_to_fp32=stage.get("precision") == "auto" and autocast == torch.bfloat16,
        )
        done_rows = [r for r in self.history if r["stage"] == stage["name"]]
        if step.fallback_to_fp32 and done_rows and done_rows[-1].get("precision") == "fp32":
            step.autocast = None  # a resumed stage goes on in float32, as it would have
        epoch, stopped = first_epoch, False
        while epoch < stage["epochs"] and not stopped:
            slot.set_lr()
            torch.manual_seed(_derived_seed(self.seed, si, epoch, info.rank, 7))
            fell_back = step.fell_back
            row = self._epoch(step, loader, stage, si, epoch, per_rank)
            if step.fell_back != fell_back:
                self._log(
                    f"{stage['name']}: bfloat16 gave non-finite gradients in epoch {epoch + 1}; "
                    "the stage goes on in float32 (train.precision: auto)"
                )
            epoch += 1
            row.update(self._validate_if_due(si, stage, epoch, use_amp, step, loader))
            slot.schedule.step(slot.epochs_done, row)
            slot.epochs_done += 1
            keep = selection.update(row[f"val_{metric}"], len(self.history) + 1)
            stopped = selection.should_stop
            self.history.append(row)
            self._log(_epoch_message(stage, epoch, row, keep))
            done = epoch >= stage["epochs"] or stopped
            if info.is_main and keep:
                self.best[name] = _best_entry(row, len(self.history))
                self._save_network(name, folder, _validation_extra(row, len(self.history)))
            if done:  # before the checkpoint: a resumed run finds the stage's end complete
                self._end_stage(si, stages, folder, selection)
            if info.is_main:
                self._checkpoint(si, epoch, done, selection)
                self._write_logs(tensorboard)
            if stopped:
                self._log(
                    f"{stage['name']}: early stopping after {selection.waited} validations "
                    "without improvement"
                )
        loader.close()

    def _end_stage(self, si: int, stages, folder: Path, selection: StageSelection) -> None:
        """Write the stage's model; a network no later stage trains goes back to its selection.

        Later stages (a cascade's hard negatives, a predict stage, validation of the graph)
        then see the selected weights, not the last ones. A network that a later stage
        trains again keeps its last weights, which its optimiser state belongs to.
        """
        from safetensors.torch import load_file

        stage, name = stages[si], stages[si]["network"]
        selected = stage["select"] == "best" and selection.best_epoch is not None
        if self.info.is_main:
            if not selected:
                # no validation, or the stage keeps its last weights: those are the model
                last = self.history[-1] if self.history else {}
                self.best[name] = _best_entry(last, len(self.history))
                self._save_network(name, folder, _validation_extra(last, len(self.history)))
            self._save_network(name, folder / "last")
        dist_utils.barrier(self.info)
        trained_later = any(s.get("network") == name for s in stages[si + 1 :])
        if selected and not trained_later:
            weights = load_file(str(folder / "model.safetensors"), device="cpu")
            self.networks[name].load_state_dict(weights)

    def _epoch(self, step, loader, stage: dict, si: int, epoch: int, per_rank: int) -> dict:
        """One training epoch; returns its history row (validation filled in later)."""
        total, count, seconds = self._train_epoch(step, loader, stage, si, epoch, per_rank)
        mean_loss = dist_utils.mean_across_ranks(self.info, total / max(count, 1))
        return {
            "epoch": len(self.history) + 1,
            "stage": stage["name"],
            "network": stage["network"],
            "stage_epoch": epoch + 1,
            "loss": round(mean_loss, 6),
            "lr": step.optimizer.param_groups[0]["lr"],
            "val_dice": None,
            "val_loss": None,
            "seconds": round(seconds, 3),
            "segments_per_s": round(count * per_rank * self.info.world_size / seconds, 2),
            "precision": precision_name(step.autocast),
        }

    def _validate_if_due(
        self, si: int, stage: dict, epoch: int, use_amp: bool, step: _Step, loader
    ) -> dict[str, float]:
        """The validation columns after ``epoch`` (1-based) when validation is due, else {}.

        ``metric: dice`` scores the method's graph once every network it uses has been
        trained (so a cascade's second network is chosen on the cascade's output); before
        that, the stage's own network. ``metric: loss`` is the stage's loss on the examples
        its sampler held out.
        """
        validation = self.recipe.data["validation"]
        if epoch % validation["every"] != 0 and epoch != stage["epochs"]:
            return {}
        if validation["metric"] == "loss":
            return {"val_loss": self._held_out_loss(si, stage, step, loader.sampler)}
        if not self.val_subjects:
            return {}
        return {"val_dice": self._graph_dice(si, stage, use_amp)}

    def _graph_dice(self, si: int, stage: dict, use_amp: bool) -> float:
        from lesionseg.inference.graph import graph_networks
        from lesionseg.training.validation import validate_graph

        trained = {s.get("network") for s in self.recipe.data["stages"][: si + 1]}
        graph = self.recipe.data["predict"]["graph"]
        if not set(graph_networks(graph)) <= trained:
            graph = stage["network"]
        dice = None
        if self.info.is_main:
            dice, _ = validate_graph(
                graph,
                {n: self.networks[n] for n in graph_networks(graph)},
                self.val_subjects,
                classes=[k for k in sorted(self.labels) if k > 0],
                device=self.info.device,
                amp=use_amp,
                tile_size=self.recipe.data["validation"].get("tile"),
            )
        return round(dist_utils.broadcast_object(self.info, dice), 6)

    def _held_out_loss(self, si: int, stage: dict, step: _Step, sampler) -> float:
        from lesionseg.training.validation import held_out_loss

        batches = sampler.held_out_batches(
            stage["batch_size"], self.recipe.data["validation"]["examples"]
        )
        if batches is None:
            raise LesionsegError(
                f"recipe validation.metric: loss needs examples held out by the sampler of "
                f"stage {stage['name']!r} (e.g. sampler: {{holdout: 0.25}})"
            )
        loss = None
        if self.info.is_main:
            loss = held_out_loss(step.network, step.loss_fn, batches, self.info.device)
        return round(dist_utils.broadcast_object(self.info, loss), 6)

    # -- predict stages ---------------------------------------------------------------------
    def _output_subjects(self, stage: dict) -> list:
        subjects = list(self.train_subjects)
        if stage["subjects"] == "all":
            subjects += list(self.val_subjects)
        return subjects

    def _output_path(self, subject, stage: dict) -> Path:
        """``<case>/outputs/<run>-<stage>.npy`` in the cache: keyed by run and stage."""
        run = hashlib.sha256(str(self.out.resolve()).encode()).hexdigest()[:10]
        return Path(subject.folder) / "outputs" / f"{run}-{stage['name']}.npy"

    def _register_outputs(self, stage: dict) -> None:
        """Hand a predict stage's stored maps to the subjects (samplers read them by name)."""
        for subject in self._output_subjects(stage):
            path = self._output_path(subject, stage)
            if not path.is_file():
                raise LesionsegError(
                    f"stored output of stage {stage['name']!r} is missing; the cache changed "
                    "since; train again with --overwrite",
                    path,
                )
            subject.outputs[stage["name"]] = path

    def _run_predict_stage(self, si: int, stage: dict) -> None:
        """Run the stage's graph (selected weights) on the subjects and store the maps."""
        from lesionseg.data.atomic import atomic_path
        from lesionseg.inference.graph import graph_networks
        from lesionseg.training.validation import graph_probabilities

        info = self.info
        subjects = self._output_subjects(stage)
        self._log(f"{stage['name']}: predicting {len(subjects)} subject(s)")
        graph = stage["predict"]
        networks = {n: self.networks[n].to(info.device) for n in graph_networks(graph)}
        for subject in subjects[info.rank :: info.world_size]:  # each rank its share
            probs = graph_probabilities(graph, networks, subject, device=info.device)
            path = self._output_path(subject, stage)
            with atomic_path(path, needed=probs.nbytes) as tmp:
                with open(tmp, "wb") as stream:  # np.save would append .npy to the name
                    np.save(stream, probs.astype(np.float32))
        dist_utils.barrier(info)
        if info.is_main:
            self._checkpoint(si, 0, True, None)
        self._register_outputs(stage)

    def _checkpoint(self, si: int, epoch: int, done: bool, selection: StageSelection) -> None:
        """Save everything needed to continue after this epoch exactly."""
        save_checkpoint(
            self.out / CHECKPOINT_NAME,
            {
                "stage": si + 1 if done else si,
                "epoch": 0 if done else epoch,
                "networks": {
                    k: {n: t.detach().cpu() for n, t in v.state_dict().items()}
                    for k, v in self.networks.items()
                },
                "slots": {k: slot.state_dict() for k, slot in self.slots.items()},
                "selection": None if done or selection is None else selection.state_dict(),
                "history": self.history,
                "best": self.best,
                "seed": self.seed,
            },
        )

    def _finish(self, final: str, started: float, tensorboard) -> None:
        info = self.info
        if info.is_main:
            write_json_atomic(
                self.out / "training.json",
                {
                    "finished": True,
                    "epochs": len(self.history),
                    "best": self.best,
                    "seconds_this_invocation": round(time.perf_counter() - started, 1),
                },
            )
        if info.distributed:
            digest = weights_digest(self.networks[final])
            print(f"rank {info.rank}: weights sha256 {digest}", file=sys.stderr, flush=True)
        dist_utils.barrier(info)
        if tensorboard is not None:
            tensorboard.close()


def _best_entry(row: dict, epoch: int) -> dict[str, Any]:
    """``training.json``'s record of a network's kept weights."""
    return {"dice": row.get("val_dice"), "loss": row.get("val_loss"), "epoch": epoch}


def _validation_extra(row: dict, epoch: int) -> dict[str, Any]:
    """What a saved network's config.json records of the validation that chose it."""
    extra: dict[str, Any] = {"epoch": epoch}
    for column, key in (("val_dice", "validation_dice"), ("val_loss", "validation_loss")):
        if row.get(column) is not None:
            extra[key] = row[column]
    return extra


def _epoch_message(stage: dict, epoch: int, row: dict, kept: bool) -> str:
    message = (
        f"{stage['name']} epoch {epoch}/{stage['epochs']}: loss {row['loss']:.4f}, "
        f"lr {row['lr']:.3g}, {row['segments_per_s']:.1f} segments/s"
    )
    if row["val_dice"] is not None:
        message += f", validation Dice {row['val_dice']:.4f}" + (" (best)" if kept else "")
    if row.get("val_loss") is not None:
        message += f", held-out loss {row['val_loss']:.4f}" + (" (best)" if kept else "")
    return message


def weights_digest(model: nn.Module) -> str:
    """SHA-256 of a model's parameters and buffers (to compare ranks or runs)."""
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def train(
    recipe: Recipe | str | Path,
    dataset: str | Path,
    out_dir: str | Path,
    *,
    fold: int | None = None,
    folds: int = 5,
    seed: int | None = None,
    device: str = "auto",
    cache: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Train a recipe on a data set into a model folder.

    Args:
        recipe: A :class:`Recipe`, a recipe file or a packaged recipe's name.
        dataset: Data set folder (dataset.json) or CSV manifest.
        out_dir: Model folder (created).
        fold: Validation fold of a ``folds``-fold split (None: hold out ``validation.cases``).
        folds: Number of folds.
        seed: Run seed (default: the recipe's ``seed``).
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
        cache: Preprocessed cache folder (default: shared, next to the model folder).
        overrides: Dotted recipe keys to set (``{"train.epochs": 2}``).
        overwrite: Replace an existing model folder.
        progress: Progress bars and per-epoch lines on stderr.

    Raises:
        LesionsegError: Bad recipe or data, or the model folder exists (use ``overwrite`` or
            :func:`resume`).
    """
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    if overrides:
        recipe = recipe.with_overrides(overrides)
    out = Path(out_dir)
    settings = RunSettings(
        str(dataset),
        str(out),
        fold,
        folds,
        seed,
        device,
        None if cache is None else str(cache),
        progress,
    )
    is_main = int(os.environ.get("RANK", "0")) == 0
    if is_main:
        # Fail on a bad device before anything is written, so the corrected rerun is free.
        dist_utils.resolve_device(device, int(os.environ.get("LOCAL_RANK", "0")))
        protect = [Path(dataset)] + ([Path(cache)] if cache is not None else [])
        prepare_output_folder(
            out,
            MODEL_KIND,
            overwrite=overwrite or _failed_before_training(out),
            owned=MODEL_FOLDER_ENTRIES,
            protect=protect,
            scanned=scanned_folders(dataset),
        )
        write_text_atomic(out / "recipe.yaml", recipe.to_yaml())
        write_json_atomic(out / "run.json", asdict(settings))
        write_method_file(out, recipe)  # from the start: a kill can never leave it out
    return Trainer(recipe, settings).run()


def write_method_file(out: Path, recipe: Recipe) -> None:
    """``method.json``: the recipe's prediction graph and where each of its networks lives."""
    from lesionseg.inference.graph import graph_networks
    from lesionseg.inference.method import write_method

    graph = recipe.data["predict"]["graph"]
    final = final_network(recipe.data["stages"])
    folders = {n: "." if n == final else f"networks/{n}" for n in graph_networks(graph)}
    write_method(out, graph, folders)


def _failed_before_training(out: Path) -> bool:
    """A model folder of a run that stopped before its first checkpoint: nothing to keep."""
    return (
        owner_kind(out) == MODEL_KIND
        and not (out / CHECKPOINT_NAME).exists()
        and not (out / "model.safetensors").exists()
    )


def _read_run_file(path: Path, reader: Callable[[str], Any]) -> dict:
    """A mapping from a file of a model folder, or one clear error naming it."""
    try:
        data = reader(path.read_text())
    except FileNotFoundError:
        raise LesionsegError(f"not a training folder (no {path.name})", path.parent) from None
    except (UnicodeDecodeError, ValueError) as err:  # JSON and YAML errors are ValueErrors
        raise LesionsegError(f"cannot read it ({type(err).__name__})", path) from None
    if not isinstance(data, dict):
        raise LesionsegError("expected a mapping", path)
    return data


def resume(out_dir: str | Path, *, device: str | None = None, progress: bool = True) -> TrainResult:
    """Continue a run from its model folder's checkpoint (the same results as an uninterrupted run).

    Raises:
        LesionsegError: Not a model folder with a checkpoint.
    """
    out = Path(out_dir)
    if not out.is_dir():
        raise LesionsegError("model folder not found", out)
    raw_settings = _read_run_file(out / "run.json", json.loads)
    if int(os.environ.get("RANK", "0")) == 0 and owner_kind(out) == MODEL_KIND:
        clean_temporaries(out, recursive=True)  # what the kill left half-written
    try:
        settings = RunSettings(**raw_settings)
    except TypeError as err:
        raise LesionsegError(f"unexpected contents ({err})", out / "run.json") from None
    settings.out_dir = str(out)
    settings.progress = progress
    if device is not None:
        settings.device = device
    recipe_path = out / "recipe.yaml"
    recipe = recipe_from_dict(_read_run_file(recipe_path, _yaml_load), source=recipe_path)
    checkpoint = out / CHECKPOINT_NAME
    state = load_checkpoint(checkpoint) if checkpoint.is_file() else None
    if state is not None and state["stage"] >= len(recipe.data["stages"]):
        raise LesionsegError("this run has finished already; nothing to resume", out)
    return Trainer(recipe, settings).run(copy.deepcopy(state) if state else None)


def _yaml_load(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ValueError(str(err)) from None
