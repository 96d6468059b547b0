"""The order in which a process visits a dataset, reproducible and resumable mid-epoch.

Epoch ``e`` shuffles all indices with a generator seeded from ``derive_seed(seed, e)``; with ``W``
processes, rank ``r`` takes every ``W``-th index starting at ``r`` (as
``torch.utils.data.DistributedSampler`` does). Because the order is a function of the
seed and the epoch, resuming only needs to skip the samples already consumed.
"""

from collections.abc import Iterator

import torch


def derive_seed(*parts: int) -> int:
    """One 63-bit seed from several integers (run seed, epoch, index ...), distinct for each tuple."""
    seed = 0
    for part in parts:
        seed = (seed * 1_000_003 + part) % (2**63)
    return seed


class ResumableSampler(torch.utils.data.Sampler[int]):
    """Indices of one rank's share of one epoch, minus the first ``skip`` ones.

    Args:
        length: dataset size.
        shuffle: a new permutation every epoch (training) or the natural order (evaluation).
        seed: run seed the permutations derive from.
        rank, world_size: this process and the number of processes.
        drop_last: drop the tail so every rank gets the same number of indices (training);
            otherwise ranks may differ by one and every sample is visited once (evaluation).
    """

    def __init__(
        self,
        length: int,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = True,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"Expected 0 <= rank < world_size, got rank={rank}, world_size={world_size}.")
        self.length = length
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Visit epoch ``epoch``, leaving out this rank's first ``skip`` indices."""
        self.epoch = epoch
        self.skip = skip

    def _shard(self) -> torch.Tensor:
        if self.shuffle:
            generator = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch))
            order = torch.randperm(self.length, generator=generator)
        else:
            order = torch.arange(self.length)
        if self.drop_last:
            order = order[: self.length // self.world_size * self.world_size]
        return order[self.rank :: self.world_size][self.skip :]

    def __iter__(self) -> Iterator[int]:
        return iter(self._shard().tolist())

    def __len__(self) -> int:
        return len(self._shard())
