"""Ground-truth labels and the index that finds the labels a subject or client network belongs to.

Labels are the JSON Lines that ``tokensentry simulate --labels`` writes
(``pipeline.simulate.Label``): one planted abuse episode each, with its
subjects (``key:<id>`` tokens or ``ip:<addr>`` clients), the client
addresses and networks of the planted requests, and its event-time span.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from pipeline.errors import ConfigError, InputError
from pipeline.simulate import Label

IP_PREFIX = "ip:"

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def load_labels(path: Path) -> list[Label]:
    """Read labels from a JSON Lines file; blank lines are skipped.

    Raises:
        InputError: the file is missing or unreadable.
        ConfigError: a line is not a valid label; the message gives its number.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"labels file {path} not found; check --labels") from None
    except OSError as exc:
        raise InputError(f"labels file {path} cannot be read: {exc.strerror}") from None
    labels = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            labels.append(Label.model_validate(json.loads(line)))
        except (json.JSONDecodeError, ValidationError) as exc:
            raise ConfigError(f"labels file {path} line {number} is not a valid label: {exc}") from None
    ids = [label.label_id for label in labels]
    duplicates = sorted({label_id for label_id in ids if ids.count(label_id) > 1})
    if duplicates:
        raise ConfigError(f"labels file {path} repeats label_id {', '.join(duplicates)}; each label needs its own id")
    return labels


def parse_network(text: str) -> IPNetwork | None:
    """Parse an address or CIDR (host bits allowed); return None for anything else."""
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        return None


class LabelIndex:
    """Finds the labels a token id or client network belongs to.

    A token subject belongs to the labels that list it in ``subject_ids``.
    A client network belongs to a label when it contains one of the label's
    ``client_ips`` or lies inside one of its ``networks``. Subjects
    ``ip:<addr>`` are looked up both ways. Results for networks are cached,
    because one blocked network usually recurs in many findings.
    """

    def __init__(self, labels: Sequence[Label]) -> None:
        self.labels = list(labels)
        self._by_subject: dict[str, list[int]] = {}
        self._by_address: dict[str, list[int]] = {}
        self._addresses: list[dict[int, np.ndarray]] = []
        self._networks: list[list[IPNetwork]] = []
        for number, label in enumerate(self.labels):
            for subject in label.subject_ids:
                self._by_subject.setdefault(subject, []).append(number)
            by_version: dict[int, list[int]] = {4: [], 6: []}
            for text in label.client_ips:
                address = ipaddress.ip_address(text)
                self._by_address.setdefault(str(address), []).append(number)
                by_version[address.version].append(int(address))
            # IPv6 addresses exceed 64 bits, so they stay Python ints in an object array.
            self._addresses.append(
                {
                    4: np.array(by_version[4], dtype=np.uint64),
                    6: np.array(by_version[6], dtype=object),
                }
            )
            self._networks.append([network for network in map(parse_network, label.networks) if network is not None])
        self._network_cache: dict[str, tuple[int, ...]] = {}

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def client_label_addresses(self) -> dict[str, tuple[int, ...]]:
        """Client addresses of ``client`` labels (the attacker side), each with its label numbers."""
        addresses: dict[str, tuple[int, ...]] = {}
        for address, numbers in self._by_address.items():
            client_numbers = tuple(n for n in numbers if self.labels[n].kind == "client")
            if client_numbers:
                addresses[address] = client_numbers
        return addresses

    @property
    def labelled_subjects(self) -> frozenset[str]:
        """Every subject id that some label lists."""
        return frozenset(self._by_subject)

    def for_subject(self, subject: str) -> tuple[int, ...]:
        """Return the numbers of the labels that list ``subject``; ``ip:`` subjects also match by address."""
        numbers = list(self._by_subject.get(subject, ()))
        if subject.startswith(IP_PREFIX):
            numbers.extend(self.for_network(subject[len(IP_PREFIX) :]))
        return tuple(sorted(set(numbers)))

    def for_network(self, text: str) -> tuple[int, ...]:
        """Return the numbers of the labels whose clients ``text`` (an address or CIDR) covers."""
        cached = self._network_cache.get(text)
        if cached is not None:
            return cached
        network = parse_network(text)
        numbers: tuple[int, ...] = () if network is None else self._match_network(network)
        self._network_cache[text] = numbers
        return numbers

    def _match_network(self, network: IPNetwork) -> tuple[int, ...]:
        found: set[int] = set()
        if network.num_addresses == 1:
            found.update(self._by_address.get(str(network.network_address), ()))
        else:
            first = int(network.network_address)
            last = int(network.broadcast_address)
            for number, by_version in enumerate(self._addresses):
                addresses = by_version[network.version]
                if len(addresses) and bool(np.any((addresses >= first) & (addresses <= last))):
                    found.add(number)
        for number, networks in enumerate(self._networks):
            if any(network.version == labelled.version and network.subnet_of(labelled) for labelled in networks):
                found.add(number)
        return tuple(sorted(found))

