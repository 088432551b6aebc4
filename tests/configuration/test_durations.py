"""Short durations such as ``30d``: parsing and formatting."""

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokens_app.core.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1s", timedelta(seconds=1)),
        ("90m", timedelta(minutes=90)),
        ("12h", timedelta(hours=12)),
        ("30d", timedelta(days=30)),
        ("2w", timedelta(weeks=2)),
        ("365d", timedelta(days=365)),
        ("9999999s", timedelta(seconds=9_999_999)),
        ("9999999w", timedelta(weeks=9_999_999)),
        (" 30d ", timedelta(days=30)),
        ("30d\n", timedelta(days=30)),
        ("\t5m", timedelta(minutes=5)),
    ],
)
def test_valid_duration_parses_to_timedelta(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        "d",
        "0d",
        "0s",
        "00d",
        "01d",
        "-1d",
        "+1d",
        "1.5h",
        "1e3s",
        "1_000s",
        "30",
        "1D",
        "1H",
        "1y",
        "1ms",
        "1 d",
        "d1",
        "1d1h",
        "10000000s",
        "\uff11d",
        "\u0663d",
        "1\u0434",
        "30d\x00",
        "30 days",
        None,
        30,
        1.5,
        timedelta(days=1),
        b"30d",
    ],
    ids=repr,
)
def test_invalid_duration_raises_value_error_naming_it(value):
    with pytest.raises(ValueError, match="invalid duration") as excinfo:
        parse_duration(value)  # type: ignore[arg-type]
    assert repr(value) in str(excinfo.value)
    assert "30d" in str(excinfo.value)  # the message shows an example


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (timedelta(0), "0s"),
        (timedelta(seconds=1), "1s"),
        (timedelta(seconds=59), "59s"),
        (timedelta(seconds=60), "1m"),
        (timedelta(seconds=61), "61s"),
        (timedelta(minutes=90), "90m"),
        (timedelta(hours=1), "1h"),
        (timedelta(hours=36), "36h"),
        (timedelta(days=1), "1d"),
        (timedelta(days=8), "8d"),
        (timedelta(days=7), "1w"),
        (timedelta(weeks=52), "52w"),
        (timedelta(days=365), "365d"),
    ],
)
def test_format_duration_uses_largest_exact_unit(value, expected):
    assert format_duration(value) == expected


_UNIT_TEXT = st.tuples(st.integers(1, 9_999_999), st.sampled_from("smhdw")).map(
    lambda pair: f"{pair[0]}{pair[1]}"
)


@given(_UNIT_TEXT)
def test_formatted_duration_parses_back_and_is_never_longer(text):
    value = parse_duration(text)
    formatted = format_duration(value)
    assert parse_duration(formatted) == value
    assert len(formatted) <= len(text)


@given(st.integers(1, 9_999_999))
def test_whole_seconds_round_trip(seconds):
    value = timedelta(seconds=seconds)
    assert parse_duration(format_duration(value)) == value
