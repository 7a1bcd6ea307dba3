"""Numbers for people: sizes in binary units up to exbibytes, durations up to days."""

import pytest

from sp_planner.errors import UserInputError
from sp_planner.units import format_bytes, format_seconds, parse_tokens


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
                          ("0k", "--seq-len must be positive, got 0k")):
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
