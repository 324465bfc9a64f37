"""The JSON shapes of the Horizon API (pydantic models): what the OpenAPI document describes.

Field names follow the registry YAML file (docs/registry.md). Unknown fields are refused (they are usually
typos), as in the YAML file.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, StrictBool, StrictInt, StrictStr

from online_feature_store._native import MAX_TTL_SECONDS
from online_feature_store.horizon.db import Role, State
from online_feature_store.registry.model import Role as CallerRole

__all__ = [
    "KINDS",
    "AuditOut",
    "CacheIn",
    "CacheOut",
    "CachePolicyIn",
    "CachePolicyOut",
    "CallerOut",
    "ChangeRequestIn",
    "EntityOut",
    "EntitySummaryOut",
    "ErrorOut",
    "FeatureGroupOut",
    "FeatureIn",
    "FeatureOut",
    "KeyOut",
    "LoginIn",
    "LoginOut",
    "MeOut",
    "PasswordChangeIn",
    "RegisterIn",
    "RegistrationOut",
    "RegistryOut",
    "RejectIn",
    "RequestCreatedOut",
    "RequestOut",
    "RoleIn",
    "SearchHitOut",
    "StoreOut",
    "TryIn",
    "TryOut",
    "UserCreateIn",
    "UserDetailOut",
    "UserOut",
]

LABEL_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$"
"""Labels Horizon accepts for new objects: safe in URL paths and free of the serving API's ``@``."""
Label = Annotated[str, Field(pattern=LABEL_PATTERN, description="letters, digits, _ . - (max 128)")]
MAX_LENGTH = 0xFFFF
"""String and vector lengths travel as u16."""
MAX_CACHE_TTL = 2**31 - 1

Scalar = StrictBool | StrictInt | FiniteFloat | StrictStr
DefaultValue = Scalar | list[Scalar] | None


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorOut(BaseModel):
    """Every error that is not a validation error."""

    detail: str


# -- users -----------------------------------------------------------------------------------------


USERNAME_PATTERN = r"^[A-Za-z0-9_.@\-]{1,64}$"
"""User names: unique whatever their case (``ALICE`` is ``alice``)."""
Username = Annotated[str, Field(pattern=USERNAME_PATTERN, description="letters, digits, _ . @ - (max 64)")]
NewPassword = Annotated[
    str,
    Field(
        min_length=12,
        max_length=256,
        description="at least 12 characters, not containing the user name, not easy to guess",
    ),
]


class RegisterIn(_In):
    """A new account."""

    username: Username
    password: NewPassword


class UserCreateIn(_In):
    """An account made by an admin, with its role and first password."""

    username: Username
    password: NewPassword
    role: Role = Role.VIEWER


class PasswordChangeIn(_In):
    """A new password for the signed-in user."""

    current_password: str = Field(max_length=256)
    new_password: NewPassword


class RegistrationOut(BaseModel):
    """Whether one may create one's own account now, and whether it would be the first admin."""

    open: bool
    first_admin: bool


class LoginIn(_In):
    """Credentials."""

    username: str = Field(max_length=64)
    password: str = Field(max_length=256)


class UserOut(BaseModel):
    """A user and their role."""

    username: str
    role: Role


class MeOut(UserOut):
    """The signed-in user, and whether try-it is open to them (``try_entities``: the entities it may
    read, ``null`` for every one)."""

    can_try: bool
    try_entities: list[str] | None


class UserDetailOut(UserOut):
    """A user as admins see them."""

    created_at: datetime


class LoginOut(UserOut):
    """A new session: send ``Authorization: Bearer <token>`` until ``expires_at``."""

    token: str
    expires_at: datetime


class RoleIn(_In):
    """A role change."""

    role: Role


# -- registry (discovery) --------------------------------------------------------------------------


class RegistryOut(BaseModel):
    """The registry revision Horizon reads."""

    revision: int


class StoreOut(BaseModel):
    """A store."""

    id: str
    kind: str
    settings: dict[str, str]


class KeyOut(BaseModel):
    """One column of an entity's key: ``label`` is what clients send, ``column`` the stored name."""

    label: str
    column: str


class CachePolicyOut(BaseModel):
    """One cache layer's settings."""

    enabled: bool
    ttl_seconds: int
    jitter_percent: int


class CacheOut(BaseModel):
    """An entity's two cache layers."""

    in_process: CachePolicyOut
    distributed: CachePolicyOut


class FeatureOut(BaseModel):
    """A feature of one FG version; ``default`` is a plain value (a list for vector types)."""

    label: str
    default: Any
    string_length: int
    vector_length: int


class FeatureGroupOut(BaseModel):
    """A feature group with its active features and every version."""

    id: int
    label: str
    data_type: str
    ttl_seconds: int
    store: str
    in_process_cache: bool
    distributed_cache: bool
    active_version: int
    features: list[FeatureOut]
    versions: dict[str, list[FeatureOut]]


class EntitySummaryOut(BaseModel):
    """An entity with the labels of its FGs."""

    label: str
    keys: list[KeyOut]
    cache: CacheOut
    feature_groups: list[str]


class EntityOut(BaseModel):
    """An entity with its FGs."""

    label: str
    keys: list[KeyOut]
    cache: CacheOut
    feature_groups: list[FeatureGroupOut]


class CallerOut(BaseModel):
    """A reader client, a writer job or a readwriter (its token is never shown again)."""

    id: str
    role: str


class SearchHitOut(BaseModel):
    """An entity, FG or feature whose label matches the search."""

    kind: Literal["entity", "feature_group", "feature"]
    entity: str
    feature_group: str | None = None
    feature: str | None = None


# -- change requests -------------------------------------------------------------------------------


class CachePolicyIn(_In):
    """One cache layer's settings."""

    enabled: bool = False
    ttl_seconds: int = Field(default=0, ge=0, le=MAX_CACHE_TTL)
    jitter_percent: int = Field(default=0, ge=0, le=100)


class CacheIn(_In):
    """An entity's cache layers (an omitted one is off for a new entity, unchanged for an update)."""

    in_process: CachePolicyIn | None = None
    distributed: CachePolicyIn | None = None


class KeyIn(_In):
    """One key column (``column`` defaults to ``label``)."""

    label: Label
    column: Label | None = None


class FeatureIn(_In):
    """A feature: ``default`` omitted means the type's zero; lengths as in the registry YAML."""

    label: Label
    default: DefaultValue = None
    string_length: int | None = Field(default=None, ge=0, le=MAX_LENGTH)
    vector_length: int | None = Field(default=None, ge=0, le=MAX_LENGTH)


class StorePayload(_In):
    """create_store."""

    id: Label
    kind: Literal["sqlite", "redis", "scylla"]
    settings: dict[str, str] = Field(default_factory=dict)


class CreateEntityPayload(_In):
    """create_entity."""

    label: Label
    keys: list[KeyIn] = Field(min_length=1, max_length=16)
    cache: CacheIn | None = None


class UpdateEntityPayload(_In):
    """update_entity: new cache settings."""

    label: str
    cache: CacheIn


class CreateFeatureGroupPayload(_In):
    """create_feature_group."""

    entity: str
    label: Label
    data_type: str = Field(description="a name from GET /api/v1/data-types (or DataTypeFP32 style)")
    ttl_seconds: int = Field(default=0, ge=0, le=MAX_TTL_SECONDS, description="0 = never expires")
    store: str = ""
    in_process_cache: bool = False
    distributed_cache: bool = False
    features: list[FeatureIn] = Field(min_length=1, max_length=4096)


class UpdateFeatureGroupPayload(_In):
    """update_feature_group: omitted fields stay as they are."""

    entity: str
    label: str
    ttl_seconds: int | None = Field(default=None, ge=0, le=MAX_TTL_SECONDS)
    in_process_cache: bool | None = None
    distributed_cache: bool | None = None


class AddFeaturesPayload(_In):
    """add_features: appended to the active version, making a new version."""

    entity: str
    feature_group: str
    features: list[FeatureIn] = Field(min_length=1, max_length=4096)


class EditFeatureIn(_In):
    """A feature edit: omitted fields stay as they are."""

    label: str
    default: DefaultValue = None
    string_length: int | None = Field(default=None, ge=0, le=MAX_LENGTH)
    vector_length: int | None = Field(default=None, ge=0, le=MAX_LENGTH)


class EditFeaturesPayload(_In):
    """edit_features: defaults and lengths, edited in the active version."""

    entity: str
    feature_group: str
    features: list[EditFeatureIn] = Field(min_length=1, max_length=4096)


class DeleteFeaturesPayload(_In):
    """delete_features: removed from a new version (old versions keep them)."""

    entity: str
    feature_group: str
    labels: list[str] = Field(min_length=1, max_length=4096)


class CreateCallerPayload(_In):
    """create_caller: a reader client, a writer job, or (``readwriter``) one credential for both, as
    reference clients expect; its token is generated and shown once."""

    id: Label
    role: CallerRole


Description = Field(default="", max_length=4000)


class CreateStoreRequest(_In):
    kind: Literal["create_store"]
    payload: StorePayload
    description: str = Description


class CreateEntityRequest(_In):
    kind: Literal["create_entity"]
    payload: CreateEntityPayload
    description: str = Description


class UpdateEntityRequest(_In):
    kind: Literal["update_entity"]
    payload: UpdateEntityPayload
    description: str = Description


class CreateFeatureGroupRequest(_In):
    kind: Literal["create_feature_group"]
    payload: CreateFeatureGroupPayload
    description: str = Description


class UpdateFeatureGroupRequest(_In):
    kind: Literal["update_feature_group"]
    payload: UpdateFeatureGroupPayload
    description: str = Description


class AddFeaturesRequest(_In):
    kind: Literal["add_features"]
    payload: AddFeaturesPayload
    description: str = Description


class EditFeaturesRequest(_In):
    kind: Literal["edit_features"]
    payload: EditFeaturesPayload
    description: str = Description


class DeleteFeaturesRequest(_In):
    kind: Literal["delete_features"]
    payload: DeleteFeaturesPayload
    description: str = Description


class CreateCallerRequest(_In):
    kind: Literal["create_caller"]
    payload: CreateCallerPayload
    description: str = Description


ChangeRequestIn = Annotated[
    CreateStoreRequest
    | CreateEntityRequest
    | UpdateEntityRequest
    | CreateFeatureGroupRequest
    | UpdateFeatureGroupRequest
    | AddFeaturesRequest
    | EditFeaturesRequest
    | DeleteFeaturesRequest
    | CreateCallerRequest,
    Field(discriminator="kind"),
]
"""A new change request: ``kind`` selects the shape of ``payload``."""

KINDS: tuple[str, ...] = (
    "create_store",
    "create_entity",
    "update_entity",
    "create_feature_group",
    "update_feature_group",
    "add_features",
    "edit_features",
    "delete_features",
    "create_caller",
)


class RequestOut(BaseModel):
    """A change request and, once decided, who decided it, when, why, and the registry revision."""

    id: int
    kind: str
    payload: dict[str, Any]
    description: str
    state: State
    author: str
    created_at: datetime
    decided_by: str | None
    decided_at: datetime | None
    reason: str | None
    revision: int | None
    diff: list[str]


class RequestCreatedOut(RequestOut):
    """A new request; for create_caller, ``token`` is the caller's token, shown this once only."""

    token: str | None = None


class RejectIn(_In):
    """Why a request is rejected."""

    reason: str = Field(min_length=1, max_length=4000)


class AuditOut(BaseModel):
    """One audit record."""

    at: datetime
    actor: str
    action: str
    request_id: int | None
    detail: str


# -- try it ----------------------------------------------------------------------------------------


class TryFeatureGroupIn(_In):
    """Features of one FG to retrieve."""

    label: str
    feature_labels: list[str] = Field(min_length=1, max_length=4096)


class TryIn(_In):
    """A retrieval through the serving API (``RetrieveDecodedResult``)."""

    entity: str
    keys_schema: list[str] = Field(min_length=1, max_length=16)
    keys: list[list[str]] = Field(min_length=1, max_length=1000)
    feature_groups: list[TryFeatureGroupIn] = Field(min_length=1, max_length=256)


class TryFeatureOut(BaseModel):
    """A retrieved feature and its column in each row."""

    label: str
    column_idx: int


class TryFeatureSchemaOut(BaseModel):
    """The features of one requested FG."""

    feature_group_label: str
    features: list[TryFeatureOut]


class TryRowOut(BaseModel):
    """One key's values, rendered as strings by the serving API."""

    keys: list[str]
    columns: list[str]


class TryOut(BaseModel):
    """The decoded result."""

    keys_schema: list[str]
    feature_schemas: list[TryFeatureSchemaOut]
    rows: list[TryRowOut]
