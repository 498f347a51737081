"""runtime.validation: the one check of display text, and the one reading of an
idempotency key, every service uses."""

from __future__ import annotations

import pytest

from runtime import validation
from runtime.errors import InvalidArgument


@pytest.mark.parametrize(
    "value",
    [
        # The probe's right-to-left override: shows as "invoice_exe.pdf".
        "invoice_\u202efdp.exe",
        "\u2067isolate\u2069",
        "mark\u200fed",
        "arabic letter mark\u061c",
        # Zero-width characters: "admin" and "ad\u200bmin" look the same.
        "ad\u200bmin",
        "join\u200dme",
        "non\u200cjoiner",
        "word\u2060joiner",
        "\ufeffbom",
        "soft\u00adhyphen",
        "\u3164",  # a Hangul filler: a name that looks blank
    ],
)
def test_bidirectional_controls_and_zero_width_characters_are_refused(value: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        validation.text(value, "display_name", max_length=64)
    assert refused.value.field == "display_name"
    assert "U+" in refused.value.message


@pytest.mark.parametrize(
    "value", ["Zoë", "Ångström", "مرحبا", "שלום", "日本語の名前", "emoji 🎨", "tab\tinside"]
)
def test_ordinary_text_of_every_script_is_kept(value: str) -> None:
    single_line = "\t" not in value
    assert validation.text(value, "name", max_length=64, single_line=single_line) == value


def test_the_signature_other_services_call_is_unchanged() -> None:
    assert validation.text("  trimmed  ", "name", max_length=10) == "trimmed"
    assert validation.text("", "name", max_length=10, required=False) == ""
    with pytest.raises(InvalidArgument):
        validation.text("x" * 11, "name", max_length=10)
    with pytest.raises(InvalidArgument):
        validation.text("a\x07b", "name", max_length=10)


def test_an_idempotency_key_is_taken_whole_and_exactly_as_sent() -> None:
    """Never cut short, trimmed or normalized: keys that differ anywhere are two keys
    (billing cut them at 200 characters, presets trimmed and normalized them)."""
    prefix = "k" * 200
    one, other = prefix + "-one", prefix + "-two"
    assert validation.idempotency_key(one, "idempotency_key") == one
    assert validation.idempotency_key(other, "idempotency_key") == other
    for key in (" spaced ", "~ !" + "x" * 252, "a"):
        assert validation.idempotency_key(key, "idempotency_key") == key
        assert validation.idempotency_key_header([("idempotency-key", key)]) == key


@pytest.mark.parametrize(
    "value", ["k" * 256, "tab\there", "bell\x07", "caf\u00e9", "cafe\u0301", "del\x7f", b"raw"]
)
def test_anything_else_is_refused_naming_the_field_or_the_header(value: str | bytes) -> None:
    with pytest.raises(InvalidArgument) as field:
        validation.idempotency_key(value, "header.idempotency_key")
    assert field.value.field == "header.idempotency_key"
    with pytest.raises(InvalidArgument) as header:
        validation.idempotency_key_header([("authorization", "x"), ("idempotency-key", value)])
    assert header.value.field == "Idempotency-Key"
    assert header.value.description.startswith("must ")


def test_an_absent_key_is_none_and_a_required_one_says_so() -> None:
    assert validation.idempotency_key("", "idempotency_key") is None
    assert validation.idempotency_key_header([("other", "x")]) is None
    assert validation.idempotency_key_header(None) is None
    with pytest.raises(InvalidArgument, match=r"^idempotency_key: is required$"):
        validation.required_idempotency_key("", "idempotency_key")
    assert validation.required_idempotency_key("edit:1", "idempotency_key") == "edit:1"
    # A header that is sent must hold a key: empty is refused, not taken for absent.
    with pytest.raises(InvalidArgument, match=r"^Idempotency-Key: must be 1-255 printable"):
        validation.idempotency_key_header([("idempotency-key", "")])
    with pytest.raises(InvalidArgument, match=r"^Idempotency-Key: must be sent once$"):
        validation.idempotency_key_header([("idempotency-key", "a"), ("idempotency-key", "b")])
