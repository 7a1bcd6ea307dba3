"""Device strings as torch.cuda.get_device_name() reports them -> built-in profiles."""

import pytest

from sp_planner.calibration.devices import builtin_for_device
from sp_planner.catalog import builtin_hardware_names


@pytest.mark.parametrize("device, name", [
    ("NVIDIA H100 80GB HBM3", "H100-SXM"),
    ("NVIDIA H200", "H200"),
    ("NVIDIA A100-SXM4-80GB", "A100-80GB"),
    ("NVIDIA A100-SXM4-40GB", "A100-40GB"),
    ("NVIDIA A800-SXM4-80GB", "A800"),
    ("AMD Instinct MI300X", "MI300X"),
    ("NVIDIA L40S", "L40S"),
    ("NVIDIA B300 SXM6 AC", "B300"),  # NVIDIA/cosmos-framework PR #114
    ("NVIDIA GB300", None),  # rack part: the NVLink domain size is not in the name
    ("NVIDIA H100 PCIe", None),  # built-ins are SXM boards
    ("NVIDIA H100 NVL", None),
    ("NVIDIA A100 80GB PCIe", None),
    ("cpu (x86_64)", None),
])
def test_builtin_for_device(device, name):
    assert builtin_for_device(device) == name


def test_every_match_is_a_builtin():
    from sp_planner.calibration.devices import _RULES

    assert {name for *_, name in _RULES} <= set(builtin_hardware_names())
