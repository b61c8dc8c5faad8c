"""Decoding of raw log lines to text."""

from __future__ import annotations


def decode_line(raw: bytes | str) -> str:
    """Decode ``raw`` as UTF-8 and strip its line ending.

    Bytes that are not valid UTF-8 become ``\\xHH`` escapes
    (``errors="backslashreplace"``), the same notation NGINX and Apache use
    for bytes they escape, so no line is lost to its encoding.
    """
    if isinstance(raw, str):
        return raw.rstrip("\r\n")
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        text = raw.decode("utf-8", "backslashreplace")
    return text.rstrip("\r\n")
