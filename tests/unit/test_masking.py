"""Masking: every form of every secret value is replaced by *** wherever it appears."""

from __future__ import annotations

import base64
import json
import logging
import re
from urllib.parse import quote, quote_plus

from hypothesis import given
from hypothesis import strategies as st

from noetl.masking import RECENT_SECRETS, Mask, MaskingFilter, _pattern

SECRET = "p@ss w0rd/+="


def test_every_form_of_a_secret_is_masked() -> None:
    mask = Mask([{"user": "app", "password": SECRET, "port": 5432}])
    for shown in (
        SECRET,
        base64.b64encode(SECRET.encode()).decode(),
        base64.urlsafe_b64encode(SECRET.encode()).decode().rstrip("="),
        quote(SECRET, safe=""),
        quote_plus(SECRET),
    ):
        text, hit = mask.text(f"error: login failed with {shown}!")
        assert hit and text == "error: login failed with ***!", shown
    # short values (the user "app") are left alone, so is a port number
    assert mask.text("user app on 5432") == ("user app on 5432", False)


def test_forms_a_server_echoes_are_masked() -> None:
    """What a server sends back: the basic-auth header (base64 of `user:password`, not of
    either alone), the secret inside a JSON string (quotes and backslashes escaped), and `/`
    escaped as `\\/` (PHP's json_encode)."""
    basic = Mask([{"type": "basic", "username": "bobx", "password": "Pw-9f8e7d-long"}])
    echoed = '{"headers": {"Authorization": "Basic Ym9ieDpQdy05ZjhlN2QtbG9uZw=="}}'
    assert basic.text(echoed) == ('{"headers": {"Authorization": "Basic ***"}}', True)
    quoted = Mask([{"token": 'q"uo\\te/Secret'}])
    assert quoted.text(json.dumps({"auth": 'Bearer q"uo\\te/Secret'})) == (
        '{"auth": "Bearer ***"}',
        True,
    )
    slashed = Mask([{"token": "AbC/dEf+GhI9/xyz=="}])
    assert slashed.text('{"auth": "Bearer AbC\\/dEf+GhI9\\/xyz=="}') == (
        '{"auth": "Bearer ***"}',
        True,
    )
    accented = Mask([{"token": "clé-secrète"}])
    assert accented.text(json.dumps("x clé-secrète y")) == ('"x *** y"', True)


@given(st.lists(st.text(alphabet="ab/\\", min_size=4, max_size=9), min_size=1), st.text("ab/\\x"))
def test_the_longest_form_at_a_position_is_masked(secrets: list[str], text: str) -> None:
    """The trie the masker compiles matches as the plain longest-first alternation would."""
    flat = re.compile("|".join(re.escape(s) for s in sorted(set(secrets), key=len, reverse=True)))
    assert _pattern(secrets).sub("***", text) == flat.sub("***", text)  # type: ignore[union-attr]


def test_each_line_of_a_multi_line_secret_is_masked() -> None:
    key = "-----BEGIN KEY-----\nAAAAB3NzaC1yc2E\nQQQQxyzzy\n-----END KEY-----"
    mask = Mask([key])
    text, hit = mask.text("line 2 is AAAAB3NzaC1yc2E and line 3 QQQQxyzzy")
    assert hit and "AAAAB3NzaC1yc2E" not in text and "QQQQxyzzy" not in text


def test_values_are_masked_deep_with_a_flag() -> None:
    mask = Mask([{"token": "tok-123456"}])
    value, hit = mask.value({"out": ["Bearer tok-123456", 3], "tok-123456": None, "n": 1})
    assert hit and value == {"out": ["Bearer ***", 3], "***": None, "n": 1}
    assert mask.value({"clean": "nothing"}) == ({"clean": "nothing"}, False)


@given(
    st.text(min_size=4).filter(lambda s: s.strip() == s and "\n" not in s and "\r" not in s),
    st.text(),
    st.text(),
)
def test_no_secret_survives_masking(secret: str, before: str, after: str) -> None:
    text, hit = Mask([secret]).text(before + secret + after)
    assert hit and secret not in text.replace("***", "\x00")


def test_the_log_filter_masks_recent_secrets(caplog: object) -> None:
    mask = Mask(["log-secret-value"])
    RECENT_SECRETS.remember(mask)
    record = logging.LogRecord(
        "x", logging.INFO, __file__, 1, "failed: %s", ("log-secret-value",), None
    )
    assert MaskingFilter().filter(record)
    assert record.getMessage() == "failed: ***"
