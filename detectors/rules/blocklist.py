"""IP/CIDR blocklist: flags client IPs inside blocklisted networks.

The list comes from a text file (one network or address per line, an
optional label after it, ``#`` comments), reloaded without a restart when
the file's modification time changes, or from query rows
(``IpBlocklist.load_rows``, e.g. a ClickHouse table of ``(cidr, label)``).
Lines that are not networks are skipped with a warning naming their line
numbers, because threat feeds often carry junk. A reload that fails to read
the file keeps the list in force.

Lookup: networks become sorted ``[first, last]`` address intervals, IPv4 as
uint32 numpy arrays and IPv6 as Python ints; each distinct client address
of a batch is parsed once and all are matched with one ``searchsorted``.
Overlapping networks are allowed; a match reports the covering network
whose interval ends last (the broadest one in the usual nested case).

Runs on client windows (``scope = "client"``): a detection's ``client_ip``
is the matched network in CIDR notation, so a policy can block it. Score is
always 1 (a match).

>>> blocklist = IpBlocklist(networks=["203.0.113.0/24 scanner", "2001:db8::/32"])
>>> [blocklist.network_of(i) for i in blocklist.match(np.array(["203.0.113.9", "198.51.100.1", "2001:db8::1"], dtype=object))]
['203.0.113.0/24', None, '2001:db8::/32']
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from detectors.base import Detection, DetectionContext, Detector, build_detection, explain
from pipeline.windows import WindowBatch
from schemas.detections import Evidence, Severity

logger = logging.getLogger(__name__)

_V4_MAPPED_PREFIX = 0xFFFF << 32


class IpBlocklist(Detector):
    """Flags client windows whose address is in a blocklisted network.

    Args:
        path: Blocklist file, reloaded when its modification time changes.
        networks: Entries to use when there is no file (``"cidr [label]"``).
        min_requests: Minimum requests of a client window that is reported.
    """

    detector_id = "ip_blocklist"
    version = "1"
    scope = "client"
    score_range = (1.0, 1.0)

    def __init__(self, path: str | Path | None = None, networks: Iterable[str] = (), min_requests: float = 1.0) -> None:
        self.path = Path(path) if path is not None else None
        self.min_requests = min_requests
        self._mtime_ns: int | None = None
        self._set_entries([], "empty")
        if self.path is not None:
            self.reload_if_changed()
        else:
            self._set_entries(list(networks), "list")

    # -- loading --------------------------------------------------------------

    def load_rows(self, rows: Iterable[Sequence[str]]) -> None:
        """Replace the list with query rows of ``(cidr,)`` or ``(cidr, label)``."""
        entries = [" ".join(str(part) for part in row if part not in (None, "")) for row in rows]
        self._set_entries(entries, "rows")

    def reload_if_changed(self) -> bool:
        """Reload the file when its modification time changed; return True when reloaded."""
        if self.path is None:
            return False
        try:
            mtime_ns = self.path.stat().st_mtime_ns
            if mtime_ns == self._mtime_ns:
                return False
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            if self._mtime_ns != -1:
                logger.warning("blocklist %s cannot be read (%s); keeping %d networks", self.path, exc, self.size)
                self._mtime_ns = -1
            return False
        self._set_entries(lines, str(self.path))
        self._mtime_ns = mtime_ns
        logger.info("blocklist %s loaded: %d networks", self.path, self.size)
        return True

    def _set_entries(self, lines: list[str], origin: str) -> None:
        networks: list[tuple[int, int, int, str, str]] = []  # (version, first, last, cidr, label)
        invalid: list[int] = []
        for number, line in enumerate(lines, start=1):
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            cidr, _, label = text.partition(" ")
            try:
                network = ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                invalid.append(number)
                continue
            networks.append(
                (network.version, int(network.network_address), int(network.broadcast_address), str(network), label.strip())
            )
        if invalid:
            logger.warning(
                "blocklist %s: skipped %d lines that are not networks (first line numbers: %s)",
                origin,
                len(invalid),
                ", ".join(str(number) for number in invalid[:5]),
            )
        networks.sort(key=lambda entry: (entry[0], entry[1]))
        self._cidrs = np.array([entry[3] for entry in networks], dtype=object)
        self._labels = np.array([entry[4] for entry in networks], dtype=object)
        v4 = [entry for entry in networks if entry[0] == 4]
        v6 = [entry for entry in networks if entry[0] == 6]
        self._v4 = _intervals([e[1] for e in v4], [e[2] for e in v4], np.uint32, offset=0)
        self._v6 = _intervals([e[1] for e in v6], [e[2] for e in v6], object, offset=len(v4))

    @property
    def size(self) -> int:
        return len(self._cidrs)

    # -- lookup ---------------------------------------------------------------

    def match(self, addresses: np.ndarray) -> np.ndarray:
        """Return, for each address, the index of a covering network, or -1."""
        result = np.full(len(addresses), -1, dtype=np.int64)
        if self.size == 0 or len(addresses) == 0:
            return result
        codes, uniques = pd.factorize(np.asarray(addresses, dtype=object), use_na_sentinel=False)
        versions, numbers = _parse_addresses(uniques)
        found = np.full(len(uniques), -1, dtype=np.int64)
        is_v4 = versions == 4
        if is_v4.any():
            found[is_v4] = _lookup(self._v4, np.array(numbers[is_v4].tolist(), dtype=np.uint32))
        is_v6 = versions == 6
        if is_v6.any():
            found[is_v6] = _lookup(self._v6, numbers[is_v6])
        return found[codes]

    def network_of(self, index: int) -> str | None:
        return None if index < 0 else str(self._cidrs[index])

    def detect(self, windows: WindowBatch, context: DetectionContext) -> list[Detection]:
        self.reload_if_changed()
        clients = windows.clients
        if clients is None or clients.size == 0 or self.size == 0:
            return []
        matched = self.match(clients.keys["client_ip"])
        requests = clients.feature("requests")
        detections = []
        for row in np.flatnonzero((matched >= 0) & (requests >= self.min_requests)).tolist():
            index = int(matched[row])
            cidr = str(self._cidrs[index])
            label = str(self._labels[index])
            address = clients.keys["client_ip"][row]
            evidence = (
                Evidence(feature="requests", observed=requests[row], expected=0.0),
                Evidence(
                    feature="distinct_subjects", observed=clients.feature("distinct_subjects")[row], expected=0.0
                ),
            )
            summary = f"client {address} is in blocklisted network {cidr}" + (f" ({label})" if label else "")
            detections.append(
                build_detection(
                    self,
                    clients,
                    row,
                    score=1.0,
                    threshold=1.0,
                    severity=Severity.HIGH,
                    explanation=explain(summary, evidence),
                    evidence=evidence,
                    context=context,
                    client_ip=cidr,
                )
            )
        return detections


def _intervals(firsts: list[int], lasts: list[int], dtype, offset: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (sorted firsts, running max of lasts, index of the network reaching that max)."""
    starts = np.array(firsts, dtype=dtype)
    ends = np.array(lasts, dtype=dtype)
    reach = np.empty(len(ends), dtype=dtype)
    owner = np.empty(len(ends), dtype=np.int64)
    best_end, best = None, -1
    for i, end in enumerate(lasts):
        if best_end is None or end > best_end:
            best_end, best = end, i
        reach[i] = best_end
        owner[i] = best + offset
    return starts, reach, owner


def _lookup(intervals: tuple[np.ndarray, np.ndarray, np.ndarray], numbers: np.ndarray) -> np.ndarray:
    starts, reach, owner = intervals
    if len(starts) == 0:
        return np.full(len(numbers), -1, dtype=np.int64)
    position = np.searchsorted(starts, numbers, side="right") - 1
    clipped = np.maximum(position, 0)
    inside = (position >= 0) & (numbers <= reach[clipped])
    return np.where(inside, owner[clipped], -1)


def _parse_addresses(addresses) -> tuple[np.ndarray, np.ndarray]:
    """Return (IP version or 0 when invalid, address as a Python int) for each text address."""
    versions = np.zeros(len(addresses), dtype=np.int8)
    numbers = np.zeros(len(addresses), dtype=object)
    for i, address in enumerate(addresses):
        text = str(address)
        try:
            numbers[i] = int.from_bytes(socket.inet_pton(socket.AF_INET, text), "big")
            versions[i] = 4
            continue
        except OSError:
            pass
        try:
            number = int.from_bytes(socket.inet_pton(socket.AF_INET6, text.split("%", 1)[0]), "big")
        except OSError:
            continue
        if number >> 32 == _V4_MAPPED_PREFIX >> 32:
            numbers[i] = number & 0xFFFFFFFF
            versions[i] = 4
        else:
            numbers[i] = number
            versions[i] = 6
    return versions, numbers
