#!/usr/bin/env python3
"""Check that a Kafka broker serves a Metadata request that lists at least one broker.

deploy/kafka/broker runs this in a loop while the broker starts. An open TCP port only
shows that some process listens. A Metadata response that lists a broker shows that the
port belongs to a Kafka broker that processes requests and is unfenced, because Kafka
leaves fenced brokers out of Metadata responses.

The check speaks the Kafka wire protocol with the standard library only, so it needs
no client package. It sends ApiVersions v0 to learn which Metadata versions the broker
supports, then a Metadata request for all topics at the lowest supported version
between 4 and 8. Kafka 4.0 removed Metadata v0-v3 (KIP-896), and v9+ use the flexible
encoding, which this probe does not implement.

Exit status: 0 when ready, 1 when not ready yet (connection refused, timed out, or no
unfenced broker), 2 when the broker sends a response that this probe cannot decode.
"""

from __future__ import annotations

import argparse
import socket
import struct
import sys

API_KEY_METADATA = 3
API_KEY_API_VERSIONS = 18
# Non-flexible Metadata request versions that this probe can encode.
METADATA_MIN_VERSION = 4
METADATA_MAX_VERSION = 8
CLIENT_ID = b"tokensentry-kafka-probe"

EXIT_READY = 0
EXIT_NOT_READY = 1
EXIT_PROTOCOL_ERROR = 2


class ProtocolError(Exception):
    """The broker sent a response that this probe cannot use."""


class Reader:
    """Big-endian decoder over one response body."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0

    def read(self, fmt: str) -> int:
        (value,) = struct.unpack_from(fmt, self.data, self.offset)
        self.offset += struct.calcsize(fmt)
        return value

    def read_string(self) -> str | None:
        length = self.read(">h")
        if length < 0:
            return None
        value = self.data[self.offset : self.offset + length].decode("utf-8")
        self.offset += length
        return value


def receive_exactly(sock: socket.socket, size: int) -> bytes:
    chunks = []
    remaining = size
    while remaining > 0:
        chunk = sock.recv(remaining)
        if not chunk:
            raise ConnectionError("broker closed the connection")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def send_request(sock: socket.socket, api_key: int, api_version: int, correlation_id: int, body: bytes) -> Reader:
    """Send one request with header v1 and return a reader over the response body."""
    header = struct.pack(">hhih", api_key, api_version, correlation_id, len(CLIENT_ID)) + CLIENT_ID
    message = header + body
    sock.sendall(struct.pack(">i", len(message)) + message)

    size = struct.unpack(">i", receive_exactly(sock, 4))[0]
    response = Reader(receive_exactly(sock, size))
    # Response header v0 is the correlation id only. ApiVersions always uses it, and so
    # does every non-flexible version of Metadata.
    if response.read(">i") != correlation_id:
        raise ProtocolError("response correlation id does not match the request")
    return response


def fetch_metadata_version_range(sock: socket.socket) -> tuple[int, int]:
    response = send_request(sock, API_KEY_API_VERSIONS, 0, 1, b"")
    error_code = response.read(">h")
    if error_code != 0:
        raise ProtocolError(f"ApiVersions v0 failed with error code {error_code}")
    for _ in range(response.read(">i")):
        api_key, min_version, max_version = response.read(">h"), response.read(">h"), response.read(">h")
        if api_key == API_KEY_METADATA:
            return min_version, max_version
    raise ProtocolError("broker does not list the Metadata API in its ApiVersions response")


def fetch_brokers(sock: socket.socket, version: int) -> tuple[list[tuple[int, str, int]], str | None]:
    """Send a Metadata request for all topics and return (brokers, cluster id)."""
    body = struct.pack(">ib", -1, 0)  # topics: null array = all topics; allow_auto_topic_creation: false
    if version >= 8:
        body += struct.pack(">bb", 0, 0)  # include cluster and topic authorized operations: false
    response = send_request(sock, API_KEY_METADATA, version, 2, body)

    response.read(">i")  # throttle_time_ms
    brokers = []
    for _ in range(response.read(">i")):
        node_id = response.read(">i")
        host = response.read_string() or ""
        port = response.read(">i")
        response.read_string()  # rack
        brokers.append((node_id, host, port))
    cluster_id = response.read_string()
    return brokers, cluster_id


def probe(host: str, port: int, timeout: float) -> int:
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            min_version, max_version = fetch_metadata_version_range(sock)
            version = max(min_version, METADATA_MIN_VERSION)
            if version > min(max_version, METADATA_MAX_VERSION):
                raise ProtocolError(
                    f"broker supports Metadata v{min_version}-v{max_version}, "
                    f"but this probe only encodes v{METADATA_MIN_VERSION}-v{METADATA_MAX_VERSION}"
                )
            brokers, cluster_id = fetch_brokers(sock, version)
    except OSError as error:  # includes refused connections and timeouts
        print(f"not ready: {host}:{port}: {error}", file=sys.stderr)
        return EXIT_NOT_READY
    except (ProtocolError, struct.error, UnicodeDecodeError) as error:
        print(f"probe failed: {host}:{port}: {error}", file=sys.stderr)
        return EXIT_PROTOCOL_ERROR

    if not brokers:
        print(f"not ready: {host}:{port}: Metadata response lists no unfenced broker", file=sys.stderr)
        return EXIT_NOT_READY

    listed = ", ".join(
        f"node {node_id} at {broker_host}:{broker_port}" for node_id, broker_host, broker_port in brokers
    )
    print(f"ready: cluster id {cluster_id}, Metadata v{version} lists {listed}")
    return EXIT_READY


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="broker host (default: %(default)s)")
    parser.add_argument("--port", type=int, default=9092, help="broker port (default: %(default)s)")
    parser.add_argument(
        "--timeout", type=float, default=3.0, help="connect and read timeout in seconds (default: %(default)s)"
    )
    args = parser.parse_args()
    return probe(args.host, args.port, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
