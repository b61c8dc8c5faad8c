"""The simulated IPv4 address plan: which /16 blocks belong to which country and use.

Every country gets its own /16 blocks per role. So the /16 of an address
determines the country that the simulated gateway logs, and benign clients
never share a block with the abuse scenarios. The blocks are synthetic and
do not match real geolocation or the real owners of these ranges.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np

from pipeline.simulate.catalog import COUNTRIES


class BlockRole(IntEnum):
    """Role of a /16 block, the kind of hosts in it. The value is the block's slot among its country's blocks."""

    CARRIER_A = 0
    CARRIER_B = 1
    RESIDENTIAL_A = 2
    RESIDENTIAL_B = 3
    DATACENTER = 4
    OFFICE = 5
    HOSTING = 6
    """VPS ranges used by scrapers, brute force and leaked-token abuse."""
    PROXY = 7
    """Residential-proxy exits used by credential stuffing."""
    BAD_HOSTING = 8
    """Ranges the written blocklist covers."""


ROLES_PER_COUNTRY = len(BlockRole)

# Public unicast /8s, outside the private, loopback, CGNAT, documentation and
# multicast ranges. Blocks are dealt round-robin across them, so that
# consecutive blocks do not look related.
_FIRST_OCTETS = (31, 37, 46, 62, 77, 78, 80, 82, 84, 86, 88, 91, 93, 95, 178, 188)
_SECOND_OCTET_START = 16
_SECOND_OCTET_STRIDE = 7

HOSTS_PER_BLOCK = 254 * 256
"""Usable hosts of a /16 when every .0 and .255 address is skipped."""

UNKNOWN_COUNTRY = 255


def block_base(country: int | np.ndarray, role: int | np.ndarray) -> np.ndarray:
    """Return the network address (as uint32) of the /16 for a country and role."""
    slot = np.asarray(country, dtype=np.int64) * ROLES_PER_COUNTRY + np.asarray(role, dtype=np.int64)
    first = np.asarray(_FIRST_OCTETS, dtype=np.int64)[slot % len(_FIRST_OCTETS)]
    second = _SECOND_OCTET_START + (slot // len(_FIRST_OCTETS)) * _SECOND_OCTET_STRIDE
    return ((first << 24) | (second << 16)).astype(np.uint32)


def _build_block_country() -> np.ndarray:
    table = np.full(1 << 16, UNKNOWN_COUNTRY, dtype=np.uint8)
    countries = np.repeat(np.arange(len(COUNTRIES)), ROLES_PER_COUNTRY)
    roles = np.tile(np.arange(ROLES_PER_COUNTRY), len(COUNTRIES))
    bases = block_base(countries, roles)
    if len(np.unique(bases)) != len(bases):
        raise RuntimeError("Internal error: the address plan assigns one /16 to two countries or roles.")
    table[bases >> np.uint32(16)] = countries
    return table


BLOCK_COUNTRY: np.ndarray = _build_block_country()
"""Country index of each /16 (indexed by ``address >> 16``), 255 outside the plan."""


def host_address(base: np.ndarray | int, host: np.ndarray | int) -> np.ndarray:
    """Return the address of host number ``host`` (0 <= host < HOSTS_PER_BLOCK) in a /16."""
    host = np.asarray(host, dtype=np.uint32)
    offset = (host // np.uint32(254)) * np.uint32(256) + host % np.uint32(254) + np.uint32(1)
    return (np.asarray(base, dtype=np.uint32) + offset).astype(np.uint32)


def country_of(addresses: np.ndarray) -> np.ndarray:
    """Return the country index of each address (uint8, 255 outside the plan)."""
    return BLOCK_COUNTRY[np.asarray(addresses, dtype=np.uint32) >> np.uint32(16)]


def format_ip(address: int) -> str:
    """Format one uint32 address as dotted quad."""
    address = int(address)
    return f"{address >> 24}.{(address >> 16) & 255}.{(address >> 8) & 255}.{address & 255}"


def format_cidr(network: int, prefix_length: int) -> str:
    """Format a network address and prefix length, e.g. ``31.23.4.0/24``."""
    return f"{format_ip(network)}/{prefix_length}"


def network_of(address: int, prefix_length: int) -> int:
    """Return the network address of the /``prefix_length`` containing ``address``."""
    mask = (0xFFFFFFFF << (32 - prefix_length)) & 0xFFFFFFFF
    return int(address) & mask
