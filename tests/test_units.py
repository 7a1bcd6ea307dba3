"""Numbers for people: sizes in binary units up to exbibytes, durations up to days."""

from sp_planner.units import format_bytes, format_seconds


def test_bytes_by_binary_unit():
    assert format_bytes(512) == "512 B"
    assert format_bytes(80 * 2**30) == "80.0 GiB"
    # sp-run's memory refusal of a 1M-token, 16K-head shape: not "4398113619968.0 TiB".
    assert format_bytes(3 * 2**60) == "3.0 EiB"
    assert format_bytes(5 * 2**50) == "5.0 PiB"


def test_seconds_by_their_size():
    assert format_seconds(2.5e-5) == "25.0 µs"
    assert format_seconds(0.25) == "250.0 ms"
    assert format_seconds(212.98) == "212.98 s"
    # A 9-hour step (one sequence per GPU at 1M tokens on 4096 GPUs) and sp-run's timeout refusal.
    assert format_seconds(9 * 3600) == "9.00 h"
    assert format_seconds(428914.25) == "5.0 days"
