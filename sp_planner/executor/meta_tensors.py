"""Shape-and-stride stand-ins for the executor's tensors that count bytes (torch-free).

`executor.step_memory` replays one sp-run step with these in place of torch tensors, statement
for statement as the executor's code, so that each storage lives exactly as long as the real
one: CPython frees an object when its last reference goes, at the same point for a stand-in as
for the tensor it stands for. A `Storage` adds its bytes to its `Ledger` when made and takes
them off when freed; the ledger keeps the peak. Views share their base's storage.

Strides follow torch's rules where they decide whether an op copies: `contiguous()` copies only a
non-contiguous tensor (size-1 dims are ignored, c10 TensorImpl::compute_contiguous), `reshape`
merging two dims copies unless they are laid out back to back (at::detail::computeStride), and a
dtype conversion keeps the strides of a dense tensor (aten _to_copy's preserve_format,
empty_strided for non-overlapping-and-dense inputs).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod


class Ledger:
    """Bytes of live stand-in storages, and their peak; round_to: an allocator's block size."""

    def __init__(self, round_to: int = 1) -> None:
        self.round_to = round_to
        self.live_bytes = 0
        self.peak_bytes = 0

    def block_bytes(self, nbytes: int) -> int:
        return -(-nbytes // self.round_to) * self.round_to

    def add(self, nbytes: int) -> None:
        self.live_bytes += nbytes
        self.peak_bytes = max(self.peak_bytes, self.live_bytes)


class Storage:
    """Counted in its ledger while referenced, unless made before the step (`counted` False: the
    step's inputs; what the step derives from them is counted in the same ledger)."""

    def __init__(self, ledger: Ledger, nbytes: int, counted: bool = True):
        self.ledger, self.nbytes = ledger, ledger.block_bytes(nbytes) if counted else 0
        ledger.add(self.nbytes)

    def __del__(self) -> None:
        self.ledger.live_bytes -= self.nbytes


def contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= size
    return tuple(reversed(strides))


@dataclass(frozen=True)
class Meta:
    """A tensor's shape, strides (elements), element size and storage."""

    shape: tuple[int, ...]
    strides: tuple[int, ...]
    elem_bytes: int
    storage: Storage

    @property
    def ledger(self) -> Ledger:
        return self.storage.ledger

    @property
    def numel(self) -> int:
        return prod(self.shape)

    def is_contiguous(self) -> bool:
        expected = 1
        for size, stride in zip(reversed(self.shape), reversed(self.strides)):
            if size != 1 and stride != expected:
                return False
            expected *= size
        return True

    def _dense_order(self) -> list[int] | None:
        """Dims from outermost to innermost if the tensor covers its memory densely, else None."""
        order = sorted(range(len(self.shape)), key=lambda i: (self.strides[i], self.shape[i]), reverse=True)
        expected = 1
        for i in reversed(order):
            if self.shape[i] != 1 and self.strides[i] != expected:
                return None
            expected *= self.shape[i]
        return order

    def view(self, shape: tuple[int, ...], strides: tuple[int, ...]) -> Meta:
        return Meta(tuple(shape), tuple(strides), self.elem_bytes, self.storage)

    def transpose(self, i: int, j: int) -> Meta:
        shape, strides = list(self.shape), list(self.strides)
        shape[i], shape[j], strides[i], strides[j] = shape[j], shape[i], strides[j], strides[i]
        return self.view(tuple(shape), tuple(strides))

    def permute(self, *dims: int) -> Meta:
        return self.view(tuple(self.shape[d] for d in dims), tuple(self.strides[d] for d in dims))

    def narrow(self, dim: int, start: int, stop: int) -> Meta:
        """x[..., start:stop, ...] on `dim` (the storage offset does not change a byte count)."""
        shape = list(self.shape)
        shape[dim] = stop - start
        return self.view(tuple(shape), self.strides)

    def rows(self, dim: int, rows: slice) -> Meta:
        start, stop, _ = rows.indices(self.shape[dim])
        return self.narrow(dim, start, stop)

    def split(self, dim: int, outer: int) -> Meta:
        """Dim `dim` of size n -> (outer, n / outer): always a view."""
        size, stride = self.shape[dim], self.strides[dim]
        inner = size // outer
        return self.view(self.shape[:dim] + (outer, inner) + self.shape[dim + 1:],
                         self.strides[:dim] + (inner * stride, stride) + self.strides[dim + 1:])

    def merge(self, dim: int) -> Meta:
        """reshape merging dims dim and dim+1: a view where they lie back to back, else a copy."""
        (a, b), (sa, sb) = self.shape[dim:dim + 2], self.strides[dim:dim + 2]
        shape = self.shape[:dim] + (a * b,) + self.shape[dim + 2:]
        if a == 1 or b == 1 or sa == b * sb:
            stride = sb if a == 1 else sa if b == 1 else sb
            return self.view(shape, self.strides[:dim] + (stride,) + self.strides[dim + 2:])
        return new(self.ledger, shape, self.elem_bytes)

    def contiguous(self) -> Meta:
        return self if self.is_contiguous() else new(self.ledger, self.shape, self.elem_bytes)

    def to(self, elem_bytes: int) -> Meta:
        """.to(dtype) / .float(): the tensor itself in its dtype, else a copy with its strides where
        it is dense (preserve_format), contiguous otherwise."""
        if elem_bytes == self.elem_bytes:
            return self
        order = self._dense_order()
        if order is None:
            return new(self.ledger, self.shape, elem_bytes)
        copy = new(self.ledger, tuple(self.shape[i] for i in order), elem_bytes)
        back = [order.index(i) for i in range(len(self.shape))]
        return copy.permute(*back)

    def like(self, elem_bytes: int | None = None) -> Meta:
        """A new tensor of this shape (empty_like / zeros of the shape: contiguous)."""
        return new(self.ledger, self.shape, elem_bytes or self.elem_bytes)


def new(ledger: Ledger, shape: tuple[int, ...], elem_bytes: int, counted: bool = True) -> Meta:
    """A fresh contiguous tensor in `ledger` (counted: made during the step)."""
    return Meta(tuple(shape), contiguous_strides(tuple(shape)), elem_bytes,
                Storage(ledger, prod(shape) * elem_bytes, counted))
