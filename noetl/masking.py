"""Masking of secret values: what a worker resolved from credentials never leaves it in clear.

`Mask(secrets)` knows every string inside the resolved credential data and the forms a tool
is likely to echo: the value itself, its base64 (standard and URL-safe, padded or not), its
URL encoding (`%XX` and `+` for spaces), each line of a multi-line value (a PEM key is
printed line by line), its JSON-escaped forms (a server echoing it in a JSON string), and the
base64 of `user:password` of credential data that has both (an echoed basic-auth header).
Values shorter than `MIN_LENGTH` characters are ignored: masking every `on` or `5432` would
make output unreadable and hide nothing worth hiding.

Connection-address fields (`host`, `port`, `database`, ...) are not masked: `localhost` in
every message hides nothing.

`mask.text(s)` replaces every occurrence with `***`; `mask.value(v)` does so in every string
of a JSON value (keys too) and says whether anything was replaced, so a result can carry a
flag, as CI systems do when they mask a job's output. `install()` masks, in every log record
the process creates, every secret a worker resolved recently.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import quote, quote_plus

MIN_LENGTH = 4
MASK = "***"
RECENT = 1000  # secret values the log filter remembers


NOT_SECRET = frozenset({"host", "hostname", "port", "database", "dbname", "sslmode", "type"})
"""Connection-address fields of a credential: shown in every message, hiding nothing."""


def secret_strings(data: Any) -> Iterator[str]:
    """Every string inside `data` but the fields of `NOT_SECRET` (numbers are not secrets)."""
    if isinstance(data, str):
        yield data
    elif isinstance(data, dict):
        for key, value in data.items():
            if str(key).lower() not in NOT_SECRET:
                yield from secret_strings(value)
    elif isinstance(data, list | tuple):
        for value in data:
            yield from secret_strings(value)


def forms(secret: str) -> set[str]:
    """The secret and the encodings of it a tool or a server is likely to print: base64
    (standard and URL-safe, padded or not), URL encoding, each line of a multi-line value, and
    the secret inside a JSON string as a server echoes it (escaped, non-ASCII as `\\uXXXX` or
    not, `/` as `\\/` too, as PHP's json_encode writes it)."""
    found = {secret}
    raw = secret.encode()
    for encoded in (base64.b64encode(raw), base64.urlsafe_b64encode(raw)):
        text = encoded.decode()
        found.update({text, text.rstrip("=")})
    found.update({quote(secret, safe=""), quote_plus(secret), quote(secret)})
    for ascii_only in (True, False):
        escaped = json.dumps(secret, ensure_ascii=ascii_only)[1:-1]
        found.update({escaped, escaped.replace("/", "\\/")})
    if "\n" in secret or "\r" in secret:
        found.update(line.strip() for line in secret.splitlines())
    return {form for form in found if len(form) >= MIN_LENGTH}


def basic_auth(data: Any) -> Iterator[str]:
    """`user:password` of credential data that has both (a mapping with `username` or `user`
    and `password`): HTTP basic auth sends it base64-encoded, and servers echo the header."""
    if not isinstance(data, dict):
        return
    user = data.get("username", data.get("user"))
    password = data.get("password")
    if isinstance(user, str) and isinstance(password, str) and password:
        yield f"{user}:{password}"
    for value in data.values():
        yield from basic_auth(value)


def _pattern(values: Iterable[str]) -> re.Pattern[str] | None:
    """One regular expression for all `values`, longest match first, written as a trie
    (`a(?:bc|d)` rather than `abc|ad`): Python's `re` tries an alternation's branches one by
    one at every position of the text, so a flat list of hundreds of forms costs that many
    tries per character; the trie follows one branch per character."""
    trie: dict[str, Any] = {}
    for value in set(values):
        node = trie
        for char in value:
            node = node.setdefault(char, {})
        node[""] = {}  # a value ends here
    if not trie:
        return None
    return re.compile(_trie_regex(trie))


def _trie_regex(node: dict[str, Any]) -> str:
    """The regex of a trie node's continuations; a longer continuation is tried first (greedy
    `?` where a value also ends), so the longest form at a position is the one masked. A run
    of single characters is written as a literal (recursion only where branches split)."""
    run: list[str] = []
    while True:
        chars = [char for char in node if char]
        ends = "" in node
        if len(chars) == 1 and not ends:
            run.append(re.escape(chars[0]))
            node = node[chars[0]]
            continue
        break
    if not chars:
        return "".join(run)
    branches = [re.escape(char) + _trie_regex(node[char]) for char in chars]
    body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
    if ends:
        body = f"(?:{body})?" if len(branches) == 1 else body + "?"
    return "".join(run) + body


class Mask:
    """Replaces the forms of a set of secret values with `***`."""

    def __init__(self, secrets: Iterable[Any] = ()) -> None:
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self.add(*secrets)

    def add(self, *secrets: Any) -> None:
        """Add the strings inside each of `secrets` (credential data, usually a mapping)."""
        before = len(self._values)
        for secret in secrets:
            for text in [*secret_strings(secret), *basic_auth(secret)]:
                if len(text) >= MIN_LENGTH:
                    self._values |= forms(text)
        if len(self._values) != before:
            self._pattern = _pattern(self._values)

    @property
    def values(self) -> frozenset[str]:
        return frozenset(self._values)

    def __bool__(self) -> bool:
        return self._pattern is not None

    def text(self, text: str) -> tuple[str, bool]:
        """(`text` with every secret form replaced by `***`, whether anything was)."""
        if self._pattern is None or not text:
            return text, False
        masked, count = self._pattern.subn(MASK, text)
        return masked, count > 0

    def value(self, value: Any) -> tuple[Any, bool]:
        """(`value` with every string masked, keys included; whether anything was)."""
        if self._pattern is None:
            return value, False
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            hit = False
            out: dict[Any, Any] = {}
            for key, item in value.items():
                new_key, key_hit = self.text(key) if isinstance(key, str) else (key, False)
                new_item, item_hit = self.value(item)
                out[new_key] = new_item
                hit = hit or key_hit or item_hit
            return out, hit
        if isinstance(value, list | tuple):
            items = [self.value(item) for item in value]
            return [item for item, _ in items], any(hit for _, hit in items)
        return value, False


class _Recent:
    """The secret values resolved lately in this process (for log records)."""

    def __init__(self, size: int = RECENT) -> None:
        self._lock = threading.Lock()
        self._values: OrderedDict[str, None] = OrderedDict()
        self._mask = Mask()
        self._size = size

    def remember(self, mask: Mask) -> None:
        with self._lock:
            for value in mask.values:
                self._values[value] = None
                self._values.move_to_end(value)
            while len(self._values) > self._size:
                self._values.popitem(last=False)
            fresh = Mask()
            fresh._values = set(self._values)
            fresh._pattern = _pattern(fresh._values)
            self._mask = fresh

    @property
    def mask(self) -> Mask:
        return self._mask


RECENT_SECRETS = _Recent()


class MaskingFilter(logging.Filter):
    """Masks every recently resolved secret in a log record's message (and its traceback)."""

    def filter(self, record: logging.LogRecord) -> bool:
        mask = RECENT_SECRETS.mask
        if not mask:
            return True
        try:
            message, hit = mask.text(record.getMessage())
        except Exception:  # a malformed record: logging reports it when it is emitted
            return True
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text, tb_hit = mask.text(record.exc_text)
            hit = hit or tb_hit
        if hit:
            record.msg, record.args = message, None
        return True


def install() -> None:
    """Mask recently resolved secrets in every log record this process creates, whatever
    logger or handler it goes to (a log record factory). Idempotent."""
    make = logging.getLogRecordFactory()
    if getattr(make, "noetl_masking", False):
        return
    masking = MaskingFilter()

    def masked_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        masking.filter(record)
        return record

    masked_record.noetl_masking = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(masked_record)
