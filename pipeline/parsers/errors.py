"""The parser error that separates "not this format" from "this format, bad value"."""

from __future__ import annotations


class FormatMismatch(ValueError):
    """The line does not have the structure of the format that parsed it.

    The driver then tries the other formats. A plain ``ValueError`` means
    the line has the format's structure but a field value is invalid, and
    its message is a better dead-letter reason than a mismatch.
    """
