"""Output-size factor of a GEMM (cost.gemm_outputs) against OpenXLA's H100 and B200 tables."""

import math

import numpy as np
import pytest

from sp_planner.catalog.hardware import load_hardware as builtin_hardware
from sp_planner.cost.gemm_outputs import HOPPER_OUTPUT_TFLOPS, output_ratio

# xla default_matmul_perf_table.txtpb (ROCm/xla dc66032), key sm_90, bf16 TFLOPS at k 4096 of the
# shapes with 2^25 outputs: (b, m, n) = (2, 4096, 4096) 804.2, (4, 2048, 4096) 800.7,
# (4, 4096, 2048) 804.7; with 2^23: (1, 2048, 4096) 752.3, (1, 4096, 2048) 759.4,
# (2, 1024, 4096) 742.7, (2, 2048, 2048) 752.2, (2, 4096, 1024) 746.6, (4, 512, 4096) 724.2,
# (4, 1024, 2048) 740.6, (4, 2048, 1024) 740.6, (4, 4096, 512) 720.6.
H100_K4096_2P25 = (804.2 + 800.7 + 804.7) / 3  # 803.2
H100_K4096_2P23 = (752.3 + 759.4 + 742.7 + 752.2 + 746.6 + 724.2 + 740.6 + 740.6 + 720.6) / 9  # 742.1


@pytest.fixture
def h100():
    return builtin_hardware("h100-sxm")


def test_table_means_are_the_shapes_means():
    assert HOPPER_OUTPUT_TFLOPS[-1][-1] == pytest.approx(H100_K4096_2P25, abs=0.05)
    assert HOPPER_OUTPUT_TFLOPS[-1][4] == pytest.approx(H100_K4096_2P23, abs=0.05)


def test_small_outputs_run_slower_large_ones_not(h100):
    assert float(output_ratio(h100, 2**23, 4096)) == pytest.approx(742.1 / 803.2)
    # From 2^25 outputs up, and beyond the table's k, the factor is 1.
    assert np.all(output_ratio(h100, [2**25, 2**27, 10**9], [4096, 8192, 65536]) == 1.0)
    # Smaller GEMMs fall further: k 1024 at 2^21 outputs runs 382.0 of 690.1.
    assert float(output_ratio(h100, 2**21, 1024)) == pytest.approx(382.0 / 690.1)


def test_linear_in_log_outputs_and_log_k(h100):
    # Halfway between 2^22 and 2^23 (in log), k 4096: the mean of the two points' ratios.
    assert float(output_ratio(h100, 2**22.5, 4096)) == pytest.approx((749.1 + 742.1) / 2 / 803.2)
    # Halfway between k 1024 and 2048, at 2^23: the mean of the two rows' ratios.
    assert float(output_ratio(h100, 2**23, math.sqrt(1024 * 2048))) == pytest.approx(
        (598.9 / 690.1 + 719.6 / 756.2) / 2)


def test_below_the_table_the_smallest_point_holds(h100):
    assert float(output_ratio(h100, 2**17, 4096)) == pytest.approx(311.9 / 803.2)


def test_blackwell_family_takes_b200s_table_and_others_none():
    # B200, k 4096: 2^23 outputs 1337.3 of 1466.2; GB200 and GB300 the same (same SMs).
    for name in ("b200", "gb200-nvl72", "gb300-nvl72"):
        assert float(output_ratio(builtin_hardware(name), 2**23, 4096)) == pytest.approx(1337.3 / 1466.2)
    for name in ("a100-80gb", "a800", "mi300x", "l40s"):
        assert float(output_ratio(builtin_hardware(name), 2**19, 256)) == 1.0


def test_vectorized(h100):
    got = output_ratio(h100, np.array([2**21, 2**23, 2**26]), 4096)
    assert got.shape == (3,)
    assert got.tolist() == pytest.approx([663.2 / 803.2, 742.1 / 803.2, 1.0])


def test_blackwell_fp8_gemms_take_the_tables_fp8_entries(h100):
    # sm_100_B200's FP8 entries (e4m3 x e4m3 -> bf16), k 4096, the shapes' means: 2^19 outputs 481.0
    # and 2^23 2397.7 of 3129.4 at 2^25; a small FP8 GEMM falls further than a BF16 one (394.1 of
    # 1466.2 at 2^19).
    b200 = builtin_hardware("b200")
    assert float(output_ratio(b200, 2**19, 4096, fp8=True)) == pytest.approx(481.0 / 3129.4)
    assert float(output_ratio(b200, 2**23, 4096, fp8=True)) == pytest.approx(2397.7 / 3129.4)
    assert float(output_ratio(b200, 2**19, 4096)) == pytest.approx(394.1 / 1466.2)
    assert float(output_ratio(b200, 2**26, 1024, fp8=True)) == 1.0
    # Hopper's FP8 entries exceed the peak: its FP8 GEMMs take B200's FP8 ratios (cost.gemm_shapes'
    # DeepGEMM check), its BF16 ones keep their own.
    assert float(output_ratio(h100, 2**23, 4096, fp8=True)) == pytest.approx(2397.7 / 3129.4)
    assert float(output_ratio(h100, 2**23, 4096)) == pytest.approx(742.1 / 803.2)
