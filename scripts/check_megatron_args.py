"""Check emitted Megatron-LM flags with Megatron-LM's own parse_args and validate_args (dev only).

Megatron-LM's training package is not on PyPI (megatron-core is, and tests/flags use it), so this
runs against a checkout you point it at, on a CPU-only machine: missing GPU packages (triton) are
stubbed, torch.compile is a no-op and the device reports an H100 (sm90), which is what
validate_args' architecture checks read. Nothing of Megatron-LM is copied here.

    git clone https://github.com/NVIDIA/Megatron-LM /tmp/Megatron-LM
    python scripts/check_megatron_args.py /tmp/Megatron-LM args.txt WORLD_SIZE

args.txt holds the flags (the MEGATRON_ARGS array of sp-plan's output plus the architecture flags
it leaves to you, e.g. --hidden-size and --ffn-hidden-size); export the environment lines sp-plan
prints first. Prints "validate_args OK" and the parsed CP/DP/FSDP settings, or Megatron's assertion.
"""

from __future__ import annotations

import importlib.machinery
import os
import shlex
import sys
import types
import typing


class _StubMeta(type):
    """A class whose every attribute is another stub class, so `from triton import x` and
    subclassing or calling it all work."""

    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _stub(name)

    def __call__(cls, *args, **kwargs):
        return type.__call__(cls)


def _stub(name: str) -> type:
    return _StubMeta(name, (), {"__init__": lambda self, *a, **k: None,
                                "__call__": lambda self, *a, **k: None,
                                "__getattr__": lambda self, n: _stub(n)})


class _StubModule(types.ModuleType):
    __version__ = "99.0.0"

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _stub(name)


class _StubFinder:
    """Imports of packages Megatron-LM needs unconditionally but a CPU machine lacks."""

    STUB = ("triton",)

    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in self.STUB:
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _StubModule(spec.name)
        module.__path__, module.__spec__ = [], spec
        return module

    def exec_module(self, module) -> None:
        pass


def main(argv: list[str]) -> None:
    checkout, args_file, world = argv[1], argv[2], int(argv[3])
    sys.path.insert(0, checkout)
    if not hasattr(typing, "override"):  # Python < 3.12; Megatron-LM imports it
        typing.override = lambda f: f  # type: ignore[attr-defined]
    import torch
    import torch._higher_order_ops  # noqa: F401  (import before the stubs: torch probes triton itself)
    import torch.utils.flop_counter  # noqa: F401

    # validate_args reads the GPU architecture; report an H100 (sm90). No inductor on CPU.
    torch.cuda.get_device_properties = lambda *a, **k: types.SimpleNamespace(  # type: ignore[assignment]
        major=9, minor=0, name="H100", total_memory=80 << 30)
    torch.compile = lambda fn=None, **kw: fn if fn is not None else (lambda g: g)  # type: ignore[assignment]
    sys.meta_path.insert(0, _StubFinder())
    from megatron.training.arguments import parse_args, validate_args

    os.environ["WORLD_SIZE"], os.environ["RANK"] = str(world), "0"
    with open(args_file) as f:
        sys.argv = ["pretrain_gpt.py", *shlex.split(f.read())]
    args = parse_args()
    args.world_size, args.rank = world, 0
    validate_args(args)
    print("validate_args OK: cp_comm_type", args.cp_comm_type, "cp", args.context_parallel_size,
          "dp", args.data_parallel_size, "vpp", args.virtual_pipeline_model_parallel_size,
          "megatron-fsdp", args.use_megatron_fsdp, args.data_parallel_sharding_strategy,
          "torch-fsdp2", args.use_torch_fsdp2)


if __name__ == "__main__":
    main(sys.argv)
