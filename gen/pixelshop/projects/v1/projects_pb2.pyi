import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EditAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EDIT_ACTION_UNSPECIFIED: _ClassVar[EditAction]
    EDIT_ACTION_RETOUCH: _ClassVar[EditAction]
    EDIT_ACTION_FILTER: _ClassVar[EditAction]
    EDIT_ACTION_ADJUST: _ClassVar[EditAction]
    EDIT_ACTION_CROP: _ClassVar[EditAction]

class EditStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EDIT_STATUS_UNSPECIFIED: _ClassVar[EditStatus]
    EDIT_STATUS_PENDING: _ClassVar[EditStatus]
    EDIT_STATUS_SUCCEEDED: _ClassVar[EditStatus]
    EDIT_STATUS_FAILED: _ClassVar[EditStatus]
EDIT_ACTION_UNSPECIFIED: EditAction
EDIT_ACTION_RETOUCH: EditAction
EDIT_ACTION_FILTER: EditAction
EDIT_ACTION_ADJUST: EditAction
EDIT_ACTION_CROP: EditAction
EDIT_STATUS_UNSPECIFIED: EditStatus
EDIT_STATUS_PENDING: EditStatus
EDIT_STATUS_SUCCEEDED: EditStatus
EDIT_STATUS_FAILED: EditStatus

class Project(_message.Message):
    __slots__ = ("id", "name", "original_asset_id", "head_edit_id", "current_asset_id", "edit_count", "version", "create_time", "update_time", "head_edit", "can_undo", "can_redo", "width", "height", "thumbnail_uri")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ORIGINAL_ASSET_ID_FIELD_NUMBER: _ClassVar[int]
    HEAD_EDIT_ID_FIELD_NUMBER: _ClassVar[int]
    CURRENT_ASSET_ID_FIELD_NUMBER: _ClassVar[int]
    EDIT_COUNT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    HEAD_EDIT_FIELD_NUMBER: _ClassVar[int]
    CAN_UNDO_FIELD_NUMBER: _ClassVar[int]
    CAN_REDO_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    THUMBNAIL_URI_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    original_asset_id: str
    head_edit_id: str
    current_asset_id: str
    edit_count: int
    version: int
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    head_edit: Edit
    can_undo: bool
    can_redo: bool
    width: int
    height: int
    thumbnail_uri: str
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., original_asset_id: _Optional[str] = ..., head_edit_id: _Optional[str] = ..., current_asset_id: _Optional[str] = ..., edit_count: _Optional[int] = ..., version: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., head_edit: _Optional[_Union[Edit, _Mapping]] = ..., can_undo: _Optional[bool] = ..., can_redo: _Optional[bool] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., thumbnail_uri: _Optional[str] = ...) -> None: ...

class Hotspot(_message.Message):
    __slots__ = ("x", "y")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    x: int
    y: int
    def __init__(self, x: _Optional[int] = ..., y: _Optional[int] = ...) -> None: ...

class RetouchParams(_message.Message):
    __slots__ = ("prompt", "hotspots")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    HOTSPOTS_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    hotspots: _containers.RepeatedCompositeFieldContainer[Hotspot]
    def __init__(self, prompt: _Optional[str] = ..., hotspots: _Optional[_Iterable[_Union[Hotspot, _Mapping]]] = ...) -> None: ...

class FilterParams(_message.Message):
    __slots__ = ("prompt",)
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    def __init__(self, prompt: _Optional[str] = ...) -> None: ...

class AdjustParams(_message.Message):
    __slots__ = ("prompt",)
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    def __init__(self, prompt: _Optional[str] = ...) -> None: ...

class CropParams(_message.Message):
    __slots__ = ("x", "y", "width", "height", "aspect_ratio")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    ASPECT_RATIO_FIELD_NUMBER: _ClassVar[int]
    x: int
    y: int
    width: int
    height: int
    aspect_ratio: str
    def __init__(self, x: _Optional[int] = ..., y: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., aspect_ratio: _Optional[str] = ...) -> None: ...

class Edit(_message.Message):
    __slots__ = ("id", "project_id", "seq", "parent_id", "action", "status", "result_asset_id", "source_asset_id", "error", "retouch", "filter", "adjust", "crop", "preset_id", "preset_prompt", "engine", "model", "request_id", "duration_ms", "reapplied_from_id", "on_head_path", "create_time", "finish_reason", "input_tokens", "output_tokens", "reapplied_from_project_id", "preset_version", "result_width", "result_height", "finish_time")
    ID_FIELD_NUMBER: _ClassVar[int]
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    PARENT_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RESULT_ASSET_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_ASSET_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RETOUCH_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    ADJUST_FIELD_NUMBER: _ClassVar[int]
    CROP_FIELD_NUMBER: _ClassVar[int]
    PRESET_ID_FIELD_NUMBER: _ClassVar[int]
    PRESET_PROMPT_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    REAPPLIED_FROM_ID_FIELD_NUMBER: _ClassVar[int]
    ON_HEAD_PATH_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    REAPPLIED_FROM_PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    PRESET_VERSION_FIELD_NUMBER: _ClassVar[int]
    RESULT_WIDTH_FIELD_NUMBER: _ClassVar[int]
    RESULT_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    FINISH_TIME_FIELD_NUMBER: _ClassVar[int]
    id: str
    project_id: str
    seq: int
    parent_id: str
    action: EditAction
    status: EditStatus
    result_asset_id: str
    source_asset_id: str
    error: str
    retouch: RetouchParams
    filter: FilterParams
    adjust: AdjustParams
    crop: CropParams
    preset_id: str
    preset_prompt: str
    engine: str
    model: str
    request_id: str
    duration_ms: int
    reapplied_from_id: str
    on_head_path: bool
    create_time: _timestamp_pb2.Timestamp
    finish_reason: str
    input_tokens: int
    output_tokens: int
    reapplied_from_project_id: str
    preset_version: int
    result_width: int
    result_height: int
    finish_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., project_id: _Optional[str] = ..., seq: _Optional[int] = ..., parent_id: _Optional[str] = ..., action: _Optional[_Union[EditAction, str]] = ..., status: _Optional[_Union[EditStatus, str]] = ..., result_asset_id: _Optional[str] = ..., source_asset_id: _Optional[str] = ..., error: _Optional[str] = ..., retouch: _Optional[_Union[RetouchParams, _Mapping]] = ..., filter: _Optional[_Union[FilterParams, _Mapping]] = ..., adjust: _Optional[_Union[AdjustParams, _Mapping]] = ..., crop: _Optional[_Union[CropParams, _Mapping]] = ..., preset_id: _Optional[str] = ..., preset_prompt: _Optional[str] = ..., engine: _Optional[str] = ..., model: _Optional[str] = ..., request_id: _Optional[str] = ..., duration_ms: _Optional[int] = ..., reapplied_from_id: _Optional[str] = ..., on_head_path: _Optional[bool] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finish_reason: _Optional[str] = ..., input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., reapplied_from_project_id: _Optional[str] = ..., preset_version: _Optional[int] = ..., result_width: _Optional[int] = ..., result_height: _Optional[int] = ..., finish_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateProjectRequest(_message.Message):
    __slots__ = ("project",)
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    project: Project
    def __init__(self, project: _Optional[_Union[Project, _Mapping]] = ...) -> None: ...

class CreateProjectResponse(_message.Message):
    __slots__ = ("project",)
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    project: Project
    def __init__(self, project: _Optional[_Union[Project, _Mapping]] = ...) -> None: ...

class ListProjectsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListProjectsResponse(_message.Message):
    __slots__ = ("projects", "next_page_token")
    PROJECTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    projects: _containers.RepeatedCompositeFieldContainer[Project]
    next_page_token: str
    def __init__(self, projects: _Optional[_Iterable[_Union[Project, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetProjectRequest(_message.Message):
    __slots__ = ("project_id",)
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    project_id: str
    def __init__(self, project_id: _Optional[str] = ...) -> None: ...

class GetProjectResponse(_message.Message):
    __slots__ = ("project",)
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    project: Project
    def __init__(self, project: _Optional[_Union[Project, _Mapping]] = ...) -> None: ...

class UpdateProjectRequest(_message.Message):
    __slots__ = ("project_id", "name", "version")
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    project_id: str
    name: str
    version: int
    def __init__(self, project_id: _Optional[str] = ..., name: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class UpdateProjectResponse(_message.Message):
    __slots__ = ("project",)
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    project: Project
    def __init__(self, project: _Optional[_Union[Project, _Mapping]] = ...) -> None: ...

class DeleteProjectRequest(_message.Message):
    __slots__ = ("project_id",)
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    project_id: str
    def __init__(self, project_id: _Optional[str] = ...) -> None: ...

class DeleteProjectResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ApplyEditRequest(_message.Message):
    __slots__ = ("project_id", "request_id", "retouch", "filter", "adjust", "crop", "preset_id")
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RETOUCH_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    ADJUST_FIELD_NUMBER: _ClassVar[int]
    CROP_FIELD_NUMBER: _ClassVar[int]
    PRESET_ID_FIELD_NUMBER: _ClassVar[int]
    project_id: str
    request_id: str
    retouch: RetouchParams
    filter: FilterParams
    adjust: AdjustParams
    crop: CropParams
    preset_id: str
    def __init__(self, project_id: _Optional[str] = ..., request_id: _Optional[str] = ..., retouch: _Optional[_Union[RetouchParams, _Mapping]] = ..., filter: _Optional[_Union[FilterParams, _Mapping]] = ..., adjust: _Optional[_Union[AdjustParams, _Mapping]] = ..., crop: _Optional[_Union[CropParams, _Mapping]] = ..., preset_id: _Optional[str] = ...) -> None: ...

class ApplyEditResponse(_message.Message):
    __slots__ = ("edit", "project")
    EDIT_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    edit: Edit
    project: Project
    def __init__(self, edit: _Optional[_Union[Edit, _Mapping]] = ..., project: _Optional[_Union[Project, _Mapping]] = ...) -> None: ...

class ListEditsRequest(_message.Message):
    __slots__ = ("project_id", "page_size", "page_token")
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    project_id: str
    page_size: int
    page_token: str
    def __init__(self, project_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListEditsResponse(_message.Message):
    __slots__ = ("edits", "next_page_token")
    EDITS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    edits: _containers.RepeatedCompositeFieldContainer[Edit]
    next_page_token: str
    def __init__(self, edits: _Optional[_Iterable[_Union[Edit, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetEditRequest(_message.Message):
    __slots__ = ("project_id", "edit_id")
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    EDIT_ID_FIELD_NUMBER: _ClassVar[int]
    project_id: str
    edit_id: str
    def __init__(self, project_id: _Optional[str] = ..., edit_id: _Optional[str] = ...) -> None: ...

class GetEditResponse(_message.Message):
    __slots__ = ("edit",)
    EDIT_FIELD_NUMBER: _ClassVar[int]
    edit: Edit
    def __init__(self, edit: _Optional[_Union[Edit, _Mapping]] = ...) -> None: ...

class UndoRequest(_message.Message):
    __slots__ = ("project_id",)
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    project_id: str
    def __init__(self, project_id: _Optional[str] = ...) -> None: ...

class UndoResponse(_message.Message):
    __slots__ = ("project",)
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    project: Project
    def __init__(self, project: _Optional[_Union[Project, _Mapping]] = ...) -> None: ...

class RedoRequest(_message.Message):
    __slots__ = ("project_id",)
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    project_id: str
    def __init__(self, project_id: _Optional[str] = ...) -> None: ...

class RedoResponse(_message.Message):
    __slots__ = ("project",)
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    project: Project
    def __init__(self, project: _Optional[_Union[Project, _Mapping]] = ...) -> None: ...

class JumpRequest(_message.Message):
    __slots__ = ("project_id", "edit_id")
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    EDIT_ID_FIELD_NUMBER: _ClassVar[int]
    project_id: str
    edit_id: str
    def __init__(self, project_id: _Optional[str] = ..., edit_id: _Optional[str] = ...) -> None: ...

class JumpResponse(_message.Message):
    __slots__ = ("project",)
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    project: Project
    def __init__(self, project: _Optional[_Union[Project, _Mapping]] = ...) -> None: ...

class ResetRequest(_message.Message):
    __slots__ = ("project_id",)
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    project_id: str
    def __init__(self, project_id: _Optional[str] = ...) -> None: ...

class ResetResponse(_message.Message):
    __slots__ = ("project",)
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    project: Project
    def __init__(self, project: _Optional[_Union[Project, _Mapping]] = ...) -> None: ...

class ReapplyRequest(_message.Message):
    __slots__ = ("project_id", "request_id", "source_project_id", "edit_ids", "preset_id")
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    EDIT_IDS_FIELD_NUMBER: _ClassVar[int]
    PRESET_ID_FIELD_NUMBER: _ClassVar[int]
    project_id: str
    request_id: str
    source_project_id: str
    edit_ids: _containers.RepeatedScalarFieldContainer[str]
    preset_id: str
    def __init__(self, project_id: _Optional[str] = ..., request_id: _Optional[str] = ..., source_project_id: _Optional[str] = ..., edit_ids: _Optional[_Iterable[str]] = ..., preset_id: _Optional[str] = ...) -> None: ...

class ReapplyResponse(_message.Message):
    __slots__ = ("edits", "project", "completed", "failed_step", "error")
    EDITS_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_FIELD_NUMBER: _ClassVar[int]
    FAILED_STEP_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    edits: _containers.RepeatedCompositeFieldContainer[Edit]
    project: Project
    completed: bool
    failed_step: int
    error: str
    def __init__(self, edits: _Optional[_Iterable[_Union[Edit, _Mapping]]] = ..., project: _Optional[_Union[Project, _Mapping]] = ..., completed: _Optional[bool] = ..., failed_step: _Optional[int] = ..., error: _Optional[str] = ...) -> None: ...

class PurgeUserRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class PurgeUserResponse(_message.Message):
    __slots__ = ("deleted_count",)
    DELETED_COUNT_FIELD_NUMBER: _ClassVar[int]
    deleted_count: int
    def __init__(self, deleted_count: _Optional[int] = ...) -> None: ...
