"""UTS #39 skeletons: what makes two usernames one."""

from __future__ import annotations

import pytest

from services.identity.skeleton import skeleton


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("paypal", "p\u0430yp\u0430l"),  # Cyrillic a (U+0430)
        ("scope", "\u0455\u0441\u043e\u0440\u0435"),  # every letter Cyrillic
        ("omega", "\u03bfmega"),  # Greek omicron
        ("bill", "bi11"),  # digit one for l
        ("modern", "modem"),  # "rn" for m
        ("alice", "\uff41lice"),  # fullwidth a
    ],
)
def test_look_alikes_share_a_skeleton(one: str, other: str) -> None:
    assert skeleton(one) == skeleton(other)


@pytest.mark.parametrize(("one", "other"), [("bob", "rob"), ("anna", "ana"), ("zoe", "zoë")])
def test_different_names_keep_different_skeletons(one: str, other: str) -> None:
    assert skeleton(one) != skeleton(other)


def test_a_skeleton_is_stable() -> None:
    for name in ("p\u0430yp\u0430l", "straße", "名前", "مرحبا"):
        assert skeleton(skeleton(name)) == skeleton(name)
