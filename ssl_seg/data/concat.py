"""Several sample sources seen as one (e.g. more than one synthetic dataset)."""

from __future__ import annotations

from .sample import Sample


class ConcatSource:
    """Concatenation of sources with equal channels; ids are prefixed by the source position to stay unique."""

    def __init__(self, sources: list):
        self.sources = sources
        self.name = "+".join(s.name for s in sources)
        self.num_classes = max(s.num_classes for s in sources)
        self.in_channels = sources[0].in_channels
        self.class_names = list(max((s.class_names for s in sources), key=len))
        self._where = [(k, i) for k, s in enumerate(sources) for i in range(len(s))]
        self.ids = [f"{k}:{sources[k].ids[i]}" for k, i in self._where]
        self.cases = [f"{k}:{sources[k].cases[i]}" for k, i in self._where]
        self._index = {sid: n for n, sid in enumerate(self.ids)}
        self.predefined_split = None

    def __len__(self) -> int:
        return len(self._where)

    def index_of(self, id: str) -> int:
        """Position of sample `id`."""
        return self._index[id]

    def load(self, index: int) -> Sample:
        """Sample `index`, with the prefixed id and case."""
        k, i = self._where[index]
        sample = self.sources[k].load(i)
        sample.id, sample.case = self.ids[index], self.cases[index]
        return sample
