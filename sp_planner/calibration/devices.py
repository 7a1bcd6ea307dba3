"""Which built-in profile describes the GPU that torch reports (torch.cuda.get_device_name())."""

from __future__ import annotations

import re

# (words that must all appear, words that must not, built-in profile). Built-ins are SXM/OAM
# boards in 8-GPU nodes, so PCIe and NVL cards of the same chip (other clocks, links and power)
# match none. Device strings as torch reports them, e.g. "NVIDIA H100 80GB HBM3",
# "NVIDIA A100-SXM4-80GB", "NVIDIA H200", "AMD Instinct MI300X".
_RULES: tuple[tuple[tuple[str, ...], tuple[str, ...], str], ...] = (
    (("h100",), ("pcie", "nvl"), "H100-SXM"),
    (("h200",), ("pcie", "nvl"), "H200"),
    (("h800",), ("pcie", "nvl"), "H800"),
    (("a800",), ("pcie",), "A800"),
    (("a100", "80gb"), ("pcie",), "A100-80GB"),
    (("a100", "40gb"), ("pcie",), "A100-40GB"),
    (("b200",), (), "B200"),
    # "NVIDIA B300 SXM6 AC" (NVIDIA/cosmos-framework PR #114). GB200/GB300 ("NVIDIA GB300") match
    # no rule: the same chip sits in racks of other NVLink domain sizes.
    (("b300",), (), "B300"),
    (("l40s",), (), "L40S"),
    (("l20",), (), "L20"),
    (("mi300x",), (), "MI300X"),
)


def builtin_for_device(device_name: str) -> str | None:
    """The built-in profile name for a device string, or None (CPU, or a board we have no sheet for)."""
    words = set(re.split(r"[\s\-_/]+", device_name.lower()))
    for required, excluded, name in _RULES:
        if all(w in words for w in required) and not any(w in words for w in excluded):
            return name
    return None
