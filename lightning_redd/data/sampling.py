"""Which images a process restores, in which batches, and (for ``fit``) how often.

Images are sharded by rank: with ``W`` processes, rank ``r`` restores the images
``group[r::W]`` of each *size group* (strided, as Lightning's own distributed samplers do),
in batches of consecutive entries of its share. A size group holds the images of one
``H x W`` in index order (one group when every image has the prior's size, as with the
default ``resize``); groups are taken in the order of their first image, so a batch only
ever holds images of one size. No image is given to two ranks and none is padded in, so
nothing is computed twice and no rank ever writes another's files. An image's seeds depend
only on its index in the full sorted file list, never on its rank or batch.

Several samples per image (``samples``, ``data.samples_per_image``): each image of a rank's
share becomes ``samples`` consecutive *units* ``(image, sample)``, and batches are
``batch_size`` consecutive units of the share (so a batch may end inside an image's samples and
the next one continue it). Every sample of an image is restored by the rank that owns the
image, so the writer of that rank sees them all; with one sample per image the units are the
images and the batches exactly those without samples.

Resume: batches are formed from the *full* image list, finished or not, so a rerun of the
same command (same image list, batch size and process count) forms exactly the batches of
the first run. A batch whose images are all finished is skipped; a partly finished batch is
solved whole (its composition, hence every float of its solve, is unchanged) and only its
unfinished members are written: each key carries ``done`` for the finished ones.

``fit`` visits each batch ``repeats`` times in a row (one solver iterate per training
step). Lightning's training loop runs a collective (a broadcast) at every step when several
processes run, so every rank must take the same number of steps: ranks with fewer batches
take the missing steps as *padding* steps, which the module skips (no compute, no output).
``predict`` under several processes pads the same way, so a rank whose share is finished
still takes (empty) steps rather than holding an empty loader.

:class:`ShardedBatches` subclasses :class:`~torch.utils.data.DistributedSampler` so that
Lightning does not wrap it in a sampler of its own (it leaves distributed samplers alone);
it yields whole batches (lists of dataset keys), for a ``DataLoader(batch_size=None)``.
"""
from __future__ import annotations

from collections.abc import Collection, Hashable, Iterator, Sequence

from torch.utils.data import Dataset, DistributedSampler

#: a dataset key: (image index, iterate, padding?, done?, sample) -- ``done``: the image was
#: finished by an earlier run, solved with its batch but not written; ``sample``: which of the
#: image's posterior samples (0 with one sample per image)
Key = tuple[int, int, bool, bool, int]


def size_groups(indices: Sequence[int], sizes: Sequence[Hashable] | None) -> list[list[int]]:
    """``indices`` split by ``sizes[i]`` (any hashable, e.g. ``(H, W)``), each group in index
    order, groups in the order of their first member; ``sizes`` None: one group."""
    if sizes is None:
        return [list(indices)] if len(indices) else []
    groups: dict[Hashable, list[int]] = {}
    for i in indices:
        groups.setdefault(sizes[i], []).append(i)
    return list(groups.values())


class ShardedBatches(DistributedSampler):
    """Batches of this rank's share of ``indices``.

    Args:
        dataset: the dataset (for Lightning's and torch's bookkeeping only).
        indices: every image index of the run, in order (identical on every rank).
        batch_size: units per batch: images, or with ``samples`` > 1 samples of images.
        repeats: times each batch is yielded in a row (``fit``: the solver's iterates; ``predict``: 1).
        num_replicas, rank: the world size and this process's rank.
        pad: pad this rank's steps up to the largest rank's count.
        done: indices finished by an earlier run (a batch of only these is skipped).
        sizes: ``sizes[i]`` is image ``i``'s size key; images of different keys never share a
            batch (None: all one size).
        samples: posterior samples per image (units per image; see the module docstring).
    """

    def __init__(self, dataset: Dataset, indices: Sequence[int], *, batch_size: int, repeats: int = 1,
                 num_replicas: int = 1, rank: int = 0, pad: bool = False, done: Collection[int] = (),
                 sizes: Sequence[Hashable] | None = None, samples: int = 1) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        if batch_size < 1 or repeats < 1 or samples < 1:
            raise ValueError(f"batch_size, repeats and samples must be >= 1, got {batch_size}, {repeats}, {samples}")
        self.indices, self.batch_size, self.repeats, self.pad = list(indices), batch_size, repeats, pad
        self.samples = int(samples)
        self.done, self.groups = frozenset(done), size_groups(self.indices, sizes)

    def share(self, rank: int) -> list[list[int]]:
        """Rank ``rank``'s images, one list per size group."""
        return [group[rank :: self.num_replicas] for group in self.groups]

    def units(self, rank: int) -> list[list[tuple[int, int]]]:
        """Rank ``rank``'s units ``(image, sample)``, one list per size group."""
        return [[(i, k) for i in s for k in range(self.samples)] for s in self.share(rank)]

    def batches(self, rank: int) -> list[list[tuple[int, int]]]:
        """Rank ``rank``'s batches of units that hold at least one unfinished image."""
        chunks = [u[j : j + self.batch_size] for u in self.units(rank) for j in range(0, len(u), self.batch_size)]
        return [c for c in chunks if any(i not in self.done for i, _ in c)]

    def __len__(self) -> int:
        counts = [len(self.batches(r)) for r in range(self.num_replicas)] if self.pad else [len(self.batches(self.rank))]
        return max(counts) * self.repeats

    def __iter__(self) -> Iterator[list[Key]]:
        batches = self.batches(self.rank)
        for chunk in batches:
            for k in range(self.repeats):
                yield [(i, k, False, i in self.done, sample) for i, sample in chunk]
        padding = len(self) - len(batches) * self.repeats
        filler = self.indices[:1]  # any valid image: padding steps are never computed
        for _ in range(padding):
            yield [(i, 0, True, True, 0) for i in filler]
