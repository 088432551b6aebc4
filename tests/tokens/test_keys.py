"""The token string: generation, parsing, checksum (pure Python, no database)."""

import dataclasses
import math
import zlib
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.helpers import PREFIX, SECRET
from tokens_app.core import tokenstring

KEY_ID = "AbCdEfGhIjKl"
VALID = tokenstring.assemble(PREFIX, KEY_ID, SECRET)
BODY_START = len(PREFIX) + 1
SECRET_START = BODY_START + tokenstring.KEY_ID_LENGTH
CHECKSUM_START = SECRET_START + tokenstring.SECRET_LENGTH


def _decode_base62(text: str) -> int:
    return sum(
        tokenstring.BASE62.index(char) * 62**power for power, char in enumerate(reversed(text))
    )


def _replace(value: str, index: int, char: str) -> str:
    return value[:index] + char + value[index + 1 :]


def _other_base62(char: str) -> str:
    return "0" if char != "0" else "1"


def test_valid_token_has_documented_shape():
    assert VALID.startswith("tka_")
    assert len(VALID) == len(PREFIX) + 1 + tokenstring.BODY_LENGTH
    assert VALID[BODY_START:SECRET_START] == KEY_ID
    assert VALID[SECRET_START:CHECKSUM_START] == SECRET
    assert len(VALID[CHECKSUM_START:]) == tokenstring.CHECKSUM_LENGTH


def test_valid_token_parses_into_key_id_and_secret():
    assert tokenstring.parse(VALID, PREFIX) == tokenstring.ParsedToken(key_id=KEY_ID, secret=SECRET)


def test_generated_parts_are_base62_of_the_documented_length():
    key_id = tokenstring.generate_key_id()
    secret = tokenstring.generate_secret()
    assert len(key_id) == tokenstring.KEY_ID_LENGTH
    assert len(secret) == tokenstring.SECRET_LENGTH
    assert set(key_id + secret) <= set(tokenstring.BASE62)


def test_secret_length_gives_at_least_160_bits():
    assert tokenstring.SECRET_LENGTH * math.log2(len(tokenstring.BASE62)) >= 160


def test_generated_values_do_not_repeat():
    assert len({tokenstring.generate_secret() for _ in range(500)}) == 500
    assert len({tokenstring.generate_key_id() for _ in range(500)}) == 500


def test_base62_alphabet_has_62_distinct_ascii_alphanumerics():
    assert len(set(tokenstring.BASE62)) == 62
    assert all(char.isascii() and char.isalnum() for char in tokenstring.BASE62)


@pytest.mark.parametrize(
    ("key_id", "secret"),
    [("", ""), ("a", ""), (KEY_ID, SECRET), ("zzzzzzzzzzzz", "z" * 32), ("0" * 12, "0" * 32)],
)
def test_checksum_is_crc32_in_six_base62_digits(key_id, secret):
    value = tokenstring.checksum(key_id, secret)
    assert len(value) == tokenstring.CHECKSUM_LENGTH
    assert _decode_base62(value) == zlib.crc32((key_id + secret).encode("ascii"))


def test_checksum_of_empty_input_is_all_zeros():
    assert tokenstring.checksum("", "") == "000000"


def test_checksum_changes_when_input_changes():
    assert tokenstring.checksum(KEY_ID, SECRET) != tokenstring.checksum(
        KEY_ID, _replace(SECRET, 0, "1")
    )


def test_longest_prefix_fits_max_token_length():
    token = tokenstring.assemble("a" * tokenstring.MAX_PREFIX_LENGTH, KEY_ID, SECRET)
    assert len(token) == tokenstring.MAX_TOKEN_LENGTH


@pytest.mark.parametrize("prefix", ["ab", "tka", "ghp", "a1", "a" * 16])
def test_valid_prefix_round_trips(prefix):
    assert tokenstring.PREFIX_PATTERN.match(prefix)
    token = tokenstring.assemble(prefix, KEY_ID, SECRET)
    assert tokenstring.parse(token, prefix) == tokenstring.ParsedToken(KEY_ID, SECRET)


def test_parsed_token_repr_hides_secret():
    parsed = tokenstring.parse(VALID, PREFIX)
    assert parsed is not None
    assert SECRET not in repr(parsed)
    assert KEY_ID in repr(parsed)


def test_parsed_token_is_immutable():
    parsed = tokenstring.parse(VALID, PREFIX)
    with pytest.raises(dataclasses.FrozenInstanceError):
        parsed.secret = "x"  # type: ignore[misc]


CORRUPTIONS: dict[str, Callable[[], object]] = {
    "empty": lambda: "",
    "none": lambda: None,
    "int": lambda: 12345,
    "bytes": lambda: VALID.encode(),
    "list": lambda: [VALID],
    "prefix-only": lambda: "tka_",
    "one-char-short": lambda: VALID[:-1],
    "one-char-long": lambda: VALID + "a",
    "truncated-body": lambda: VALID[: BODY_START + 20],
    "leading-space": lambda: " " + VALID,
    "trailing-space": lambda: VALID + " ",
    "trailing-newline": lambda: VALID + "\n",
    "newline-replaces-last": lambda: VALID[:-1] + "\n",
    "nul-in-body": lambda: _replace(VALID, SECRET_START + 3, "\x00"),
    "wrong-prefix": lambda: "abc" + VALID[3:],
    "uppercase-prefix": lambda: VALID.replace("tka", "TKA", 1),
    "hyphen-separator": lambda: VALID.replace("_", "-", 1),
    "no-separator": lambda: "tkaa" + VALID[BODY_START:],
    "double-separator": lambda: "tka__" + VALID[BODY_START + 1 :],
    "cyrillic-a-in-prefix": lambda: VALID.replace("a", "\u0430", 1),
    "underscore-in-body": lambda: _replace(VALID, BODY_START + 2, "_"),
    "hyphen-in-key-id": lambda: _replace(VALID, BODY_START, "-"),
    "plus-in-secret": lambda: _replace(VALID, SECRET_START, "+"),
    "slash-in-checksum": lambda: _replace(VALID, CHECKSUM_START, "/"),
    "cyrillic-A-lookalike": lambda: _replace(VALID, BODY_START, "\u0410"),
    "greek-O-lookalike": lambda: _replace(VALID, SECRET_START + 1, "\u039f"),
    "fullwidth-zero": lambda: _replace(VALID, SECRET_START, "\uff10"),
    "arabic-indic-digit": lambda: _replace(VALID, SECRET_START, "\u0663"),
    "accented-e": lambda: _replace(VALID, SECRET_START + 14, "\u00e9"),
    "flipped-key-id-char": lambda: _replace(VALID, BODY_START, _other_base62(VALID[BODY_START])),
    "flipped-secret-char": lambda: _replace(
        VALID, SECRET_START + 5, _other_base62(VALID[SECRET_START + 5])
    ),
    "flipped-checksum-char": lambda: _replace(VALID, len(VALID) - 1, _other_base62(VALID[-1])),
    "swapped-checksum-case": lambda: VALID[:CHECKSUM_START] + VALID[CHECKSUM_START:].swapcase(),
    "checksum-of-other-token": lambda: (
        VALID[:CHECKSUM_START] + tokenstring.checksum("a" * 12, "b" * 32)
    ),
    "8kb-garbage": lambda: "a" * 8192,
    "8kb-after-prefix": lambda: "tka_" + "A" * 8192,
    "8kb-token-repeated": lambda: VALID * (8192 // len(VALID) + 1),
}


@pytest.mark.parametrize("make", list(CORRUPTIONS.values()), ids=list(CORRUPTIONS))
def test_corrupted_token_is_rejected(make):
    value = make()
    assert value != VALID  # the corruption really corrupts
    assert tokenstring.parse(value, PREFIX) is None  # type: ignore[arg-type]


@pytest.mark.parametrize("prefix", ["tk", "tkab", "abc", "TKA", ""])
def test_token_is_rejected_under_another_prefix(prefix):
    assert tokenstring.parse(VALID, prefix) is None


@pytest.mark.parametrize("token", [VALID, tokenstring.assemble("tka", *("x" * 12, "y" * 32))])
def test_every_single_character_substitution_is_detected(token):
    for index in range(BODY_START, len(token)):
        for char in tokenstring.BASE62:
            if char != token[index]:
                assert tokenstring.parse(_replace(token, index, char), PREFIX) is None, (
                    index,
                    char,
                )


def test_adjacent_transpositions_in_key_id_and_secret_are_detected():
    token = tokenstring.assemble(
        PREFIX, tokenstring.generate_key_id(), tokenstring.generate_secret()
    )
    for index in range(BODY_START, CHECKSUM_START - 1):
        a, b = token[index], token[index + 1]
        if a != b:
            swapped = token[:index] + b + a + token[index + 2 :]
            assert tokenstring.parse(swapped, PREFIX) is None, index


@given(st.text())
def test_arbitrary_text_never_raises_and_only_round_trips_parse(value):
    parsed = tokenstring.parse(value, PREFIX)
    assert parsed is None or tokenstring.assemble(PREFIX, parsed.key_id, parsed.secret) == value


_NEAR_TOKENS = st.builds(
    lambda body: f"{PREFIX}_{body}",
    st.text(alphabet=tokenstring.BASE62 + "_-\n \u0410", min_size=49, max_size=51),
)


@given(_NEAR_TOKENS)
def test_near_miss_text_never_parses_unless_it_round_trips(value):
    parsed = tokenstring.parse(value, PREFIX)
    assert parsed is None or tokenstring.assemble(PREFIX, parsed.key_id, parsed.secret) == value


_PARTS = st.tuples(
    st.from_regex(tokenstring.PREFIX_PATTERN, fullmatch=True).filter(lambda p: "\n" not in p),
    st.text(
        alphabet=tokenstring.BASE62,
        min_size=tokenstring.KEY_ID_LENGTH,
        max_size=tokenstring.KEY_ID_LENGTH,
    ),
    st.text(
        alphabet=tokenstring.BASE62,
        min_size=tokenstring.SECRET_LENGTH,
        max_size=tokenstring.SECRET_LENGTH,
    ),
)


@given(_PARTS)
def test_assembled_tokens_always_parse_back(parts):
    prefix, key_id, secret = parts
    token = tokenstring.assemble(prefix, key_id, secret)
    assert len(token) <= tokenstring.MAX_TOKEN_LENGTH
    assert tokenstring.parse(token, prefix) == tokenstring.ParsedToken(key_id=key_id, secret=secret)


def test_generated_tokens_always_parse_back():
    for _ in range(500):
        key_id, secret = tokenstring.generate_key_id(), tokenstring.generate_secret()
        parsed = tokenstring.parse(tokenstring.assemble(PREFIX, key_id, secret), PREFIX)
        assert parsed == tokenstring.ParsedToken(key_id=key_id, secret=secret)


def test_generated_key_id_is_valid():
    assert tokenstring.is_valid_key_id(tokenstring.generate_key_id())
    assert tokenstring.is_valid_key_id(KEY_ID)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "abc",
        KEY_ID[:-1],
        KEY_ID + "a",
        "AbCdEf-hIjKl",
        "AbCdEf_hIjKl",
        "AbCdEf hIjKl",
        "\u0410bCdEfGhIjKl",
        "\uff10bCdEfGhIjKl",
        VALID,
        None,
        123,
        KEY_ID.encode(),
    ],
    ids=repr,
)
def test_malformed_key_id_is_invalid(value):
    assert tokenstring.is_valid_key_id(value) is False  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [KEY_ID + "\n", "\n" + KEY_ID, KEY_ID + "\r\n"], ids=repr)
def test_key_id_with_newline_is_invalid(value):
    # A '$' anchor would accept a trailing newline; the key id must match exactly.
    assert tokenstring.is_valid_key_id(value) is False
