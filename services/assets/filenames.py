"""Original file names: kept for display and downloads, never trusted.

A name arrives from a browser or another service and is only ever shown back (it never
becomes a storage key). It still has to be harmless wherever it is shown: in JSON, in a
`Content-Disposition` header, in a "Save as" dialog.
"""

from __future__ import annotations

import re
import unicodedata
import urllib.parse

from runtime.validation import BIDI_CONTROLS, ZERO_WIDTH

NAME_MAX = 255

# Control, format, surrogate, private use and unassigned code points, and the display-text
# rule's bidirectional controls and zero-width characters (runtime.validation; some, such
# as the Hangul fillers, are letters to Unicode): invisible, or able to make "gpj.exe"
# look like "exe.jpg". A file name is the client's opinion, only ever shown back, so
# these are stripped rather than refused.
_DROPPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})
_INVISIBLE = BIDI_CONTROLS | ZERO_WIDTH
_WHITESPACE = re.compile(r"\s+")
# RFC 5987 attr-char, minus the characters percent-encoding already covers.
_ATTR_CHARS = "!#$&+-.^_`|~"


def sanitize_filename(raw: str, extensions: tuple[str, ...]) -> str:
    """A display name for content whose real format uses `extensions` (first = preferred).

    Basename only, no control characters, NFC, at most 255 characters, and an extension
    that matches the content (appended when the name claims another one, so "page.html"
    holding a PNG becomes "page.html.png"); "image.<ext>" when nothing usable is left.
    """
    name = raw.replace("\\", "/").rsplit("/", 1)[-1]
    name = _WHITESPACE.sub(" ", unicodedata.normalize("NFC", name))  # tabs, newlines too
    name = "".join(
        c
        for c in name
        if c not in _INVISIBLE and unicodedata.category(c) not in _DROPPED_CATEGORIES
    )
    name = name.strip(" ")
    preferred = extensions[0]
    stem, dot, extension = name.rpartition(".")
    if dot and extension.lower() in extensions:
        suffix = "." + extension.lower()
    else:
        stem, suffix = name, "." + preferred
    # No hidden ".name", no trailing dots (Windows drops them), room for the extension.
    stem = stem.strip(" .")[: NAME_MAX - len(suffix)].rstrip(" .")
    if not stem:
        return "image." + preferred
    return stem + suffix


def content_disposition(filename: str, disposition: str = "inline") -> str:
    """A header value every browser reads safely: an ASCII fallback plus RFC 6266 UTF-8."""
    ascii_name = unicodedata.normalize("NFKD", filename).encode("ascii", "ignore").decode("ascii")
    # Inside a quoted string only printable ASCII without quote, backslash and percent
    # (some browsers percent-decode filename=) is unambiguous. Compatibility forms can
    # turn shown-only characters into ASCII "/" and "." (fullwidth solidus and full stop):
    # no path separator, and no leading dot (a hidden file), as in sanitize_filename.
    ascii_name = "".join(
        c if " " <= c <= "~" and c not in '"\\%/' else "_" for c in ascii_name
    ).strip()
    ascii_stem, dot, _ = ascii_name.rpartition(".")
    if not any(c.isalnum() for c in (ascii_stem if dot else ascii_name)):
        extension = filename.rpartition(".")[2]
        ascii_name = (
            "image." + extension if extension.isascii() and extension.isalnum() else "image"
        )
    ascii_name = ascii_name.lstrip(". ")
    encoded = urllib.parse.quote(filename, safe=_ATTR_CHARS)
    return f"{disposition}; filename=\"{ascii_name}\"; filename*=UTF-8''{encoded}"
