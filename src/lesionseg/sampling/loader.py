"""Batches drawn in background worker processes, reproducibly.

Every batch has its own seed, derived from (run seed, stage, epoch, rank, batch
number) with :class:`numpy.random.SeedSequence`. A batch therefore does not depend
on which worker draws it, on the number of workers, or on what was drawn before:
two runs with the same seed see the same batches, different ranks of a
distributed run see different segments, and a run resumed at epoch ``e`` draws
exactly what the uninterrupted run drew. Workers are forked (where the platform
allows), so the memory-mapped cache is shared rather than copied, and each uses
one thread so that the model keeps the cores.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data import Sampler as KeySampler

from lesionseg.sampling.base import Sampler

Key = tuple[int, int, int]  # (stage, epoch, batch)


def batch_seed(seed: int, stage: int, epoch: int, rank: int, batch: int) -> np.random.SeedSequence:
    """The seed sequence of one batch."""
    return np.random.SeedSequence([int(seed), int(stage), int(epoch), int(rank), int(batch)])


def to_tensors(batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Numpy batch → torch tensors (no copy where possible)."""
    return {key: torch.from_numpy(np.ascontiguousarray(value)) for key, value in batch.items()}


#: Stands for the rank in the seed of an epoch's enumeration order, which every rank shares.
_ORDER = 2**31 - 1


def epoch_order(seed: int, stage: int, epoch: int, items: int) -> np.ndarray:
    """The shuffled order of an enumerated epoch (the same on every rank)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, stage, epoch, _ORDER]))
    return rng.permutation(items)


class _Batches(Dataset):
    """Map-style data set whose items are whole batches keyed by (stage, epoch, batch).

    A drawing sampler draws each batch from the batch's own seed; an enumerating one takes
    the batch's slice of the epoch's shuffled order (this rank's share of it).
    """

    def __init__(self, sampler: Sampler, batch_size: int, seed: int, rank: int, world: int):
        self.sampler = sampler
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world = world
        self._order: tuple[tuple[int, int], np.ndarray] | None = None

    def _indices(self, stage: int, epoch: int, batch: int) -> np.ndarray:
        if self._order is None or self._order[0] != (stage, epoch):
            order = epoch_order(self.seed, stage, epoch, self.sampler.items())
            # every rank takes as many items (DDP steps in lockstep): at most world − 1 items
            # of an epoch are left out, other ones each epoch
            share = len(order) // self.world
            self._order = ((stage, epoch), order[self.rank :: self.world][:share])
        mine = self._order[1]
        return mine[batch * self.batch_size : (batch + 1) * self.batch_size]

    def __getitem__(self, key: Key) -> dict[str, torch.Tensor]:
        stage, epoch, batch = key
        rng = np.random.default_rng(batch_seed(self.seed, stage, epoch, self.rank, batch))
        if self.sampler.order == "enumerate":
            indices = self._indices(stage, epoch, batch)
            return to_tensors(self.sampler.batch(len(indices), rng, indices))
        return to_tensors(self.sampler.batch(self.batch_size, rng))


class _EpochKeys(KeySampler):
    """Yields the keys of the current epoch; the loader sets the epoch before iterating."""

    def __init__(self, batches_per_epoch: int):
        self.batches_per_epoch = batches_per_epoch
        self.stage = 0
        self.epoch = 0
        self.start = 0

    def __iter__(self) -> Iterator[Key]:
        for b in range(self.start, self.batches_per_epoch):
            yield (self.stage, self.epoch, b)

    def __len__(self) -> int:
        return self.batches_per_epoch - self.start


def _worker_init(_worker_id: int) -> None:
    # One thread per worker: the model's threads need the cores more than slicing does.
    torch.set_num_threads(1)


class BatchLoader:
    """Reproducible batches of a sampler, drawn in ``workers`` background processes.

    Args:
        sampler: The sampler.
        batch_size: Examples per batch (per rank).
        batches_per_epoch: Batches in one epoch (an enumerating sampler sets its own: every
            item once, the last batch possibly smaller).
        seed: Run seed.
        rank: Rank of this process in a distributed run (0 otherwise).
        world: Number of ranks (an enumerated epoch is shared out between them).
        workers: Background processes (0 draws in the calling process).
        prefetch: Batches each worker prepares ahead.
        pin_memory: Pin batches for faster host→GPU copies.
    """

    def __init__(
        self,
        sampler: Sampler,
        *,
        batch_size: int,
        batches_per_epoch: int,
        seed: int,
        rank: int = 0,
        world: int = 1,
        workers: int = 0,
        prefetch: int = 2,
        pin_memory: bool = False,
    ):
        self.sampler = sampler
        self.dataset = _Batches(sampler, batch_size, seed, rank, world)
        if sampler.order == "enumerate":
            share = sampler.items() // world
            if share == 0:
                raise ValueError(f"{sampler.items()} item(s) cannot be shared out to {world} ranks")
            batches_per_epoch = max(1, -(-share // batch_size))
        self.keys = _EpochKeys(batches_per_epoch)
        self.batches_per_epoch = batches_per_epoch
        self.workers = int(workers)
        self._loader: DataLoader | None = None
        options: dict = {}
        if self.workers > 0:
            methods = multiprocessing.get_all_start_methods()
            options = {
                "num_workers": self.workers,
                "persistent_workers": True,
                "prefetch_factor": prefetch,
                "worker_init_fn": _worker_init,
                "multiprocessing_context": "fork" if "fork" in methods else None,
            }
        self._loader_options = dict(
            batch_size=None, sampler=self.keys, pin_memory=pin_memory, **options
        )

    def epoch(self, stage: int, epoch: int, start: int = 0) -> Iterator[dict[str, torch.Tensor]]:
        """The batches of one epoch, in order (from batch ``start``)."""
        self.keys.stage, self.keys.epoch, self.keys.start = stage, epoch, start
        if self.workers == 0:
            for key in self.keys:
                yield self.dataset[key]
            return
        if self._loader is None or start:
            self.close()
            self._loader = DataLoader(self.dataset, **self._loader_options)
        yield from self._loader

    def close(self) -> None:
        """Stop the worker processes."""
        if self._loader is not None:
            iterator = getattr(self._loader, "_iterator", None)
            if iterator is not None and hasattr(iterator, "_shutdown_workers"):
                iterator._shutdown_workers()
            self._loader = None

    def __enter__(self) -> BatchLoader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
