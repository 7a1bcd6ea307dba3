"""Numbers for people: sizes in binary units up to exbibytes, durations up to days."""

import pytest

from sp_planner.errors import UserInputError
from sp_planner.units import (
    bytes_unit,
    format_bytes,
    format_bytes_as,
    format_seconds,
    format_seconds_as,
    format_significant,
    parse_tokens,
    seconds_unit,
)


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


def test_token_counts_take_binary_suffixes_and_fractions_that_come_to_whole_tokens():
    assert parse_tokens("128k") == parse_tokens("128K") == 131072
    assert parse_tokens("1M") == 1048576
    # 1.5k was refused as "not a token count; use an integer or a suffix k/M", a suffix it had.
    assert parse_tokens("1.5k") == 1536 and parse_tokens("1.5M") == 1572864
    for text, message in (("1.3k", "--seq-len '1.3k' is 1331.2 tokens, not a whole number; give whole tokens, "
                                    "e.g. 1331 or 1332"),
                          ("1.5", "--seq-len '1.5' is 1.5 tokens, not a whole number"),
                          ("1e3", "--seq-len '1e3' is not a token count"),
                          ("0k", "--seq-len must be positive, got 0k"),
                          # Full-width digits matched \d and were taken (--nodes refuses them).
                          ("\uff11\uff12\uff18k", "--seq-len '\uff11\uff12\uff18k' is not a token count")):
        with pytest.raises(UserInputError) as err:
            parse_tokens(text)
        assert str(err.value).startswith(message)


def test_token_count_errors_suggest_only_counts_that_are_accepted():
    """Below one token the nearest whole counts were '0 or 1' (0 is refused next), and a negative
    count was called 'not a token count' and sent to 'use an integer', which it was."""
    for text, message in (("0.5", "--seq-len '0.5' is 0.5 tokens, not a whole number; give whole tokens, e.g. 1"),
                          ("0.0001k", "--seq-len '0.0001k' is 0.1024 tokens, not a whole number; give whole "
                                      "tokens, e.g. 1"),
                          ("1.5", "--seq-len '1.5' is 1.5 tokens, not a whole number; give whole tokens, "
                                  "e.g. 1 or 2"),
                          ("-5", "--seq-len must be positive, got -5"),
                          ("-0.5k", "--seq-len must be positive, got -0.5k")):
        with pytest.raises(UserInputError) as err:
            parse_tokens(text)
        assert str(err.value) == message


def test_the_unit_of_a_reference_is_the_one_format_seconds_and_format_bytes_give_it():
    for seconds in (2.5e-5, 0.25, 212.98, 9 * 3600, 428914.25, 1e-3, 1.0, 3600.0):
        assert format_seconds(seconds).split()[1] == seconds_unit(seconds)[0]
        assert format_seconds_as(seconds, seconds) == format_seconds(seconds)
    for num_bytes in (512, 48 * 2**20, 80 * 2**30, 3 * 2**60):
        assert format_bytes(num_bytes).split()[1] == bytes_unit(num_bytes)[0]
        assert format_bytes_as(num_bytes, num_bytes) == format_bytes(num_bytes)


def test_quantities_in_a_shared_unit_keep_two_significant_digits():
    # A runner-up 318.4 ms slower than a 258.99 s step; 3.8 ms would have been "0.00 s".
    assert format_seconds_as(0.3184, 258.99) == "0.32 s"
    assert format_seconds_as(0.0038, 258.99) == "0.0038 s"
    assert format_seconds_as(5000.0, 3000.0) == "5,000.00 s"
    # 48 MiB beside 79.3 GiB of HBM: 48 / 1024 = 0.046875 GiB.
    assert format_bytes_as(48 * 2**20, 79.3 * 2**30) == "0.047 GiB"
    assert format_bytes_as(9.3 * 2**30, 80 * 2**30) == "9.3 GiB"
    assert format_bytes_as(0, 80 * 2**30) == "0.0 GiB"


def test_significant_digits_without_an_exponent():
    # A step range of a 3,000 s step read "2.7e+03-3.9e+03 s" with :.3g.
    assert [format_significant(v) for v in (2700.0, 3720.4, 90.0, 130.0, 13.24, 0.5183)] == [
        "2,700", "3,720", "90", "130", "13.2", "0.518"]


def test_tflops_keep_three_significant_digits_under_one():
    # A CPU profile's peak (0.0441 TFLOPS) was shown as 0.0 at one decimal.
    from sp_planner.units import format_tflops

    assert format_tflops(0.04412) == "0.0441" and format_tflops(0.5, 0) == "0.5"
    assert format_tflops(312.0) == "312.0" and format_tflops(2250.0) == "2,250.0"
    assert format_tflops(1534.4, 0) == "1,534" and format_tflops(1534.4, 0, thousands=False) == "1534"
    assert format_tflops(0.0) == "0.0"
