"""Hashing and verifying token secrets: HMAC default, key rotation, Argon2 opt-in."""

import re

import pytest
from pwdlib.hashers.argon2 import Argon2Hasher

from tests.helpers import FAST_ARGON2, SECRET
from tokens_app import conf
from tokens_app.core import hashing, tokenstring
from tokens_app.core.hashing import HMACSHA256Hasher

OLD_KEY = "old-hash-key-" + "o" * 32
NEW_KEY = "new-hash-key-" + "n" * 32
OTHER_KEY = "other-hash-key-" + "x" * 32
HMAC_FORMAT = re.compile(r"\$hmac-sha256\$k=[0-9a-f]{8}\$[0-9a-f]{64}")


def _configure(settings, **overrides):
    settings.API_TOKENS = {**settings.API_TOKENS, "ARGON2_OPTIONS": FAST_ARGON2, **overrides}


def _key_part(stored):
    return stored.split("$")[2]


@pytest.fixture
def hmac_hasher():
    return HMACSHA256Hasher([NEW_KEY.encode()])


# The pwdlib hasher on its own.


def test_hasher_without_keys_raises_value_error():
    with pytest.raises(ValueError, match="at least one key"):
        HMACSHA256Hasher([])


def test_hash_has_self_describing_format(hmac_hasher):
    assert HMAC_FORMAT.fullmatch(hmac_hasher.hash(SECRET))


def test_hash_is_deterministic_per_key(hmac_hasher):
    assert hmac_hasher.hash(SECRET) == hmac_hasher.hash(SECRET)
    assert hmac_hasher.hash(SECRET) != hmac_hasher.hash(SECRET + "x")


def test_different_keys_give_different_key_ids_and_digests(hmac_hasher):
    other = HMACSHA256Hasher([OTHER_KEY.encode()])
    mine, theirs = hmac_hasher.hash(SECRET), other.hash(SECRET)
    assert _key_part(mine) != _key_part(theirs)
    assert mine.rsplit("$", 1)[1] != theirs.rsplit("$", 1)[1]


def test_key_id_does_not_reveal_the_key(hmac_hasher):
    stored = hmac_hasher.hash(SECRET)
    assert NEW_KEY not in stored
    assert NEW_KEY.encode().hex()[:8] not in _key_part(stored)


def test_hash_never_contains_the_plaintext(hmac_hasher):
    assert SECRET not in hmac_hasher.hash(SECRET)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("$hmac-sha256$k=00000000$00", True),
        (b"$hmac-sha256$k=00000000$00", True),
        ("$hmac-sha256$", True),
        ("$argon2id$v=19$m=1024,t=1,p=1$c2FsdA$aGFzaA", False),
        ("hmac-sha256$k=00000000$00", False),
        ("x$hmac-sha256$k=00000000$00", False),
        ("", False),
        (b"\xff\xfe$hmac-sha256$", False),
    ],
    ids=repr,
)
def test_identify_recognises_only_hmac_hashes(value, expected):
    assert HMACSHA256Hasher.identify(value) is expected


def test_verify_accepts_right_secret(hmac_hasher):
    assert hmac_hasher.verify(SECRET, hmac_hasher.hash(SECRET)) is True


def test_verify_accepts_bytes_and_str_alike(hmac_hasher):
    stored = hmac_hasher.hash(SECRET)
    assert hmac_hasher.hash(SECRET.encode()) == stored
    assert hmac_hasher.verify(SECRET.encode(), stored.encode()) is True


@pytest.mark.parametrize("wrong", ["", SECRET[:-1], SECRET + "x", SECRET.upper(), "x" * 8192])
def test_verify_rejects_wrong_secret(hmac_hasher, wrong):
    assert hmac_hasher.verify(wrong, hmac_hasher.hash(SECRET)) is False


def test_verify_rejects_hash_under_unknown_key(hmac_hasher):
    other = HMACSHA256Hasher([OTHER_KEY.encode()])
    assert hmac_hasher.verify(SECRET, other.hash(SECRET)) is False


def test_verify_rejects_key_id_forged_onto_other_digest(hmac_hasher):
    other = HMACSHA256Hasher([OTHER_KEY.encode()])
    forged = f"$hmac-sha256${_key_part(hmac_hasher.hash(SECRET))}${other.hash(SECRET)[-64:]}"
    assert hmac_hasher.verify(SECRET, forged) is False


def _malformed(hasher):
    good = hasher.hash(SECRET)
    key_part, digest = _key_part(good), good.rsplit("$", 1)[1]
    return [
        "",
        "$hmac-sha256$",
        "$hmac-sha256$k=",
        f"$hmac-sha256${key_part}",
        f"$hmac-sha256${key_part}$",
        f"$hmac-sha256${key_part.replace('k=', 'x=')}${digest}",
        f"$hmac-sha256${key_part[2:]}${digest}",
        f"x{good}",
        f"{good}0",
        good[:-1],
        f"$hmac-sha256${key_part}${digest}$extra",
        good.upper(),
        b"\xff" + good.encode(),
    ]


def test_verify_rejects_malformed_hashes(hmac_hasher):
    for value in _malformed(hmac_hasher):
        assert hmac_hasher.verify(SECRET, value) is False, value


def test_rotated_hasher_verifies_old_and_new_hashes():
    old = HMACSHA256Hasher([OLD_KEY.encode()])
    rotated = HMACSHA256Hasher([NEW_KEY.encode(), OLD_KEY.encode()])
    assert rotated.verify(SECRET, old.hash(SECRET)) is True
    assert rotated.verify(SECRET, rotated.hash(SECRET)) is True
    assert rotated.hash(SECRET) == HMACSHA256Hasher([NEW_KEY.encode()]).hash(SECRET)


def test_only_hashes_under_older_keys_need_rehash():
    old = HMACSHA256Hasher([OLD_KEY.encode()])
    rotated = HMACSHA256Hasher([NEW_KEY.encode(), OLD_KEY.encode()])
    assert rotated.check_needs_rehash(old.hash(SECRET)) is True
    assert rotated.check_needs_rehash(rotated.hash(SECRET)) is False
    assert rotated.check_needs_rehash("garbage") is True


def test_current_key_wins_when_listed_twice():
    hasher = HMACSHA256Hasher([NEW_KEY.encode(), OLD_KEY.encode(), NEW_KEY.encode()])
    stored = hasher.hash(SECRET)
    assert stored == HMACSHA256Hasher([NEW_KEY.encode()]).hash(SECRET)
    assert hasher.check_needs_rehash(stored) is False


# Through the configured PasswordHash.


def test_default_hasher_is_hmac(settings):
    _configure(settings)
    stored = hashing.hash_secret(SECRET)
    assert HMAC_FORMAT.fullmatch(stored)
    assert hashing.verify_secret(SECRET, stored) == (True, None)


def test_wrong_secret_fails_without_upgrade(settings):
    _configure(settings)
    stored = hashing.hash_secret(SECRET)
    assert hashing.verify_secret(SECRET[:-1] + "z", stored) == (False, None)


def test_stored_hash_never_contains_the_plaintext(settings):
    for hasher in ("hmac-sha256", "argon2"):
        _configure(settings, HASHER=hasher)
        secret = tokenstring.generate_secret()
        assert secret not in hashing.hash_secret(secret)


def test_key_rotation_verifies_old_hash_and_upgrades_it(settings):
    _configure(settings, HASH_KEY=OLD_KEY, OLD_HASH_KEYS=[])
    old_hash = hashing.hash_secret(SECRET)
    _configure(settings, HASH_KEY=NEW_KEY, OLD_HASH_KEYS=[OLD_KEY])
    matches, upgraded = hashing.verify_secret(SECRET, old_hash)
    assert matches is True
    assert upgraded is not None
    assert HMAC_FORMAT.fullmatch(upgraded)
    assert _key_part(upgraded) != _key_part(old_hash)
    assert upgraded == hashing.hash_secret(SECRET)
    assert hashing.verify_secret(SECRET, upgraded) == (True, None)


def test_key_rotation_rejects_wrong_secret_under_old_key(settings):
    _configure(settings, HASH_KEY=OLD_KEY, OLD_HASH_KEYS=[])
    old_hash = hashing.hash_secret(SECRET)
    _configure(settings, HASH_KEY=NEW_KEY, OLD_HASH_KEYS=[OLD_KEY])
    assert hashing.verify_secret("wrong", old_hash) == (False, None)


def test_hash_under_key_no_longer_listed_fails(settings):
    _configure(settings, HASH_KEY=OLD_KEY, OLD_HASH_KEYS=[])
    old_hash = hashing.hash_secret(SECRET)
    _configure(settings, HASH_KEY=NEW_KEY, OLD_HASH_KEYS=[OTHER_KEY])
    assert hashing.verify_secret(SECRET, old_hash) == (False, None)


def test_secret_key_change_invalidates_derived_key_hashes(settings):
    _configure(settings, HASH_KEY=None, OLD_HASH_KEYS=[])
    before = hashing.hash_secret(SECRET)
    settings.SECRET_KEY = "rotated-secret-key-for-this-test-only-0123456789"
    after = hashing.hash_secret(SECRET)
    assert after != before
    assert hashing.verify_secret(SECRET, before) == (False, None)


def test_password_hash_is_cached_until_settings_change(settings):
    _configure(settings)
    first = hashing.password_hash()
    assert hashing.password_hash() is first
    _configure(settings, HASHER="argon2")
    assert hashing.password_hash() is not first


def test_argon2_hasher_makes_argon2_hashes(settings):
    _configure(settings, HASHER="argon2")
    stored = hashing.hash_secret(SECRET)
    assert stored.startswith("$argon2id$")
    assert "m=1024,t=1,p=1" in stored
    assert hashing.verify_secret(SECRET, stored) == (True, None)
    assert hashing.verify_secret("wrong", stored) == (False, None)


def test_argon2_hashes_are_salted(settings):
    _configure(settings, HASHER="argon2")
    assert hashing.hash_secret(SECRET) != hashing.hash_secret(SECRET)


def test_switch_to_argon2_upgrades_old_hmac_hashes(settings):
    _configure(settings, HASHER="hmac-sha256")
    hmac_hash = hashing.hash_secret(SECRET)
    _configure(settings, HASHER="argon2")
    matches, upgraded = hashing.verify_secret(SECRET, hmac_hash)
    assert matches is True
    assert upgraded is not None
    assert upgraded.startswith("$argon2id$")
    assert hashing.verify_secret(SECRET, upgraded) == (True, None)
    assert hashing.verify_secret("wrong", hmac_hash) == (False, None)


def test_switch_back_to_hmac_upgrades_argon2_hashes(settings):
    _configure(settings, HASHER="argon2")
    argon2_hash = hashing.hash_secret(SECRET)
    _configure(settings, HASHER="hmac-sha256")
    matches, upgraded = hashing.verify_secret(SECRET, argon2_hash)
    assert matches is True
    assert upgraded is not None
    assert HMAC_FORMAT.fullmatch(upgraded)


def test_argon2_option_change_upgrades_argon2_hashes(settings):
    _configure(settings, HASHER="argon2")
    weak = hashing.hash_secret(SECRET)
    settings.API_TOKENS = {**settings.API_TOKENS, "ARGON2_OPTIONS": {**FAST_ARGON2, "time_cost": 2}}
    matches, upgraded = hashing.verify_secret(SECRET, weak)
    assert matches is True
    assert upgraded is not None
    assert "t=2" in upgraded


def test_hmac_hash_survives_argon2_under_a_rotated_key(settings):
    _configure(settings, HASH_KEY=OLD_KEY)
    hmac_hash = hashing.hash_secret(SECRET)
    _configure(settings, HASHER="argon2", HASH_KEY=NEW_KEY, OLD_HASH_KEYS=[OLD_KEY])
    matches, upgraded = hashing.verify_secret(SECRET, hmac_hash)
    assert matches is True
    assert upgraded is not None
    assert upgraded.startswith("$argon2id$")


GARBAGE = [
    "",
    "garbage",
    "$",
    "$$$",
    "$hmac-sha256$",
    "$hmac-sha256$k=",
    "$hmac-sha256$k=00000000$",
    "$hmac-sha256$k=00000000$abc",
    "$hmac-sha256$k=zzzz$" + "0" * 64,
    "$argon2id$",
    "$argon2id$v=19$m=1024,t=1,p=1",
    "$argon2id$v=19$m=1024,t=1,p=1$c2FsdA",
    "$argon2id$v=19$m=1024,t=1,p=1$!!!$!!!",
    "$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHQ$aGFzaA",
    "$argon2x$v=19$m=1024,t=1,p=1$c2FsdHNhbHQ$aGFzaA",
    "pbkdf2_sha256$1$salt$hash",
    "\x00",
    "\u00e9" * 10,
    "x" * 8192,
    SECRET,
    None,
    123,
    b"\xff\xfe",
    ["$hmac-sha256$"],
]


@pytest.mark.parametrize("stored", GARBAGE, ids=repr)
def test_verify_secret_never_raises_on_garbage(settings, stored):
    _configure(settings)
    assert hashing.verify_secret(SECRET, stored) == (False, None)  # type: ignore[arg-type]


@pytest.mark.parametrize("stored", GARBAGE, ids=repr)
def test_verify_secret_never_raises_on_garbage_under_argon2(settings, stored):
    _configure(settings, HASHER="argon2")
    assert hashing.verify_secret(SECRET, stored) == (False, None)  # type: ignore[arg-type]


def test_verify_secret_never_raises_on_non_ascii_digest_under_current_key(settings):
    _configure(settings)
    key_part = _key_part(hashing.hash_secret(SECRET))
    stored = f"$hmac-sha256${key_part}$" + "\u00e9" * 64
    assert hashing.verify_secret(SECRET, stored) == (False, None)


def test_verify_secret_never_raises_on_malformed_hmac_hashes(settings):
    _configure(settings, HASH_KEY=NEW_KEY)
    for stored in _malformed(HMACSHA256Hasher([NEW_KEY.encode()])):
        assert hashing.verify_secret(SECRET, stored) == (False, None), stored  # type: ignore[arg-type]


@pytest.mark.parametrize("hasher", ["hmac-sha256", "argon2"])
@pytest.mark.parametrize("secret", [SECRET, "", "x" * 8192, "\u00e9"])
def test_burn_verification_time_runs_without_error(settings, hasher, secret):
    _configure(settings, HASHER=hasher)
    assert hashing.burn_verification_time(secret) is None


def test_dummy_hash_follows_the_configured_hasher(settings):
    # Unknown key ids must cost what a real verification costs, under either hasher.
    _configure(settings, HASHER="hmac-sha256")
    assert HMAC_FORMAT.fullmatch(hashing._dummy_hash())
    _configure(settings, HASHER="argon2")
    assert hashing._dummy_hash().startswith("$argon2id$")
    assert Argon2Hasher.identify(hashing._dummy_hash())


def test_hash_key_is_taken_from_settings(settings):
    _configure(settings, HASH_KEY=NEW_KEY)
    assert hashing.hash_secret(SECRET) == HMACSHA256Hasher([NEW_KEY.encode()]).hash(SECRET)
    assert conf.token_settings().hash_key == NEW_KEY.encode()


def _rotate_secret_key_with_fallback(settings):
    settings.SECRET_KEY_FALLBACKS = [settings.SECRET_KEY]
    settings.SECRET_KEY = "rotated-secret-key-for-this-test-only-0123456789"


def _set_explicit_hash_key(settings):
    _configure(settings, HASH_KEY=NEW_KEY, OLD_HASH_KEYS=[])


@pytest.mark.parametrize("change", [_rotate_secret_key_with_fallback, _set_explicit_hash_key])
def test_derived_key_hashes_survive_key_changes_and_upgrade(settings, change):
    _configure(settings, HASH_KEY=None, OLD_HASH_KEYS=[])
    before = hashing.hash_secret(SECRET)
    change(settings)
    matches, upgraded = hashing.verify_secret(SECRET, before)
    assert matches is True
    assert upgraded == hashing.hash_secret(SECRET) != before


def test_hmac_keys_derive_from_secret_key_without_hash_key():
    key, old_keys = hashing.hmac_keys(None, [], "secret-key", ["fallback"])
    assert key == hashing.derive_hash_key("secret-key")
    assert key != b"secret-key"
    # A fallback secret key keeps verifying; the current one is not listed twice.
    assert old_keys == (hashing.derive_hash_key("fallback"),)


def test_hmac_keys_keep_secret_key_derivations_verifying_under_hash_key():
    key, old_keys = hashing.hmac_keys(NEW_KEY, [OLD_KEY], "secret-key", ["", "fallback"])
    assert key == NEW_KEY.encode()
    assert old_keys == (
        OLD_KEY.encode(),
        hashing.derive_hash_key("secret-key"),
        hashing.derive_hash_key("fallback"),
    )
