"""File names are shown back, never trusted: sanitizing and Content-Disposition."""

from __future__ import annotations

import pytest

from services.assets.filenames import content_disposition, sanitize_filename

JPEG = ("jpg", "jpeg")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("holiday.jpg", "holiday.jpg"),
        ("Holiday.JPEG", "Holiday.jpeg"),
        ("../../etc/passwd", "passwd.jpg"),
        ("C:\\Users\\ada\\Pictures\\beach.jpg", "beach.jpg"),
        ("evil\x00name.jpg", "evilname.jpg"),
        ("bell\x07 and\ttab.jpg", "bell and tab.jpg"),
        ("invoice\u202egpj.exe", "invoicegpj.exe.jpg"),  # the bidi override is gone
        ("zero\u200bwidth.jpg", "zerowidth.jpg"),
        # The display-text rule's invisible characters (runtime.validation), letters to
        # Unicode among them: a Hangul filler, an Arabic letter mark, an isolate.
        ("look\u3164alike\u061c\u2066.jpg", "lookalike.jpg"),
        ("soft\u00adhyphen\u2060joiner.jpg", "softhyphenjoiner.jpg"),
        ("Cafe\u0301.jpg", "Caf\u00e9.jpg"),  # NFC
        (".htaccess", "htaccess.jpg"),
        ("trailing dots...", "trailing dots.jpg"),
        ("page.html", "page.html.jpg"),
        ("   ", "image.jpg"),
        ("", "image.jpg"),
        (".jpg", "image.jpg"),
        ("///", "image.jpg"),
    ],
)
def test_names_are_sanitized(raw: str, expected: str) -> None:
    assert sanitize_filename(raw, JPEG) == expected


def test_long_names_are_cut_to_255_keeping_the_extension() -> None:
    name = sanitize_filename("x" * 400 + ".jpg", JPEG)
    assert len(name) == 255
    assert name.endswith("x.jpg")
    assert len(sanitize_filename("y" * 300, ("png",))) == 255


def test_sanitizing_is_idempotent() -> None:
    for raw in ("../a\x00b.JPG", "Cafe\u0301", "page.html"):
        once = sanitize_filename(raw, JPEG)
        assert sanitize_filename(once, JPEG) == once


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("beach.jpg", "inline; filename=\"beach.jpg\"; filename*=UTF-8''beach.jpg"),
        (
            'say "cheese" 100%.png',
            'inline; filename="say _cheese_ 100_.png"; '
            "filename*=UTF-8''say%20%22cheese%22%20100%25.png",
        ),
        (
            "back\\slash;semi.png",
            "inline; filename=\"back_slash;semi.png\"; filename*=UTF-8''back%5Cslash%3Bsemi.png",
        ),
        (
            "\u5199\u771f.webp",
            "inline; filename=\"image.webp\"; filename*=UTF-8''%E5%86%99%E7%9C%9F.webp",
        ),
        (
            "na\u00efve caf\u00e9.jpg",
            "inline; filename=\"naive cafe.jpg\"; filename*=UTF-8''na%C3%AFve%20caf%C3%A9.jpg",
        ),
    ],
)
def test_content_disposition_is_safe_and_keeps_the_real_name(name: str, expected: str) -> None:
    value = content_disposition(name)
    assert value == expected
    assert value.isascii()
    assert "\r" not in value
    assert "\n" not in value


@pytest.mark.parametrize(
    ("raw", "fallback"),
    [
        # Fullwidth dots and solidus survive sanitizing (they are only shown), but their
        # compatibility forms are ASCII "." and "/": the fallback must not bring back a
        # path or a hidden name that sanitizing took out.
        ("\uff0e\uff0e\uff0f\uff0e\uff0e\uff0fpasswd.jpg", 'filename="_.._passwd.jpg"'),
        ("\uff0ehtaccess.jpg", 'filename="htaccess.jpg"'),
        ("\u2025\u2215x.jpg", 'filename="x.jpg"'),
    ],
)
def test_the_ascii_fallback_has_no_path_and_no_leading_dot(raw: str, fallback: str) -> None:
    value = content_disposition(sanitize_filename(raw, JPEG))
    ascii_name = value.split('filename="', 1)[1].split('"', 1)[0]
    assert "/" not in ascii_name
    assert not ascii_name.startswith(".")
    assert fallback in value
