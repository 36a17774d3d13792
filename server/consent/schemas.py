from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from server.consent.models import AttestationKind, DataUse
from server.core.catalogue import PublicationStatus

# A BCP 47 tag, as the app reports it: "en", "de", "pt-BR".
LANGUAGE = r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$"


class ConsentDocumentCreate(BaseModel):
    title: str = Field(min_length=1, max_length=200)
    body: str = Field(min_length=1, max_length=200_000)
    site_id: uuid.UUID | None = Field(default=None, description="None: every site")
    language: str | None = Field(default=None, pattern=LANGUAGE, description="None: any")
    requires_reconsent: bool = Field(
        default=True,
        description="Whether those who signed an earlier version of this document must sign "
        "this one before their next session",
    )


class ConsentDocumentUpdate(BaseModel):
    """Drafts only: a published version never changes."""

    title: str | None = Field(default=None, min_length=1, max_length=200)
    body: str | None = Field(default=None, min_length=1, max_length=200_000)
    requires_reconsent: bool | None = None


class ConsentDocumentRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    study_id: uuid.UUID
    site_id: uuid.UUID | None
    language: str | None
    version: int | None = Field(description="Given at publication; None for a draft")
    title: str
    body: str
    requires_reconsent: bool
    status: PublicationStatus
    published_at: datetime | None
    created_at: datetime


class Attestation(BaseModel):
    kind: AttestationKind = AttestationKind.typed_name
    value: str = Field(
        min_length=1, max_length=200, description="The typed name, or the words agreed to"
    )


class ConsentSign(BaseModel):
    document_id: uuid.UUID = Field(description="The document in force (GET /api/consent/me)")
    attestation: Attestation
    app_version: str = Field(default="", max_length=64)


class ConsentRecordRead(BaseModel):
    """A signature as lists show it: never the typed name (that is in the PDF)."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    participant_id: uuid.UUID
    document_id: uuid.UUID
    document_version: int
    signed_at: datetime
    attestation_kind: AttestationKind
    ip_address: str | None
    app_version: str


class WithdrawalIn(BaseModel):
    reason: str = Field(min_length=1, max_length=2000)
    data_use: DataUse = Field(
        description="What the participant's data may still be used for: all_data, "
        "until_withdrawal (data collected before now), none"
    )


class WithdrawalRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    participant_id: uuid.UUID
    withdrawn_at: datetime
    withdrawn_by: uuid.UUID | None = Field(description="The staff member; None: the participant")
    reason: str
    data_use: DataUse
    previous_status: str


class ConsentStatus(BaseModel):
    consent_required: bool = Field(
        description="True until the participant has signed the document in force (a session "
        "start answers 403 consent_required meanwhile)"
    )
    document: ConsentDocumentRead | None = Field(
        description="The document in force for this participant (their study, site and "
        "language), the one to sign; None when the study has none for them"
    )
    latest_record: ConsentRecordRead | None
    withdrawn: bool


class ConsentHistory(BaseModel):
    status: ConsentStatus
    records: list[ConsentRecordRead] = Field(description="Every signature, oldest first")
    withdrawals: list[WithdrawalRead]
