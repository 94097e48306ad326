"""Data loaders, with a training order that a run resumed mid-epoch continues exactly, on one process or
split between the ranks of a DDP run."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from ..core.errors import ConfigError
from .device_decode import DeviceDecodeLoader, batch_transform_of, collate_encoded


class ResumableBatchSampler(Sampler[list[int]]):
    """Batches of a random permutation per epoch (from `generator`, the same on every rank) that can start
    part-way through, so a run resumed from a mid-epoch checkpoint sees exactly the batches it had not seen.

    `batch_size` is the global batch: rank r of `world` takes every world-th sample of each batch from the
    r-th, so the ranks together see each batch of the single-process order once (no sample repeated or
    dropped, unlike DistributedSampler's padding). `skip` counts global samples already trained on.
    """

    def __init__(
        self, size: int, batch_size: int, generator: torch.Generator, rank: int = 0, world: int = 1
    ) -> None:
        self.size, self.batch_size, self.generator = size, batch_size, generator
        self.rank, self.world, self.skip = rank, world, 0
        last = size % batch_size
        if world > 1 and 0 < last < world:
            raise ConfigError(
                f"the last batch of an epoch has {last} samples, fewer than the {world} DDP processes; "
                f"choose a batch_size for which {size} % batch_size is 0 or at least {world}"
            )

    def __iter__(self):
        order = torch.randperm(self.size, generator=self.generator).tolist()
        start, self.skip = self.skip, 0
        for first in range(start, self.size, self.batch_size):
            yield order[first : first + self.batch_size][self.rank :: self.world]

    def __len__(self) -> int:
        return -(-(self.size - self.skip) // self.batch_size)

    def global_batch(self, index: int) -> int:
        """Samples in the epoch's `index`-th batch, over all ranks."""
        return min(self.batch_size, self.size - index * self.batch_size)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    workers: int,
    generator: torch.Generator | None = None,
    device: torch.device | None = None,
    rank: int = 0,
    world: int = 1,
) -> DataLoader:
    """A training loader (`shuffle` with a `generator`: resumable batches, this rank's share of each) or a
    held-out loader (in order; with `world` > 1, this rank's contiguous share: each sample once overall)."""
    pin = device is not None and device.type == "cuda"
    decoding = batch_transform_of(dataset)  # decode=device: the workers read bytes, the device decodes
    collate = collate_encoded if decoding else None
    if shuffle and generator is not None:
        sampler = ResumableBatchSampler(len(dataset), batch_size, generator, rank, world)
        loader = DataLoader(  # (the loader draws its workers' base seed from `generator` too, as before)
            dataset,
            batch_sampler=sampler,
            num_workers=workers,
            generator=generator,
            pin_memory=pin and not decoding,
            persistent_workers=workers > 0,
            collate_fn=collate,
        )
    else:
        if world > 1:
            n = len(dataset)
            dataset = Subset(dataset, range(rank * n // world, (rank + 1) * n // world))
        loader = DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=workers,
            generator=generator,
            pin_memory=pin and not decoding,
            drop_last=False,
            persistent_workers=workers > 0,
            collate_fn=collate,
        )
    return DeviceDecodeLoader(loader, decoding, device or torch.device("cpu")) if decoding else loader
