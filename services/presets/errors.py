"""Errors of the presets service that `runtime.errors` does not name precisely enough."""

from __future__ import annotations

import uuid

from runtime.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    NotFound,
    PermissionDenied,
)


class PresetNotFound(NotFound):
    """Missing, deleted, or another user's private preset: the answer is the same."""

    def __init__(self, preset_id: uuid.UUID) -> None:
        super().__init__("preset", str(preset_id))


class SystemPresetReadOnly(PermissionDenied):
    """System presets belong to nobody: everyone may use and fork them, nobody change them."""

    default_reason = "SYSTEM_PRESET_READ_ONLY"

    def __init__(self) -> None:
        super().__init__("system presets cannot be changed or deleted; fork one to make it yours")


class NotPresetOwner(PermissionDenied):
    default_reason = "NOT_PRESET_OWNER"

    def __init__(self) -> None:
        super().__init__("only the owner can change or delete a preset; fork it to make it yours")


class PublicPresetsNotInTier(PermissionDenied):
    default_reason = "PUBLIC_PRESETS_NOT_IN_TIER"

    def __init__(self) -> None:
        super().__init__(
            "publishing public presets is not part of your plan; upgrade, or share the "
            "preset as unlisted",
            metadata={"feature": "public_presets"},
        )


class PresetVersionChanged(Aborted):
    default_reason = "PRESET_VERSION_CHANGED"

    def __init__(self, expected: int, current: int) -> None:
        super().__init__(
            f"the preset changed meanwhile (version {current}, expected {expected}); "
            "read it again and retry",
            metadata={"expected_version": str(expected), "current_version": str(current)},
        )


class EditRecordedForAnotherPreset(FailedPrecondition):
    default_reason = "EDIT_RECORDED_FOR_ANOTHER_PRESET"

    def __init__(self, edit_id: uuid.UUID, preset_id: uuid.UUID) -> None:
        super().__init__(
            f"edit {edit_id} already counted a use of preset {preset_id}",
            metadata={"edit_id": str(edit_id), "preset_id": str(preset_id)},
        )


class IdempotencyKeyReused(AlreadyExists):
    default_reason = "IDEMPOTENCY_KEY_REUSED"

    def __init__(self) -> None:
        super().__init__(
            "this Idempotency-Key was already used to create a different preset; "
            "use a new key for a new preset"
        )


class KeyedPresetDeleted(FailedPrecondition):
    default_reason = "IDEMPOTENCY_KEY_PRESET_DELETED"

    def __init__(self, preset_id: uuid.UUID) -> None:
        super().__init__(
            "the preset created with this Idempotency-Key was deleted since",
            metadata={"preset_id": str(preset_id)},
        )
