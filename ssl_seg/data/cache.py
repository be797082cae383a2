"""A bounded in-memory cache of decoded samples, so each file is read and decoded once per process."""

from __future__ import annotations

from collections import OrderedDict

from .sample import SampleSource
from .sample import Sample


def sample_nbytes(sample: Sample) -> int:
    """Bytes held by a sample's arrays."""
    return sum(a.nbytes for a in (sample.image, sample.mask, sample.roi) if a is not None)


class CachedSource:
    """`source.load` through a least-recently-used cache of at most `max_bytes` (0: no caching).

    Cached arrays are shared with every caller: the transforms downstream never write into their input.
    A DataLoader worker holds its own copy, so the bound applies per process.
    """

    def __init__(self, source: SampleSource, max_bytes: int):
        self.source, self.max_bytes = source, max_bytes
        self.nbytes = 0
        self._items: OrderedDict[int, Sample] = OrderedDict()

    def __len__(self) -> int:
        return len(self.source)

    def index_of(self, sample_id: str) -> int:
        """The source's index of `sample_id`."""
        return self.source.index_of(sample_id)

    def load(self, index: int) -> Sample:
        """The decoded sample `index`, from the cache when it is there."""
        sample = self._items.get(index)
        if sample is not None:
            self._items.move_to_end(index)
            return sample
        sample = self.source.load(index)
        size = sample_nbytes(sample)
        if size <= self.max_bytes:
            self._items[index] = sample
            self.nbytes += size
            while self.nbytes > self.max_bytes:
                self.nbytes -= sample_nbytes(self._items.popitem(last=False)[1])
        return sample
