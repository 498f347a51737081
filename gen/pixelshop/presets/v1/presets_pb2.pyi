import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PresetCategory(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRESET_CATEGORY_UNSPECIFIED: _ClassVar[PresetCategory]
    PRESET_CATEGORY_FILTER: _ClassVar[PresetCategory]
    PRESET_CATEGORY_ADJUSTMENT: _ClassVar[PresetCategory]

class PresetVisibility(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRESET_VISIBILITY_UNSPECIFIED: _ClassVar[PresetVisibility]
    PRESET_VISIBILITY_PRIVATE: _ClassVar[PresetVisibility]
    PRESET_VISIBILITY_UNLISTED: _ClassVar[PresetVisibility]
    PRESET_VISIBILITY_PUBLIC: _ClassVar[PresetVisibility]
PRESET_CATEGORY_UNSPECIFIED: PresetCategory
PRESET_CATEGORY_FILTER: PresetCategory
PRESET_CATEGORY_ADJUSTMENT: PresetCategory
PRESET_VISIBILITY_UNSPECIFIED: PresetVisibility
PRESET_VISIBILITY_PRIVATE: PresetVisibility
PRESET_VISIBILITY_UNLISTED: PresetVisibility
PRESET_VISIBILITY_PUBLIC: PresetVisibility

class Preset(_message.Message):
    __slots__ = ("id", "owner_id", "name", "description", "prompt", "category", "visibility", "forked_from_id", "forked_from_name", "like_count", "use_count", "version", "system", "liked", "create_time", "update_time")
    ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    VISIBILITY_FIELD_NUMBER: _ClassVar[int]
    FORKED_FROM_ID_FIELD_NUMBER: _ClassVar[int]
    FORKED_FROM_NAME_FIELD_NUMBER: _ClassVar[int]
    LIKE_COUNT_FIELD_NUMBER: _ClassVar[int]
    USE_COUNT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_FIELD_NUMBER: _ClassVar[int]
    LIKED_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    id: str
    owner_id: str
    name: str
    description: str
    prompt: str
    category: PresetCategory
    visibility: PresetVisibility
    forked_from_id: str
    forked_from_name: str
    like_count: int
    use_count: int
    version: int
    system: bool
    liked: bool
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., owner_id: _Optional[str] = ..., name: _Optional[str] = ..., description: _Optional[str] = ..., prompt: _Optional[str] = ..., category: _Optional[_Union[PresetCategory, str]] = ..., visibility: _Optional[_Union[PresetVisibility, str]] = ..., forked_from_id: _Optional[str] = ..., forked_from_name: _Optional[str] = ..., like_count: _Optional[int] = ..., use_count: _Optional[int] = ..., version: _Optional[int] = ..., system: _Optional[bool] = ..., liked: _Optional[bool] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListPresetsRequest(_message.Message):
    __slots__ = ("category", "scope", "query", "order_by", "page_size", "page_token")
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    ORDER_BY_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    category: str
    scope: str
    query: str
    order_by: str
    page_size: int
    page_token: str
    def __init__(self, category: _Optional[str] = ..., scope: _Optional[str] = ..., query: _Optional[str] = ..., order_by: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListPresetsResponse(_message.Message):
    __slots__ = ("presets", "next_page_token")
    PRESETS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    presets: _containers.RepeatedCompositeFieldContainer[Preset]
    next_page_token: str
    def __init__(self, presets: _Optional[_Iterable[_Union[Preset, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetPresetRequest(_message.Message):
    __slots__ = ("preset_id",)
    PRESET_ID_FIELD_NUMBER: _ClassVar[int]
    preset_id: str
    def __init__(self, preset_id: _Optional[str] = ...) -> None: ...

class GetPresetResponse(_message.Message):
    __slots__ = ("preset",)
    PRESET_FIELD_NUMBER: _ClassVar[int]
    preset: Preset
    def __init__(self, preset: _Optional[_Union[Preset, _Mapping]] = ...) -> None: ...

class CreatePresetRequest(_message.Message):
    __slots__ = ("preset",)
    PRESET_FIELD_NUMBER: _ClassVar[int]
    preset: Preset
    def __init__(self, preset: _Optional[_Union[Preset, _Mapping]] = ...) -> None: ...

class CreatePresetResponse(_message.Message):
    __slots__ = ("preset",)
    PRESET_FIELD_NUMBER: _ClassVar[int]
    preset: Preset
    def __init__(self, preset: _Optional[_Union[Preset, _Mapping]] = ...) -> None: ...

class UpdatePresetRequest(_message.Message):
    __slots__ = ("preset_id", "name", "description", "prompt", "category", "visibility", "update_mask", "expected_version")
    PRESET_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    VISIBILITY_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    preset_id: str
    name: str
    description: str
    prompt: str
    category: PresetCategory
    visibility: PresetVisibility
    update_mask: _field_mask_pb2.FieldMask
    expected_version: int
    def __init__(self, preset_id: _Optional[str] = ..., name: _Optional[str] = ..., description: _Optional[str] = ..., prompt: _Optional[str] = ..., category: _Optional[_Union[PresetCategory, str]] = ..., visibility: _Optional[_Union[PresetVisibility, str]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., expected_version: _Optional[int] = ...) -> None: ...

class UpdatePresetResponse(_message.Message):
    __slots__ = ("preset",)
    PRESET_FIELD_NUMBER: _ClassVar[int]
    preset: Preset
    def __init__(self, preset: _Optional[_Union[Preset, _Mapping]] = ...) -> None: ...

class DeletePresetRequest(_message.Message):
    __slots__ = ("preset_id",)
    PRESET_ID_FIELD_NUMBER: _ClassVar[int]
    preset_id: str
    def __init__(self, preset_id: _Optional[str] = ...) -> None: ...

class DeletePresetResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LikePresetRequest(_message.Message):
    __slots__ = ("preset_id",)
    PRESET_ID_FIELD_NUMBER: _ClassVar[int]
    preset_id: str
    def __init__(self, preset_id: _Optional[str] = ...) -> None: ...

class LikePresetResponse(_message.Message):
    __slots__ = ("preset",)
    PRESET_FIELD_NUMBER: _ClassVar[int]
    preset: Preset
    def __init__(self, preset: _Optional[_Union[Preset, _Mapping]] = ...) -> None: ...

class UnlikePresetRequest(_message.Message):
    __slots__ = ("preset_id",)
    PRESET_ID_FIELD_NUMBER: _ClassVar[int]
    preset_id: str
    def __init__(self, preset_id: _Optional[str] = ...) -> None: ...

class UnlikePresetResponse(_message.Message):
    __slots__ = ("preset",)
    PRESET_FIELD_NUMBER: _ClassVar[int]
    preset: Preset
    def __init__(self, preset: _Optional[_Union[Preset, _Mapping]] = ...) -> None: ...

class ForkPresetRequest(_message.Message):
    __slots__ = ("preset_id", "name")
    PRESET_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    preset_id: str
    name: str
    def __init__(self, preset_id: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class ForkPresetResponse(_message.Message):
    __slots__ = ("preset",)
    PRESET_FIELD_NUMBER: _ClassVar[int]
    preset: Preset
    def __init__(self, preset: _Optional[_Union[Preset, _Mapping]] = ...) -> None: ...

class ResolvePresetRequest(_message.Message):
    __slots__ = ("preset_id", "user_id")
    PRESET_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    preset_id: str
    user_id: str
    def __init__(self, preset_id: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...

class ResolvePresetResponse(_message.Message):
    __slots__ = ("preset_id", "name", "prompt", "category", "version")
    PRESET_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    preset_id: str
    name: str
    prompt: str
    category: PresetCategory
    version: int
    def __init__(self, preset_id: _Optional[str] = ..., name: _Optional[str] = ..., prompt: _Optional[str] = ..., category: _Optional[_Union[PresetCategory, str]] = ..., version: _Optional[int] = ...) -> None: ...

class RecordPresetUseRequest(_message.Message):
    __slots__ = ("preset_id", "edit_id")
    PRESET_ID_FIELD_NUMBER: _ClassVar[int]
    EDIT_ID_FIELD_NUMBER: _ClassVar[int]
    preset_id: str
    edit_id: str
    def __init__(self, preset_id: _Optional[str] = ..., edit_id: _Optional[str] = ...) -> None: ...

class RecordPresetUseResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PurgeUserRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class PurgeUserResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
