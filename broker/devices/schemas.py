"""Request and response bodies of the device-group and device APIs.

Closed bodies (``extra="forbid"``), strict numbers and booleans, and the text rules of the
sessions API: names and labels end up on consent pages, so no control characters.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, Field

from broker.auth.models import User
from broker.devices.models import Device, DeviceGroup
from broker.types import Body, clean_text, non_blank

GroupName = Annotated[
    str, Field(min_length=1, max_length=100), AfterValidator(clean_text), AfterValidator(non_blank)
]
Description = Annotated[str, Field(max_length=500), AfterValidator(clean_text)]
DeviceName = Annotated[
    str, Field(min_length=1, max_length=200), AfterValidator(clean_text), AfterValidator(non_blank)
]
ProviderName = Annotated[str, Field(pattern=r"^[a-z0-9_-]{1,30}$")]
ProviderDeviceId = Annotated[
    str, Field(min_length=1, max_length=200), AfterValidator(clean_text), AfterValidator(non_blank)
]
AssetTag = Annotated[
    str, Field(min_length=1, max_length=100), AfterValidator(clean_text), AfterValidator(non_blank)
]
OwnerName = Annotated[
    str, Field(min_length=1, max_length=200), AfterValidator(clean_text), AfterValidator(non_blank)
]
OwnerContact = Annotated[
    str, Field(min_length=1, max_length=320), AfterValidator(clean_text), AfterValidator(non_blank)
]
EntityId = Annotated[str, Field(min_length=1, max_length=36)]
Port = Annotated[int, Field(strict=True, ge=1, le=65535)]
AllowedPath = Annotated[
    str, Field(min_length=1, max_length=500), AfterValidator(clean_text), AfterValidator(non_blank)
]
ConsentTimeout = Annotated[int, Field(strict=True, ge=30, le=86400)]
# The largest file one transfer through the broker may move (1 byte up to 1 TiB).
FileLimit = Annotated[int, Field(strict=True, ge=1, le=1 << 40)]
StrictBool = Annotated[bool, Field(strict=True)]


def _unique_ports(ports: list[int]) -> list[int]:
    if len(set(ports)) != len(ports):
        raise ValueError("ports must not repeat")
    return sorted(ports)


def _unique_paths(paths: list[str]) -> list[str]:
    if len(set(paths)) != len(paths):
        raise ValueError("paths must not repeat")
    return paths


class Question(Body):
    """A pre-session question shown to the end user on the consent page."""

    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
    label: Annotated[
        str,
        Field(min_length=1, max_length=300),
        AfterValidator(clean_text),
        AfterValidator(non_blank),
    ]


def _unique_questions(questions: list[Question]) -> list[Question]:
    ids = [q.id for q in questions]
    if len(set(ids)) != len(ids):
        raise ValueError("question ids must not repeat")
    return questions


Ports = Annotated[list[Port], Field(max_length=100), AfterValidator(_unique_ports)]
Paths = Annotated[list[AllowedPath], Field(max_length=50), AfterValidator(_unique_paths)]
Questions = Annotated[list[Question], Field(max_length=20), AfterValidator(_unique_questions)]
# A ticket priority or category the approval policy is narrowed to, compared case-blind.
Label = Annotated[str, Field(min_length=1, max_length=100), AfterValidator(clean_text)]
Labels = Annotated[list[Label], Field(max_length=20)]


class GroupCreate(Body):
    name: GroupName
    description: Description = ""
    unattended_allowed: StrictBool = False
    consent_timeout_seconds: ConsentTimeout | None = None  # None: the broker's default
    record_input: StrictBool = False
    allowed_ports: Ports = Field(default_factory=list)
    allowed_paths: Paths = Field(default_factory=list)
    max_file_bytes: FileLimit | None = None  # None: the broker's default
    keep_files: StrictBool = False  # keep each transferred file for auditors
    questions: Questions = Field(default_factory=list)
    approval_required: StrictBool = False
    approval_priorities: Labels = Field(default_factory=list)
    approval_categories: Labels = Field(default_factory=list)
    dual_control_playback: StrictBool = False


class GroupUpdate(Body):
    """Only the fields sent change; ``consent_timeout_seconds: null`` restores the default."""

    name: GroupName | None = None
    description: Description | None = None
    unattended_allowed: StrictBool | None = None
    consent_timeout_seconds: ConsentTimeout | None = None
    record_input: StrictBool | None = None
    allowed_ports: Ports | None = None
    allowed_paths: Paths | None = None
    max_file_bytes: FileLimit | None = None
    keep_files: StrictBool | None = None
    questions: Questions | None = None
    approval_required: StrictBool | None = None
    approval_priorities: Labels | None = None
    approval_categories: Labels | None = None
    dual_control_playback: StrictBool | None = None


class DeviceCreate(Body):
    name: DeviceName
    group_id: EntityId
    provider: ProviderName
    provider_device_id: ProviderDeviceId
    asset_tag: AssetTag | None = None
    owner_name: OwnerName | None = None
    owner_contact: OwnerContact | None = None


class DeviceUpdate(Body):
    """Only the fields sent change; ``null`` clears asset tag and owner fields."""

    name: DeviceName | None = None
    group_id: EntityId | None = None
    provider: ProviderName | None = None
    provider_device_id: ProviderDeviceId | None = None
    asset_tag: AssetTag | None = None
    owner_name: OwnerName | None = None
    owner_contact: OwnerContact | None = None


class MemberOut(BaseModel):
    id: str
    username: str
    name: str


class GroupOut(BaseModel):
    id: str
    name: str
    description: str
    unattended_allowed: bool
    consent_timeout_seconds: int | None
    record_input: bool
    allowed_ports: list[int]
    allowed_paths: list[str]
    max_file_bytes: int | None
    keep_files: bool
    questions: list[dict[str, str]]
    approval_required: bool
    approval_priorities: list[str]
    approval_categories: list[str]
    dual_control_playback: bool
    members: list[MemberOut]
    created_at: datetime

    @classmethod
    def of(cls, group: DeviceGroup, members: list[User]) -> GroupOut:
        return cls(
            id=group.id,
            name=group.name,
            description=group.description,
            unattended_allowed=group.unattended_allowed,
            consent_timeout_seconds=group.consent_timeout_seconds,
            record_input=group.record_input,
            allowed_ports=list(group.allowed_ports),
            allowed_paths=list(group.allowed_paths),
            max_file_bytes=group.max_file_bytes,
            keep_files=group.keep_files,
            approval_required=group.approval_required,
            approval_priorities=list(group.approval_priorities or []),
            approval_categories=list(group.approval_categories or []),
            dual_control_playback=group.dual_control_playback,
            questions=[
                {"id": str(q.get("id", "")), "label": str(q.get("label", ""))}
                for q in group.questions
            ],
            members=[MemberOut(id=u.id, username=u.username, name=u.display_name) for u in members],
            created_at=group.created_at,
        )


class GroupList(BaseModel):
    items: list[GroupOut]


class GroupRefOut(BaseModel):
    id: str
    name: str


class DeviceOut(BaseModel):
    id: str
    name: str
    group: GroupRefOut
    provider: str
    provider_device_id: str
    asset_tag: str | None
    owner_name: str | None
    owner_contact: str | None
    # Rights the device's agent said it cannot give, with its reason (e.g. the screen on
    # Wayland): the request form and API refuse them.
    unavailable: dict[str, str]
    agent_version: str | None  # as its agent last reported (None: it never connected)
    retired_at: datetime | None
    # From the gateway's presence (None where the API did not read it).
    online: bool | None = None
    last_seen_at: datetime | None = None
    created_at: datetime

    @classmethod
    def of(
        cls,
        device: Device,
        group: DeviceGroup,
        *,
        online: bool | None = None,
        last_seen_at: datetime | None = None,
    ) -> DeviceOut:
        return cls(
            id=device.id,
            name=device.name,
            group=GroupRefOut(id=group.id, name=group.name),
            provider=device.provider,
            provider_device_id=device.provider_device_id,
            asset_tag=device.asset_tag,
            owner_name=device.owner_name,
            owner_contact=device.owner_contact,
            unavailable=dict(device.unavailable or {}),
            agent_version=device.agent_version,
            retired_at=device.retired_at,
            online=online,
            last_seen_at=last_seen_at,
            created_at=device.created_at,
        )


class DeviceSuggestion(BaseModel):
    id: str
    name: str


class DeviceNames(BaseModel):
    """Suggestions for a device field, by name (``GET /device-names``)."""

    items: list[DeviceSuggestion]


class DeviceList(BaseModel):
    items: list[DeviceOut]
    total: int
    limit: int
    offset: int
