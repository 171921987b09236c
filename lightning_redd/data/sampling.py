"""Which images a process restores, in which batches, and (for ``fit``) how often.

Images are sharded by rank: with ``W`` processes, rank ``r`` restores the pending images
``pending[r::W]`` (strided, as Lightning's own distributed samplers do), in batches of
consecutive entries of its share. No image is given to two ranks and none is padded in, so
nothing is computed twice and no rank ever writes another's files. An image's result depends
only on its index in the full sorted file list (its seeds), never on its rank or batch.

``fit`` visits each batch ``repeats`` times in a row (one solver iterate per training
step). Lightning's training loop runs a collective (a broadcast) at every step when several
processes run, so every rank must take the same number of steps: ranks with fewer images
take the missing steps as *padding* steps, which the module skips (no compute, no output).

:class:`ShardedBatches` subclasses :class:`~torch.utils.data.DistributedSampler` so that
Lightning does not wrap it in a sampler of its own (it leaves distributed samplers alone);
it yields whole batches (lists of dataset keys), for a ``DataLoader(batch_size=None)``.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence

from torch.utils.data import Dataset, DistributedSampler

#: a dataset key: (image index, iterate, padding?)
Key = tuple[int, int, bool]


class ShardedBatches(DistributedSampler):
    """Batches of this rank's share of ``indices``.

    Args:
        dataset: the dataset (for Lightning's and torch's bookkeeping only).
        indices: the pending image indices, in order (identical on every rank).
        batch_size: images per batch.
        repeats: times each batch is yielded in a row (``fit``: the solver's iterates; ``predict``: 1).
        num_replicas, rank: the world size and this process's rank.
        pad: pad this rank's steps up to the largest rank's count (``fit`` under several processes).
    """

    def __init__(self, dataset: Dataset, indices: Sequence[int], *, batch_size: int, repeats: int = 1,
                 num_replicas: int = 1, rank: int = 0, pad: bool = False) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        if batch_size < 1 or repeats < 1:
            raise ValueError(f"batch_size and repeats must be >= 1, got {batch_size}, {repeats}")
        self.indices, self.batch_size, self.repeats, self.pad = list(indices), batch_size, repeats, pad

    def share(self, rank: int) -> list[int]:
        return self.indices[rank :: self.num_replicas]

    def batches(self, rank: int) -> list[list[int]]:
        share = self.share(rank)
        return [share[i : i + self.batch_size] for i in range(0, len(share), self.batch_size)]

    def __len__(self) -> int:
        counts = [len(self.batches(r)) for r in range(self.num_replicas)] if self.pad else [len(self.batches(self.rank))]
        return max(counts) * self.repeats

    def __iter__(self) -> Iterator[list[Key]]:
        batches = self.batches(self.rank)
        for chunk in batches:
            for k in range(self.repeats):
                yield [(i, k, False) for i in chunk]
        padding = len(self) - len(batches) * self.repeats
        filler = self.indices[:1]  # any valid image: padding steps are never computed
        for _ in range(padding):
            yield [(i, 0, True) for i in filler]
