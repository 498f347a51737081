"""runtime.validation.text: the one check of display text every service uses."""

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
