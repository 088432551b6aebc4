"""The settings object over ``API_TOKENS``: defaults, validation, lazy reload."""

import re
from datetime import timedelta

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from tokens_app import conf
from tokens_app.core.rates import parse_rate

KEY_A = "a" * conf.MIN_HASH_KEY_LENGTH
KEY_B = "b" * 40


def _problem(raw):
    """Return the message of the ``ImproperlyConfigured`` that *raw* raises."""
    with pytest.raises(ImproperlyConfigured) as excinfo:
        conf.load(raw)
    return str(excinfo.value)


def test_empty_settings_give_documented_defaults():
    loaded = conf.load({})
    assert loaded.prefix == "tka"
    assert loaded.scopes == {}
    assert loaded.default_lifetime == timedelta(days=30)
    assert loaded.max_lifetime == timedelta(days=365)
    assert loaded.allow_non_expiring is False
    assert loaded.max_active_tokens_per_user == 50
    assert loaded.last_used_interval == timedelta(minutes=5)
    assert loaded.hasher == "hmac-sha256"
    assert loaded.hash_key_is_derived is True
    assert loaded.old_hash_keys == ()
    assert loaded.argon2_options == {}
    assert loaded.accept_x_api_key is False
    assert loaded.realm == "api"


def test_defaults_all_validate():
    assert conf.load(dict(conf.DEFAULTS)) == conf.load({})


def test_missing_api_tokens_setting_gives_defaults(settings, request):
    # pytest-django sends no setting_changed for a deletion, nor for its undoing.
    del settings.API_TOKENS
    conf._reload(setting="API_TOKENS")
    request.addfinalizer(lambda: conf._reload(setting="API_TOKENS"))
    assert conf.token_settings() == conf.load({})


def test_project_settings_are_loaded(settings):
    settings.API_TOKENS = {"TOKEN_PREFIX": "proj", "SCOPES": {"notes:read": "Read."}}
    loaded = conf.token_settings()
    assert loaded.prefix == "proj"
    assert dict(loaded.scopes) == {"notes:read": "Read."}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"DEFAULT_LIFETIME": "7d"}, timedelta(days=7)),
        ({"DEFAULT_LIFETIME": "12h"}, timedelta(hours=12)),
        ({"DEFAULT_LIFETIME": timedelta(days=7)}, timedelta(days=7)),
        ({"DEFAULT_LIFETIME": timedelta(seconds=1)}, timedelta(seconds=1)),
        ({"DEFAULT_LIFETIME": "365d"}, timedelta(days=365)),
        ({"DEFAULT_LIFETIME": None, "ALLOW_NON_EXPIRING": True}, None),
    ],
)
def test_default_lifetime_is_accepted(raw, expected):
    assert conf.load(raw).default_lifetime == expected


def test_timedelta_values_are_accepted_everywhere():
    loaded = conf.load(
        {
            "DEFAULT_LIFETIME": timedelta(days=2),
            "MAX_LIFETIME": timedelta(days=10),
            "LAST_USED_INTERVAL": timedelta(seconds=30),
        }
    )
    assert loaded.default_lifetime == timedelta(days=2)
    assert loaded.max_lifetime == timedelta(days=10)
    assert loaded.last_used_interval == timedelta(seconds=30)


def test_no_maximum_lifetime_is_accepted():
    assert conf.load({"MAX_LIFETIME": None}).max_lifetime is None


def test_no_token_limit_is_accepted():
    assert conf.load({"MAX_ACTIVE_TOKENS_PER_USER": None}).max_active_tokens_per_user is None


def test_explicit_values_are_kept():
    loaded = conf.load(
        {
            "TOKEN_PREFIX": "a" * 16,
            "MAX_ACTIVE_TOKENS_PER_USER": 1,
            "HASHER": "argon2",
            "ARGON2_OPTIONS": {
                "time_cost": 1,
                "memory_cost": 1024,
                "parallelism": 1,
                "hash_len": 16,
                "salt_len": 16,
            },
            "ACCEPT_X_API_KEY": True,
            "ALLOW_NON_EXPIRING": True,
            "REALM": "my api",
            "PREPARED_STATEMENTS": False,
        }
    )
    assert loaded.prepared_statements is False
    assert loaded.prefix == "a" * 16
    assert loaded.max_active_tokens_per_user == 1
    assert loaded.hasher == "argon2"
    assert loaded.argon2_options["memory_cost"] == 1024
    assert loaded.accept_x_api_key is True
    assert loaded.allow_non_expiring is True
    assert loaded.realm == "my api"


def test_default_lifetime_equal_to_max_is_accepted():
    loaded = conf.load({"DEFAULT_LIFETIME": "1w", "MAX_LIFETIME": "7d"})
    assert loaded.default_lifetime == loaded.max_lifetime


def test_explicit_hash_key_is_used_and_not_derived():
    loaded = conf.load({"HASH_KEY": KEY_A, "OLD_HASH_KEYS": [KEY_B]})
    assert loaded.hash_key == KEY_A.encode()
    assert loaded.hash_key_is_derived is False
    # The listed old key first, then the key derived from SECRET_KEY (for migration).
    assert loaded.old_hash_keys == (KEY_B.encode(), conf.load({}).hash_key)


def test_old_hash_keys_may_be_a_tuple():
    assert conf.load({"OLD_HASH_KEYS": (KEY_A, KEY_B)}).old_hash_keys == (
        KEY_A.encode(),
        KEY_B.encode(),
    )


def test_derived_hash_key_is_not_secret_key(settings):
    loaded = conf.load({})
    assert loaded.hash_key_is_derived is True
    assert len(loaded.hash_key) == 32
    assert settings.SECRET_KEY.encode() not in loaded.hash_key
    assert loaded.hash_key == conf.load({}).hash_key  # stable for one SECRET_KEY


def test_secret_key_change_alters_derived_hash_key(settings):
    settings.API_TOKENS = {"HASH_KEY": None}
    before = conf.token_settings().hash_key
    settings.SECRET_KEY = "another-secret-key-for-this-test-only-0123456789"
    after = conf.token_settings()
    assert after.hash_key_is_derived is True
    assert after.hash_key != before


def test_secret_key_change_leaves_explicit_hash_key_alone(settings):
    settings.API_TOKENS = {"HASH_KEY": KEY_A}
    settings.SECRET_KEY = "another-secret-key-for-this-test-only-0123456789"
    assert conf.token_settings().hash_key == KEY_A.encode()


def test_settings_change_reloads_without_module_reload(settings):
    settings.API_TOKENS = {"TOKEN_PREFIX": "one"}
    first = conf.token_settings()
    assert first.prefix == "one"
    settings.API_TOKENS = {**settings.API_TOKENS, "TOKEN_PREFIX": "two", "HASHER": "argon2"}
    second = conf.token_settings()
    assert (second.prefix, second.hasher) == ("two", "argon2")


def test_override_settings_restores_previous_values(settings):
    settings.API_TOKENS = {"TOKEN_PREFIX": "outer"}
    assert conf.token_settings().prefix == "outer"
    with override_settings(API_TOKENS={"TOKEN_PREFIX": "inner"}):
        assert conf.token_settings().prefix == "inner"
    assert conf.token_settings().prefix == "outer"


def test_settings_are_cached_between_changes(settings):
    settings.API_TOKENS = {"TOKEN_PREFIX": "cache"}
    first = conf.token_settings()
    assert conf.token_settings() is first
    settings.DEBUG = not settings.DEBUG  # an unrelated setting keeps the cache
    assert conf.token_settings() is first


def test_invalid_settings_raise_on_first_use_not_on_change(settings):
    settings.API_TOKENS = {"HASHER": "md5"}
    with pytest.raises(ImproperlyConfigured, match="HASHER"):
        conf.token_settings()


def test_fixing_settings_recovers(settings):
    settings.API_TOKENS = {"HASHER": "md5"}
    with pytest.raises(ImproperlyConfigured):
        conf.token_settings()
    settings.API_TOKENS = {"HASHER": "argon2"}
    assert conf.token_settings().hasher == "argon2"


def test_cached_until_settings_change_clears_registered_functions(settings):
    calls = []

    @conf.cached_until_settings_change
    def counted():
        calls.append(1)
        return len(calls)

    assert counted() == 1
    assert counted() == 1
    settings.API_TOKENS = {"TOKEN_PREFIX": "clr"}
    assert counted() == 2
    settings.SECRET_KEY = "yet-another-secret-key-for-this-test-0123456789"
    assert counted() == 3


@pytest.mark.parametrize("value", [[], "TOKEN_PREFIX=tka", None, 1, [("TOKEN_PREFIX", "tka")]])
def test_api_tokens_not_a_dict_is_improperly_configured(value):
    assert "API_TOKENS must be a dict" in _problem(value)


def test_api_tokens_not_a_dict_raises_through_token_settings(settings):
    settings.API_TOKENS = ["tka"]
    with pytest.raises(ImproperlyConfigured, match="API_TOKENS"):
        conf.token_settings()


INVALID = [
    ("UNKNOWN_KEY", {"UNKNOWN_KEY": 1}),
    ("token_prefix", {"token_prefix": "tka"}),
    ("TOKEN_PREFIX", {"TOKEN_PREFIX": ""}),
    ("TOKEN_PREFIX", {"TOKEN_PREFIX": "a"}),
    ("TOKEN_PREFIX", {"TOKEN_PREFIX": "a" * 17}),
    ("TOKEN_PREFIX", {"TOKEN_PREFIX": "TKA"}),
    ("TOKEN_PREFIX", {"TOKEN_PREFIX": "1ab"}),
    ("TOKEN_PREFIX", {"TOKEN_PREFIX": "tk_a"}),
    ("TOKEN_PREFIX", {"TOKEN_PREFIX": "tka_"}),
    ("TOKEN_PREFIX", {"TOKEN_PREFIX": "tk-a"}),
    ("TOKEN_PREFIX", {"TOKEN_PREFIX": "tk\u0430"}),
    ("TOKEN_PREFIX", {"TOKEN_PREFIX": None}),
    ("TOKEN_PREFIX", {"TOKEN_PREFIX": 5}),
    ("SCOPES", {"SCOPES": ["notes:read"]}),
    ("SCOPES", {"SCOPES": "notes:read"}),
    ("SCOPES", {"SCOPES": None}),
    ("DEFAULT_LIFETIME", {"DEFAULT_LIFETIME": "0d"}),
    ("DEFAULT_LIFETIME", {"DEFAULT_LIFETIME": "30"}),
    ("DEFAULT_LIFETIME", {"DEFAULT_LIFETIME": "1.5d"}),
    ("DEFAULT_LIFETIME", {"DEFAULT_LIFETIME": "-1d"}),
    ("DEFAULT_LIFETIME", {"DEFAULT_LIFETIME": 30}),
    ("DEFAULT_LIFETIME", {"DEFAULT_LIFETIME": ""}),
    ("DEFAULT_LIFETIME", {"DEFAULT_LIFETIME": timedelta(0)}),
    ("DEFAULT_LIFETIME", {"DEFAULT_LIFETIME": timedelta(days=-1)}),
    ("DEFAULT_LIFETIME", {"DEFAULT_LIFETIME": "400d"}),
    ("DEFAULT_LIFETIME", {"DEFAULT_LIFETIME": "2d", "MAX_LIFETIME": timedelta(days=1)}),
    ("DEFAULT_LIFETIME", {"DEFAULT_LIFETIME": None}),
    ("DEFAULT_LIFETIME", {"DEFAULT_LIFETIME": None, "ALLOW_NON_EXPIRING": False}),
    ("MAX_LIFETIME", {"MAX_LIFETIME": "1y"}),
    ("MAX_LIFETIME", {"MAX_LIFETIME": timedelta(0)}),
    ("MAX_LIFETIME", {"MAX_LIFETIME": 0}),
    ("LAST_USED_INTERVAL", {"LAST_USED_INTERVAL": None}),
    ("LAST_USED_INTERVAL", {"LAST_USED_INTERVAL": "0s"}),
    ("LAST_USED_INTERVAL", {"LAST_USED_INTERVAL": timedelta(0)}),
    ("LAST_USED_INTERVAL", {"LAST_USED_INTERVAL": timedelta(seconds=-5)}),
    ("LAST_USED_INTERVAL", {"LAST_USED_INTERVAL": 300}),
    ("ALLOW_NON_EXPIRING", {"ALLOW_NON_EXPIRING": "yes"}),
    ("ALLOW_NON_EXPIRING", {"ALLOW_NON_EXPIRING": 1}),
    ("ALLOW_NON_EXPIRING", {"ALLOW_NON_EXPIRING": None}),
    ("MAX_ACTIVE_TOKENS_PER_USER", {"MAX_ACTIVE_TOKENS_PER_USER": 0}),
    ("MAX_ACTIVE_TOKENS_PER_USER", {"MAX_ACTIVE_TOKENS_PER_USER": -1}),
    ("MAX_ACTIVE_TOKENS_PER_USER", {"MAX_ACTIVE_TOKENS_PER_USER": True}),
    ("MAX_ACTIVE_TOKENS_PER_USER", {"MAX_ACTIVE_TOKENS_PER_USER": False}),
    ("MAX_ACTIVE_TOKENS_PER_USER", {"MAX_ACTIVE_TOKENS_PER_USER": "5"}),
    ("MAX_ACTIVE_TOKENS_PER_USER", {"MAX_ACTIVE_TOKENS_PER_USER": 2.5}),
    ("HASHER", {"HASHER": "md5"}),
    ("HASHER", {"HASHER": "HMAC-SHA256"}),
    ("HASHER", {"HASHER": "argon2id"}),
    ("HASHER", {"HASHER": None}),
    ("HASHER", {"HASHER": ["argon2"]}),
    ("HASH_KEY", {"HASH_KEY": "short"}),
    ("HASH_KEY", {"HASH_KEY": "a" * (conf.MIN_HASH_KEY_LENGTH - 1)}),
    ("HASH_KEY", {"HASH_KEY": ""}),
    ("HASH_KEY", {"HASH_KEY": b"a" * 40}),
    ("HASH_KEY", {"HASH_KEY": 12345}),
    ("OLD_HASH_KEYS", {"OLD_HASH_KEYS": KEY_B}),
    ("OLD_HASH_KEYS", {"OLD_HASH_KEYS": None}),
    ("OLD_HASH_KEYS", {"OLD_HASH_KEYS": {KEY_B}}),
    ("OLD_HASH_KEYS", {"OLD_HASH_KEYS": ["short"]}),
    ("OLD_HASH_KEYS", {"OLD_HASH_KEYS": [KEY_B, "short"]}),
    ("OLD_HASH_KEYS", {"OLD_HASH_KEYS": [b"b" * 40]}),
    ("OLD_HASH_KEYS", {"OLD_HASH_KEYS": [None]}),
    ("ARGON2_OPTIONS", {"ARGON2_OPTIONS": {"memory": 1024}}),
    ("ARGON2_OPTIONS", {"ARGON2_OPTIONS": {"type": 2}}),
    ("ARGON2_OPTIONS", {"ARGON2_OPTIONS": {"time_cost": 0}}),
    ("ARGON2_OPTIONS", {"ARGON2_OPTIONS": {"time_cost": -1}}),
    ("ARGON2_OPTIONS", {"ARGON2_OPTIONS": {"time_cost": "1"}}),
    ("ARGON2_OPTIONS", {"ARGON2_OPTIONS": {"time_cost": 1.0}}),
    ("ARGON2_OPTIONS", {"ARGON2_OPTIONS": {"time_cost": True}}),
    ("ARGON2_OPTIONS", {"ARGON2_OPTIONS": [("time_cost", 1)]}),
    ("ARGON2_OPTIONS", {"ARGON2_OPTIONS": None}),
    ("ACCEPT_X_API_KEY", {"ACCEPT_X_API_KEY": "true"}),
    ("ACCEPT_X_API_KEY", {"ACCEPT_X_API_KEY": 1}),
    ("ACCEPT_X_API_KEY", {"ACCEPT_X_API_KEY": None}),
    ("PREPARED_STATEMENTS", {"PREPARED_STATEMENTS": "False"}),
    ("PREPARED_STATEMENTS", {"PREPARED_STATEMENTS": 0}),
    ("REALM", {"REALM": 'my "api"'}),
    ("REALM", {"REALM": '"'}),
    ("REALM", {"REALM": ""}),
    ("REALM", {"REALM": "api\n"}),
    ("REALM", {"REALM": "api\r\nX-Injected: 1"}),
    ("REALM", {"REALM": None}),
    ("REALM", {"REALM": 5}),
]


@pytest.mark.parametrize(("name", "raw"), INVALID, ids=[f"{n}={r!r}" for n, r in INVALID])
def test_invalid_value_is_improperly_configured_naming_the_key(name, raw):
    message = _problem(raw)
    assert message.startswith("API_TOKENS: ")
    assert name in message
    assert ";" not in message  # exactly one problem, the one under test


@pytest.mark.parametrize(("name", "raw"), INVALID, ids=[f"{n}={r!r}" for n, r in INVALID])
def test_invalid_value_also_fails_through_token_settings(settings, name, raw):
    settings.API_TOKENS = raw
    with pytest.raises(ImproperlyConfigured, match=re.escape(name)):
        conf.token_settings()


def test_duration_problem_quotes_the_bad_value():
    assert "'thirty days'" in _problem({"MAX_LIFETIME": "thirty days"})


def test_default_over_max_names_both_keys():
    message = _problem({"DEFAULT_LIFETIME": "400d"})
    assert "DEFAULT_LIFETIME must not exceed MAX_LIFETIME" in message


def test_non_expiring_default_needs_allow_non_expiring():
    message = _problem({"DEFAULT_LIFETIME": None})
    assert "ALLOW_NON_EXPIRING" in message


def test_unknown_keys_are_all_named():
    message = _problem({"FOO": 1, "BAR": 2})
    assert "'BAR'" in message
    assert "'FOO'" in message


def test_several_problems_are_reported_at_once():
    message = _problem(
        {
            "BOGUS": 1,
            "TOKEN_PREFIX": "X",
            "SCOPES": [],
            "DEFAULT_LIFETIME": "0d",
            "MAX_ACTIVE_TOKENS_PER_USER": 0,
            "HASHER": "md5",
            "HASH_KEY": "short",
            "ARGON2_OPTIONS": {"bad": 1},
            "ACCEPT_X_API_KEY": "no",
            "REALM": '"',
        }
    )
    for name in [
        "BOGUS",
        "TOKEN_PREFIX",
        "SCOPES",
        "DEFAULT_LIFETIME",
        "MAX_ACTIVE_TOKENS_PER_USER",
        "HASHER",
        "HASH_KEY",
        "ARGON2_OPTIONS",
        "ACCEPT_X_API_KEY",
        "REALM",
    ]:
        assert name in message
    assert message.count(";") == 9


def test_prefix_with_trailing_newline_is_improperly_configured():
    assert "TOKEN_PREFIX" in _problem({"TOKEN_PREFIX": "tka\n"})


def test_unknown_keys_of_mixed_types_are_improperly_configured():
    message = _problem({1: "x", "FOO": "y"})
    assert "FOO" in message


@pytest.mark.parametrize("rate", ["0/m", "5/0m", "abc", "5/x", "5", 5, "", "-1/h"])
def test_bad_rates_are_refused_for_both_rate_settings(rate):
    assert "DEFAULT_TOKEN_RATE must be None or look like" in _problem({"DEFAULT_TOKEN_RATE": rate})
    assert "PASSWORD_EXCHANGE_RATE must look like" in _problem({"PASSWORD_EXCHANGE_RATE": rate})


@pytest.mark.parametrize(
    ("rate", "parsed"),
    [("1000/h", (1000, 3600)), ("5/15m", (5, 900)), ("10/s", (10, 1)), ("2/3d", (2, 259200))],
)
def test_rates_are_read_as_count_and_seconds(rate, parsed):
    assert parse_rate(rate) == parsed
    assert conf.load({"DEFAULT_TOKEN_RATE": rate}).default_token_rate == rate


def test_default_token_rate_is_off_by_default():
    assert conf.load({}).default_token_rate is None


def test_token_lookup_is_prepared_or_orm():
    assert conf.load({}).token_lookup == "prepared"
    assert conf.load({"TOKEN_LOOKUP": "orm"}).token_lookup == "orm"
    with pytest.raises(ImproperlyConfigured, match="TOKEN_LOOKUP must be one of prepared, orm"):
        conf.load({"TOKEN_LOOKUP": "raw"})


def test_defaults_name_every_setting_once():
    # One declaration per key: DEFAULTS and the unknown-key check follow from it.
    assert list(conf.DEFAULTS) == list(conf.SETTINGS)
    assert _problem({"NOT_A_SETTING": 1}) == "API_TOKENS: unknown key 'NOT_A_SETTING'."


def test_a_problem_two_settings_share_is_listed_once():
    message = _problem({"HASH_KEY": "short", "OLD_HASH_KEYS": ["short"]})
    assert message.count("HASH_KEY and OLD_HASH_KEYS entries") == 1
    assert ";" not in message
