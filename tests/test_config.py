"""Settings: defaults, parsing, and rejection of bad values with the variable named."""

from __future__ import annotations

import json

import pytest

from shared.core.config import Settings
from shared.core.errors import ConfigError
from tests.conftest import ROOT


def test_defaults_with_empty_environment() -> None:
    settings = Settings({})
    settings.validate()
    db = settings.database
    assert (db.host, db.port, db.pool_min, db.pool_max) == (None, 5432, 5, 20)
    assert not db.configured and not db.behind_pgbouncer
    pm = settings.polymarket
    assert pm.clob_host == "https://clob.polymarket.com"
    assert pm.gamma_host == "https://gamma-api.polymarket.com"
    assert pm.private_key is None and pm.retry_attempts == 3
    assert not settings.openai.configured
    assert settings.cache.markets_ttl_s == 300 and settings.cache.price_ttl_s == 5


def test_values_are_parsed() -> None:
    settings = Settings(
        {
            "POSTGRES_HOST": "db.example",
            "POSTGRES_PORT": "6432",
            "POSTGRES_POOL_MIN": "2",
            "POSTGRES_POOL_MAX": "8",
            "POSTGRES_SSLMODE": "REQUIRE",
            "POLYMARKET_HOST": "http://127.0.0.1:9000/",
            "AZURE_OPENAI_ENDPOINT": "https://x.openai.azure.com",
            "AZURE_OPENAI_API_KEY": "k",
            "POLYMARKET_SIMULATED": "yes",
        }
    )
    assert settings.database.behind_pgbouncer
    assert (settings.database.pool_min, settings.database.pool_max) == (2, 8)
    assert settings.database.sslmode == "require"
    assert settings.polymarket.clob_host == "http://127.0.0.1:9000"
    assert settings.polymarket.simulated
    assert settings.openai.configured


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("POSTGRES_PORT", "abc", "must be an integer"),
        ("POSTGRES_PORT", "70000", "between 1 and 65535"),
        ("POSTGRES_POOL_MAX", "0", "between 1 and 500"),
        ("POSTGRES_SSLMODE", "sometimes", "must be one of"),
        ("POLYMARKET_HOST", "clob.polymarket.com", "http(s) URL"),
        ("POLYMARKET_GAMMA_HOST", "ftp://x", "http(s) URL"),
        ("MARKETS_CACHE_TTL_S", "-5", "between"),
        ("POLYMARKET_SIMULATED", "maybe", "true or false"),
        ("UPSTREAM_READ_TIMEOUT_S", "fast", "must be a number"),
        ("LOG_LEVEL", "loud", "must be one of"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str, fragment: str) -> None:
    settings = Settings({name: value})
    with pytest.raises(ConfigError) as caught:
        settings.validate()
    assert caught.value.variable == name
    assert name in caught.value.message and fragment in caught.value.message


def test_pool_max_below_min_is_rejected() -> None:
    with pytest.raises(ConfigError, match="POSTGRES_POOL_MAX"):
        _ = Settings({"POSTGRES_POOL_MIN": "10", "POSTGRES_POOL_MAX": "5"}).database


@pytest.mark.parametrize("name", ["POSTGRES_PASSWORD", "AZURE_OPENAI_API_KEY", "POSTGRES_HOST"])
def test_unresolved_key_vault_reference_is_rejected(name: str) -> None:
    reference = "@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/pg-password/)"
    settings = Settings({name: reference})
    with pytest.raises(ConfigError) as caught:
        settings.validate()
    assert caught.value.variable == name
    assert "Key Vault" in caught.value.message
    assert "SecretUri" not in caught.value.message


def test_sections_fail_independently() -> None:
    settings = Settings({"AZURE_OPENAI_ENDPOINT": "not a url", "POSTGRES_HOST": "db"})
    assert settings.database.host == "db"  # a bad OpenAI setting does not break the database
    with pytest.raises(ConfigError, match="AZURE_OPENAI_ENDPOINT"):
        _ = settings.openai


def test_secrets_stay_out_of_reprs() -> None:
    settings = Settings(
        {"POSTGRES_PASSWORD": "hunter2-pg", "POLYMARKET_PRIVATE_KEY": "0xdeadbeefkey", "AZURE_OPENAI_API_KEY": "sk-xyz"}
    )
    text = repr(settings.database) + repr(settings.polymarket) + repr(settings.openai)
    for secret in ("hunter2-pg", "0xdeadbeefkey", "sk-xyz"):
        assert secret not in text


def test_cors_origins_and_the_simulated_flag() -> None:
    from shared.core.config import read_simulated

    assert Settings({}).app.cors_origins == ()  # deployed: no CORS unless configured
    for value in ("none", "NONE", " ", ""):
        assert Settings({"CORS_ALLOWED_ORIGINS": value}).app.cors_origins == ()
    parsed = Settings({"CORS_ALLOWED_ORIGINS": "HTTP://LocalHost:3000/, https://app.example.com ,*"}).app
    assert parsed.cors_origins == ("http://localhost:3000", "https://app.example.com", "*")
    for bad in ("localhost:3000", "app.example.com", "null", "none,http://a.example"):
        with pytest.raises(ConfigError) as error:
            _ = Settings({"CORS_ALLOWED_ORIGINS": bad}).app
        assert error.value.variable == "CORS_ALLOWED_ORIGINS"
    assert read_simulated({}) is False and read_simulated({"POLYMARKET_SIMULATED": "true"}) is True
    with pytest.raises(ConfigError):
        read_simulated({"POLYMARKET_SIMULATED": "perhaps"})


# --- no configuration error carries the value -------------------------------------------------

CANARY = "canary-setting-5d1f0b"
NUMBER_CANARY = "7777777"
# Each reader's kind of bad value, every one carrying a canary: text, out-of-range numbers, a
# URL that does not parse, one of the wrong scheme, a list with one bad origin.
BAD_VALUES = (CANARY, NUMBER_CANARY, f"-{NUMBER_CANARY}.5", f"http://[{CANARY}", f"ftp://{CANARY}.example",
              f"{CANARY},https://ok.example")
# Settings for which any text is a valid value.
FREE_TEXT = {"POSTGRES_HOST", "POSTGRES_DATABASE", "POSTGRES_USER", "POSTGRES_PASSWORD", "POLYMARKET_PRIVATE_KEY",
             "AZURE_OPENAI_API_KEY", "AZURE_OPENAI_API_VERSION", "GPT5_DEPLOYMENT_NAME"}
# Polymarket where nothing listens (no request leaves the machine), tried once.
QUICK_FAILURES = {"POLYMARKET_HOST": "http://127.0.0.1:9", "POLYMARKET_GAMMA_HOST": "http://127.0.0.1:9",
                  "UPSTREAM_RETRY_ATTEMPTS": "1", "UPSTREAM_RETRY_BACKOFF_S": "0"}


def leaks(text: str) -> bool:
    return CANARY in text or NUMBER_CANARY in text


class _RecordingEnviron(dict[str, str]):
    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def get(self, key: str, default: object = None) -> object:  # type: ignore[override]
        self.names.add(key)
        return super().get(key, default)


def setting_names() -> set[str]:
    """Every variable Settings reads (recorded, so a new setting is covered without listing it)."""
    environ = _RecordingEnviron()
    Settings(environ).validate()
    return environ.names


def rejected_values() -> dict[str, str]:
    """Each setting that some bad value fails, with the first such value; asserts every message."""
    rejected: dict[str, str] = {}
    for name in sorted(setting_names()):
        for value in BAD_VALUES:
            try:
                Settings({name: value}).validate()
            except ConfigError as error:
                rejected.setdefault(name, value)
                assert error.variable == name and name in error.message
                assert not leaks(error.message) and not leaks(str(error)), (name, value, error.message)
                # No chained exception (a ValueError quoting the value) reaches a traceback either.
                assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)
    return rejected


def test_no_configuration_error_message_carries_the_value() -> None:
    names = setting_names()
    assert len(names) >= 45 and {"POSTGRES_PORT", "CORS_ALLOWED_ORIGINS", "POLYMARKET_GAMMA_HOST", "LOG_LEVEL"} <= names
    assert set(rejected_values()) == names - FREE_TEXT  # every typed setting was shown a bad value


def test_a_bad_setting_answers_500_without_its_value_in_the_body_or_the_log(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import azure.functions as func

    from tests.conftest import handler, reset_app, reset_services

    requests = [
        ("list_markets", "markets", {}, {}),
        ("get_price", "price/123", {"token_id": "123"}, {}),
        ("get_market_sentiment", f"markets/0x{'ab' * 32}/sentiment", {"condition_id": f"0x{'ab' * 32}"}, {}),
        ("health_check", "health", {}, {"deep": "true"}),
    ]
    answered_500: set[str] = set()
    caplog.set_level("DEBUG")
    for name, value in rejected_values().items():
        for key, good in QUICK_FAILURES.items():
            monkeypatch.setenv(key, good)
        monkeypatch.setenv(name, value)
        reset_services()
        reset_app()
        for function, route, route_params, params in requests:
            req = func.HttpRequest("GET", f"http://localhost/api/{route}", body=b"", params=params,
                                   route_params=route_params)
            response = handler(function)(req)
            body = response.get_body().decode()
            assert not leaks(body), (name, function, body)
            if response.status_code == 500:
                error = json.loads(body)["error"]
                assert error["code"] == "config_error" and name in error["message"], (name, body)
                answered_500.add(name)
        monkeypatch.delenv(name)
    for key in QUICK_FAILURES:
        monkeypatch.delenv(key, raising=False)
    reset_services()
    reset_app()
    logged = caplog.text + "".join(record.exc_text or "" for record in caplog.records)
    assert not leaks(logged)
    # The app section falls back to its defaults in the HTTP layer (the local host refuses to start).
    assert answered_500 == set(rejected_values()) - {"CORS_ALLOWED_ORIGINS", "LOG_LEVEL", "REQUEST_DEADLINE_S"}


def test_the_refresh_deadline_fits_in_the_functions_timeout() -> None:
    """The timer's refresh must end (and roll back) before Azure stops the function."""
    from shared.core.config import MAX_REFRESH_DEADLINE_S

    hours, minutes, seconds = (int(part) for part in json.loads(
        (ROOT / "host.json").read_text())["functionTimeout"].split(":"))
    function_timeout_s = hours * 3600 + minutes * 60 + seconds
    assert Settings({}).cache.markets_refresh_deadline_s == 240
    assert function_timeout_s >= MAX_REFRESH_DEADLINE_S + 15
    with pytest.raises(ConfigError, match="MARKETS_REFRESH_DEADLINE_S"):
        _ = Settings({"MARKETS_REFRESH_DEADLINE_S": str(function_timeout_s)}).cache
