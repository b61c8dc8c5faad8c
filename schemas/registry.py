"""The token registry: what the owner of each token allows it to do.

Rules compare observed traffic with these entries. ``subject_id`` is the id
the pipeline profiles (``key:<key id>`` or ``tk_<hash>``, see
``pipeline.identity``), so the registry holds no raw secrets.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class TokenRecord(BaseModel):
    """One token's owner and limits. Empty lists mean "no restriction"."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    subject_id: str
    account: str = ""
    plan: str = "default"
    scopes: tuple[str, ...] = Field((), description="Route prefixes the token may call, e.g. '/v1/orders'.")
    expires_at: float | None = Field(None, description="Expiry, seconds since the Unix epoch; None never expires.")
    allowed_origins: tuple[str, ...] = ()
    allowed_countries: tuple[str, ...] = Field((), description="ISO 3166-1 alpha-2 codes.")
    rate_limit_rps: float | None = Field(None, description="Static limit in requests per second, overrides the plan's.")


class PlanRecord(BaseModel):
    """Defaults for every token of a plan; a token's own non-empty values take precedence."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rate_limit_rps: float | None = Field(None, gt=0, description="Static per-token limit, requests per second.")
    account_limit_rps: float | None = Field(
        None, gt=0, description="Limit on all tokens of one account together, requests per second."
    )
    allowed_countries: tuple[str, ...] = Field((), description="ISO 3166-1 alpha-2 codes; empty allows all.")


class AccountRecord(BaseModel):
    """Limits on one account: every token it owns, counted together."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rate_limit_rps: float | None = Field(None, gt=0, description="Requests per second over all its tokens.")


class RegistryDocument(BaseModel):
    """The whole registry file: plans, accounts and tokens. Unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    plans: dict[str, PlanRecord] = Field(default_factory=dict)
    accounts: dict[str, AccountRecord] = Field(default_factory=dict)
    tokens: tuple[TokenRecord, ...] = ()
