"""Data loaders, with a training order that a run resumed mid-epoch continues exactly."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, Sampler


class ResumableRandomSampler(Sampler[int]):
    """A random permutation per epoch (from `generator`) that can start part-way through, so a run
    resumed from a mid-epoch checkpoint sees exactly the batches it had not seen yet."""

    def __init__(self, size: int, generator: torch.Generator) -> None:
        self.size, self.generator, self.skip = size, generator, 0

    def __iter__(self):
        order = torch.randperm(self.size, generator=self.generator).tolist()
        start, self.skip = self.skip, 0
        return iter(order[start:])

    def __len__(self) -> int:
        return self.size - self.skip


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    workers: int,
    generator: torch.Generator | None = None,
    device: torch.device | None = None,
) -> DataLoader:
    sampler = ResumableRandomSampler(len(dataset), generator) if shuffle and generator is not None else None
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        num_workers=workers,
        generator=generator,
        pin_memory=device is not None and device.type == "cuda",
        drop_last=False,
        persistent_workers=workers > 0,
    )
