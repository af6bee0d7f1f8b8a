"""Reading a playbook or test file from disk, bounded (the CLI's side; the server parses what
it is sent with `noetl.dsl.source.load_yaml`, under the same size limit). Kept apart from
`noetl.dsl` so that the command line reads a file without loading the language."""

from __future__ import annotations

import errno
import os

MAX_DOCUMENT_BYTES = 1024 * 1024  # a playbook is code, not data


def read_document(path: str | os.PathLike[str]) -> str:
    """A playbook or test file's text: at most `MAX_DOCUMENT_BYTES` are read (`/dev/zero` or a
    huge file is refused, not read into memory), and it must be UTF-8. Raises `OSError`, whose
    `strerror` says what is wrong (`is not UTF-8 text (byte 0xd0 at offset 24)`)."""
    with open(path, "rb") as handle:
        raw = handle.read(MAX_DOCUMENT_BYTES + 1)
    if len(raw) > MAX_DOCUMENT_BYTES:
        limit = f"larger than {MAX_DOCUMENT_BYTES} bytes, the limit of a playbook"
        raise OSError(errno.EFBIG, limit, str(path))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        where = f"byte 0x{raw[exc.start]:02x} at offset {exc.start}"
        raise OSError(errno.EILSEQ, f"not UTF-8 text ({where})", str(path)) from None
