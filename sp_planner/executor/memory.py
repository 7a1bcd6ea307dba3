"""Peak memory of a step: the CUDA allocator's peak on GPU; on CPU, the peak of live tensor bytes
allocated under a dispatch mode (every aten op's new storages, freed when the storage dies)."""

from __future__ import annotations

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode

CPU_METHOD = "tracked tensor bytes (aten dispatch mode; storages allocated during the step)"
CUDA_METHOD = "torch.cuda.max_memory_allocated during the step"


class TensorBytesTracker(TorchDispatchMode):
    """Counts bytes of storages created by aten ops while active, and their peak."""

    def __init__(self):
        super().__init__()
        self.live_bytes = 0
        self.peak_bytes = 0
        self._live: set[int] = set()

    def track(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key == 0 or key in self._live:
            return
        self._live.add(key)
        nbytes = storage.nbytes()
        self.live_bytes += nbytes
        self.peak_bytes = max(self.peak_bytes, self.live_bytes)
        weakref.finalize(storage, self._release, key, nbytes)

    def _release(self, key: int, nbytes: int) -> None:
        if key in self._live:
            self._live.discard(key)
            self.live_bytes -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        for item in result if isinstance(result, (tuple, list)) else (result,):
            if isinstance(item, torch.Tensor) and item.device.type == "cpu":
                self.track(item)
        return result
