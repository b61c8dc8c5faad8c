"""Registry entries (``schemas.registry.TokenRecord`` fields) for every simulated token."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np

from pipeline.simulate.catalog import COUNTRY_CODES, PLANS, SERVICES
from pipeline.simulate.population import Population

_BLOCK_TOKENS = 10_000


def iter_registry_records(
    population: Population, overrides: Mapping[int, Mapping[str, object]] | None = None
) -> Iterator[dict[str, object]]:
    """Yield one TokenRecord-shaped dict per token, in token order.

    ``overrides`` replaces fields of single tokens, e.g. the past
    ``expires_at`` of the use-after-expiry scenario. Records are plain dicts
    (not validated models) so that millions of them stream in seconds; the
    unit tests validate them against ``TokenRecord``.
    """
    overrides = overrides or {}
    for first in range(0, population.size, _BLOCK_TOKENS):
        tokens = np.arange(first, min(first + _BLOCK_TOKENS, population.size))
        key_ids = population.key_ids(tokens)
        accounts = population.account_ids(tokens)
        origins = population.origins(tokens)
        plans = population.plan[tokens].tolist()
        scopes = population.scopes[tokens].tolist()
        expires = population.expires_at[tokens].tolist()
        locked = population.country_locked[tokens].tolist()
        countries = population.country[tokens].tolist()
        for i, token in enumerate(tokens.tolist()):
            record: dict[str, object] = {
                "subject_id": f"key:{key_ids[i]}",
                "account": accounts[i],
                "plan": PLANS[plans[i]].name,
                "scopes": [f"/v1/{SERVICES[s]}" for s in scopes[i] if s >= 0],
                "expires_at": None if expires[i] != expires[i] else expires[i],  # NaN means never
                "allowed_origins": [origins[i]] if origins[i] else [],
                "allowed_countries": [COUNTRY_CODES[countries[i]]] if locked[i] else [],
                "rate_limit_rps": PLANS[plans[i]].rate_limit_rps,
            }
            if token in overrides:
                record.update(overrides[token])
            yield record
