"""Dead letters: input that could not become an event, kept with the reason."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

DEAD_LETTER_SCHEMA_VERSION = 1


class DeadLetter(BaseModel):
    """A rejected input record. ``raw`` has credentials scrubbed before it is built."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = DEAD_LETTER_SCHEMA_VERSION
    source: str = Field(description="File path or Kafka topic.")
    partition: int = -1
    offset: int = Field(description="Kafka offset, or 1-based line number for files.")
    stage: str = Field(description="Stage id that rejected the record, e.g. 'parser'.")
    reason: str
    raw: str = Field(description="The record as text, credentials replaced by '<redacted>'.")
    format: str = Field("", description="Format the record was tried with, when known.")
