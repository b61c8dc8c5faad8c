"""Ground-truth labels of planted abuse, one JSON object per line."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Label(BaseModel):
    """One planted abuse episode and the subjects a detector should flag for it.

    ``kind`` is ``token`` when ``subject_ids`` are tokens (``key:<key id>``)
    and ``client`` when they are clients (``ip:<address>``). Client labels
    are used where the abuse sends credentials without key ids, because then
    no token subject exists. Times are event time in whole seconds since the
    Unix epoch, ``start`` inclusive and ``end`` exclusive.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    label_id: str = Field(description="Unique within one run, e.g. 'spam_burst-1'.")
    scenario: str
    kind: Literal["token", "client"]
    subject_ids: tuple[str, ...]
    client_ips: tuple[str, ...] = Field(
        (), description="Client addresses of the planted requests; empty when a token moves over a whole carrier block."
    )
    networks: tuple[str, ...] = Field(
        (), description="CIDRs of the planted clients for stuffing, brute force and blocklisted networks; else empty."
    )
    start: int
    end: int
    description: str
