"""Errors specific to projects; each still is a runtime DomainError with a gRPC code."""

from __future__ import annotations

from runtime.errors import Aborted, FailedPrecondition, NotFound


class ProjectNotFound(NotFound):
    """Missing, deleted or someone else's: all look the same to a caller."""

    def __init__(self, project_id: object) -> None:
        super().__init__("project", str(project_id))


class EditNotFound(NotFound):
    def __init__(self, edit_id: object) -> None:
        super().__init__("edit", str(edit_id))


class EditRunning(Aborted):
    """One edit runs per project at a time."""

    def __init__(self) -> None:
        super().__init__(
            "another edit is running on this project; retry when it has finished",
            reason="EDIT_RUNNING",
        )


class StaleVersion(Aborted):
    def __init__(self) -> None:
        super().__init__(
            "the project changed since you read it; read it again and retry",
            reason="STALE_VERSION",
        )


class HeadMoved(Aborted):
    """The image an edit was checked against is no longer the project's current one."""

    def __init__(self) -> None:
        super().__init__(
            "the project's current image changed while the edit was prepared "
            "(an undo, redo or jump); apply it again to the image now shown",
            reason="HEAD_MOVED",
        )


class NothingToMove(FailedPrecondition):
    """Undo at the original, redo without a child."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message, reason=reason)
