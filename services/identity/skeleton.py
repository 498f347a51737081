"""Usernames that look alike are one username: the confusable skeleton of UTS #39.

`skeleton(x)` is NFD(map(NFD(x))), where `map` replaces every character Unicode's
confusables.txt lists as a source by its prototype (U+0430 CYRILLIC SMALL LETTER A → "a",
"1" → "l", "m" → "rn"). Two strings are confusable exactly when their skeletons are equal.

The data comes from the confusable-homoglyphs package, which ships confusables.txt as a
JSON graph without its direction (every source lists its prototype and every prototype
lists its sources). The direction is recovered from the file's structure: a prototype is
never a source and each source has exactly one prototype, so every connected group is a
star around its prototype. For the few groups of just two characters the centre cannot be
told; both then map to the smaller one, which keeps the equivalence, and equality is all
uniqueness needs (the stored value is a comparison key, never shown).
"""

from __future__ import annotations

import functools
import json
import unicodedata
from importlib import resources

# The data file marks right-to-left characters with LEFT-TO-RIGHT MARKs for display.
_DISPLAY_MARK = "\u200e"


@functools.cache
def _prototypes() -> dict[str, str]:
    raw = json.loads(
        resources.files("confusable_homoglyphs").joinpath("confusables.json").read_text("utf-8")
    )
    neighbours = {
        key.replace(_DISPLAY_MARK, ""): [entry["c"].replace(_DISPLAY_MARK, "") for entry in value]
        for key, value in raw.items()
    }
    mapping: dict[str, str] = {}
    for character, linked in neighbours.items():
        if len(character) != 1 or len(linked) != 1:
            continue  # sequences are never sources; a prototype of several maps to itself
        (other,) = linked
        if other == character:
            continue
        if len(other) != 1 or len(neighbours.get(other, ())) > 1:
            mapping[character] = other  # `other` is the centre of the star
        else:
            mapping[character] = min(character, other)  # a pair: either one will do
    return {source: target for source, target in mapping.items() if source != target}


def skeleton(value: str) -> str:
    prototypes = _prototypes()
    mapped = "".join(prototypes.get(c, c) for c in unicodedata.normalize("NFD", value))
    return unicodedata.normalize("NFD", mapped)
