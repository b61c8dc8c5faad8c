"""Client profiles: the credential and headers a request is sent with.

Profile ``i < population.size`` is token ``i`` used by its owner, with the
token's user agent and origin. Monitors and scenarios add more profiles
after those: a token used from an attacker's tool, an invalid credential
with no key id, or a client that sends no credential at all.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pipeline.simulate.catalog import USER_AGENTS
from pipeline.simulate.population import Population

PROFILE_FIELDS: tuple[str, ...] = ("secret", "key_id", "account", "user_agent", "origin", "referer")
"""String fields of a profile; "" means the request does not carry the value."""

_AGENTS = np.array(USER_AGENTS, dtype=object)


class ClientProfiles:
    """The table of profiles, indexed by the ``profile`` column of event batches."""

    def __init__(self, population: Population) -> None:
        self.population = population
        self._extra: dict[str, list[str]] = {name: [] for name in PROFILE_FIELDS}
        self._extra_token: list[int] = []

    def __len__(self) -> int:
        return self.population.size + len(self._extra_token)

    def add(
        self,
        user_agents: Sequence[str],
        *,
        secrets: Sequence[str] | None = None,
        key_ids: Sequence[str] | None = None,
        accounts: Sequence[str] | None = None,
        origins: Sequence[str] | None = None,
        tokens: Sequence[int] | None = None,
    ) -> np.ndarray:
        """Append one profile per user agent and return their indices.

        Omitted fields are empty. ``tokens`` names the population token a
        profile uses (-1 for none), which only the scenario labels read.
        """
        count = len(user_agents)
        values = {
            "secret": secrets,
            "key_id": key_ids,
            "account": accounts,
            "user_agent": user_agents,
            "origin": origins,
        }
        for name, column in values.items():
            column = [""] * count if column is None else list(column)
            if len(column) != count:
                raise ValueError(f"profile field {name} has {len(column)} values for {count} user agents")
            self._extra[name].extend(column)
        self._extra["referer"].extend(origin + "/" if origin else "" for origin in (origins or [""] * count))
        self._extra_token.extend([-1] * count if tokens is None else list(tokens))
        first = len(self) - count
        return np.arange(first, first + count, dtype=np.int64)

    def add_token_variants(self, token: int, user_agents: Sequence[str]) -> np.ndarray:
        """Add profiles that send ``token``'s credential with other user agents and no origin."""
        count = len(user_agents)
        tokens = np.full(count, token)
        return self.add(
            user_agents,
            secrets=self.population.secrets(tokens),
            key_ids=self.population.key_ids(tokens),
            accounts=self.population.account_ids(tokens),
            tokens=tokens.tolist(),
        )

    def fields(self, profiles: np.ndarray) -> dict[str, list[str]]:
        """Return every profile field for the given profile indices, one list per field."""
        profiles = np.asarray(profiles, dtype=np.int64)
        population = self.population
        own = profiles[profiles < population.size]
        extra = profiles[profiles >= population.size] - population.size
        origins = population.origins(own)
        result = {
            "secret": population.secrets(own),
            "key_id": population.key_ids(own),
            "account": population.account_ids(own),
            "user_agent": _AGENTS[population.agent[own]].tolist(),
            "origin": origins,
            "referer": [origin + "/" if origin else "" for origin in origins],
        }
        extra_list = extra.tolist()
        for name in PROFILE_FIELDS:
            column = self._extra[name]
            result[name].extend(column[i] for i in extra_list)
        # Rows were grouped as (population, extra); put them back in request order.
        order = np.concatenate([np.flatnonzero(profiles < population.size), np.flatnonzero(profiles >= population.size)])
        if np.any(order != np.arange(len(profiles))):
            inverse = np.empty_like(order)
            inverse[order] = np.arange(len(order))
            result = {name: [values[i] for i in inverse.tolist()] for name, values in result.items()}
        return result
