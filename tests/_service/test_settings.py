"""The shared settings validators: the secret-token strength rules."""

from __future__ import annotations

import pytest

from natroute._service.settings import MIN_TOKEN_LEN, WeakTokenError, check_secret_token


def _check(value: str, *, allow_empty: bool = False) -> str:
    return check_secret_token(
        value, env="NATROUTE_X_TOKEN", flag="--x-token", allow_empty=allow_empty
    )


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("", "is empty"),
        (" " * 16, "is only white space"),
        ("\t\n  ", "is only white space"),
        ("short-token", f"shorter than {MIN_TOKEN_LEN}"),
        ("  short-token-15 ", f"shorter than {MIN_TOKEN_LEN}"),  # stripped first
        ("a" * 16, "distinct"),
        ("0" * 16, "distinct"),
        ("abababababababab", "distinct"),
        ("changemechangeme", "placeholder"),
        ("CHANGEME-CHANGEME", "placeholder"),
        ("changeme-0a9f3c7d1e", "placeholder"),
        ("your-token-here-please", "placeholder"),
        ("password-password", "placeholder"),
        ("secret_token_secret", "placeholder"),
        ("12345678901234567890", "placeholder"),
    ],
)
def test_weak_tokens_are_refused_naming_the_setting(value: str, problem: str) -> None:
    with pytest.raises(WeakTokenError) as info:
        _check(value)
    message = str(info.value)
    assert message.startswith("NATROUTE_X_TOKEN (--x-token) ")
    assert problem in message
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "value",
    ["test-operator-token-0123456789", "9f86d081884c7d659a2feaa0c55ad015", "a-b-c-d-e-f-g-h-i"],
)
def test_strong_tokens_pass_stripped(value: str) -> None:
    assert _check(f" {value}\n") == value


def test_empty_allowed_when_the_feature_is_optional() -> None:
    assert _check("", allow_empty=True) == ""
    assert _check("   ", allow_empty=True) == ""
    with pytest.raises(WeakTokenError, match="shorter"):
        _check("x", allow_empty=True)


def test_hint_is_appended() -> None:
    with pytest.raises(WeakTokenError, match=r"; or run with --dev$"):
        check_secret_token("", env="E", flag="--f", hint="or run with --dev")
