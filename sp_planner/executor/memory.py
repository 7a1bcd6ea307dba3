"""Peak memory of a step above what existed before it: the CUDA allocator's peak on GPU; on CPU,
the peak of live tensor bytes allocated under a dispatch mode (the new storages of every aten op,
freed when the storage dies).

Both count only what the step allocates: a CUDA run takes max_memory_allocated minus
memory_allocated before the step, and the CPU tracker skips an op's output that shares a storage
with one of its arguments (a view, detach, an in-place or out= op), so tensors made before the
step (its inputs, the reference) are never counted, however the step views them. The CPU
tracker sees an op's outputs, not the scratch a kernel allocates inside itself (executor.
step_memory's replay counts the same)."""

from __future__ import annotations

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

CPU_METHOD = ("tracked tensor bytes above the step's inputs (aten dispatch mode: storages the step's ops "
              "create, not kernels' internal scratch)")
CUDA_METHOD = "torch.cuda.max_memory_allocated during the step, above memory_allocated before it"


def _storage_key(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage().data_ptr()


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
        given = {_storage_key(t) for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for item in result if isinstance(result, (tuple, list)) else (result,):
            if isinstance(item, torch.Tensor) and item.device.type == "cpu" and _storage_key(item) not in given:
                self.track(item)
        return result
