"""One subject's audit trail as a timeline: the data behind ``tokensentry explain``.

``load_history`` reads a subject's windows, detections and actions (with
FINAL, so redelivered copies count once) and ``build_timeline`` orders them
in event time. Windows without a detection are folded into runs. So a day
of normal traffic is one line, and a flagged window gets a line of its own,
followed by its detections and the action they led to.

The baseline shown for a window is the one its detectors recorded as
evidence (``expected`` of the ``requests`` feature for ``ewma_rate``). Windows
that no detector flagged have no recorded baseline; ``analysis.baseline``
replays one when it is needed for every window.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import asdict, dataclass, field

import orjson

from pipeline.analysis.timerange import Since, format_span, format_time, iso_time
from pipeline.identity import IP_PREFIX
from pipeline.sinks.clickhouse import AuditStore
from schemas.detections import Severity
from schemas.events import SubjectKind

logger = logging.getLogger(__name__)

DEFAULT_WINDOW_LIMIT = 1000

SUBJECT_KIND_NAMES = {
    SubjectKind.KEY_ID: "key id",
    SubjectKind.TOKEN_HASH: "token hash",
    SubjectKind.CLIENT_IP: "client IP",
}

# Timeline order of entries at the same event time. An action is issued at
# the end of the window that triggered it, which is the start of the next
# window, so it is listed before that next window.
_RANK = {"action": 0, "window": 1, "windows": 1, "detection": 2}


@dataclass(slots=True)
class WindowRecord:
    """One stored window of the subject, with the baseline its detectors recorded (or None)."""

    window_id: int
    start: float
    end: float
    requests: float
    ratio_4xx: float
    ratio_401_403: float
    ratio_429: float
    ratio_5xx: float
    distinct_ips: float
    distinct_networks: float
    distinct_countries: float
    distinct_user_agents: float
    distinct_routes: float
    baseline: float | None = None


@dataclass(slots=True)
class DetectionRecord:
    detection_id: int
    detector: str
    severity: int
    score: float
    threshold: float
    client_ip: str
    window_id: int
    window_start: float
    window_end: float
    explanation: str
    evidence: list[dict]


@dataclass(slots=True)
class ActionRecord:
    action_id: str
    kind: str
    subject: str
    limit_rps: float | None
    issued_at: float
    expires_at: float
    rule: str
    policy_version: str
    dry_run: bool
    origin: str
    reason: str
    reasons: list[dict]
    receipts: int = 0
    first_applied_at: float | None = None


@dataclass(slots=True)
class SubjectHistory:
    """The stored records of one subject from ``start`` on.

    ``windows`` are the newest ``limit`` windows in time order; when there
    were more (``windows_total``), ``start`` moves up to the first one kept,
    so detections and actions cover the same span as the windows shown.
    """

    subject_id: str
    subject_kind: int | None
    account: str
    start: float
    latest: float
    since: Since
    windows_total: int
    windows: list[WindowRecord] = field(default_factory=list)
    detections: list[DetectionRecord] = field(default_factory=list)
    actions: list[ActionRecord] = field(default_factory=list)

    @property
    def truncated(self) -> bool:
        return self.windows_total > len(self.windows)

    @property
    def empty(self) -> bool:
        return not (self.windows or self.detections or self.actions)


@dataclass(slots=True)
class SubjectPresence:
    """Whether a subject has any stored record, and the newest event time among them."""

    windows: int
    detections: int
    actions: int
    latest: float
    subject_kind: int | None
    account: str

    @property
    def found(self) -> bool:
        return bool(self.windows or self.detections or self.actions)


@dataclass(slots=True)
class TimelineEntry:
    """One line of the timeline: a run of quiet windows, a flagged window, a detection or an action."""

    time: float
    kind: str
    text: str
    end: float | None = None


def action_subjects(subject_id: str) -> list[str]:
    """Return the values of ``actions.subject`` that target ``subject_id``.

    Client actions target the bare address or its network, so ``ip:<addr>``
    also matches ``<addr>``.
    """
    if subject_id.startswith(IP_PREFIX):
        return [subject_id, subject_id[len(IP_PREFIX) :]]
    return [subject_id]


_PRESENCE_SQL = """
SELECT 'windows', count(), max(toUnixTimestamp64Milli(window_end)), any(subject_kind), any(account)
FROM windows WHERE subject_id = {subject:String}
UNION ALL
SELECT 'detections', count(), max(toUnixTimestamp64Milli(window_end)), any(subject_kind), any(account)
FROM detections WHERE subject_id = {subject:String}
UNION ALL
SELECT 'actions', count(), max(toUnixTimestamp64Milli(issued_at)), toUInt8(255), any(account)
FROM actions WHERE has({subjects:Array(String)}, subject) OR token_id = {subject:String}
"""


def find_subject(store: AuditStore, subject_id: str) -> SubjectPresence:
    """Count the subject's stored windows, detections and actions and find its newest time."""
    _, rows = store.query(_PRESENCE_SQL, parameters={"subject": subject_id, "subjects": action_subjects(subject_id)})
    counts: dict[str, int] = {}
    latest = 0.0
    kind: int | None = None
    account = ""
    for source, count, latest_ms, subject_kind, subject_account in rows:
        counts[source] = int(count)
        if not count:
            continue
        latest = max(latest, latest_ms / 1000.0)
        if kind is None and source != "actions":
            kind = int(subject_kind)
        account = account or subject_account
    return SubjectPresence(
        windows=counts.get("windows", 0),
        detections=counts.get("detections", 0),
        actions=counts.get("actions", 0),
        latest=latest,
        subject_kind=kind,
        account=account,
    )


_WINDOWS_SQL = """
SELECT window_id, toUnixTimestamp64Milli(window_start), toUnixTimestamp64Milli(window_end),
       requests, ratio_4xx, ratio_401_403, ratio_429, ratio_5xx,
       distinct_ips, distinct_networks, distinct_countries, distinct_user_agents, distinct_routes
FROM windows FINAL
WHERE subject_id = {subject:String} AND window_start >= fromUnixTimestamp64Milli({start_ms:Int64}, 'UTC')
ORDER BY window_start DESC
LIMIT {limit:UInt64}
"""

_WINDOW_COUNT_SQL = """
SELECT count() FROM windows FINAL
WHERE subject_id = {subject:String} AND window_start >= fromUnixTimestamp64Milli({start_ms:Int64}, 'UTC')
"""

_DETECTIONS_SQL = """
SELECT detection_id, detector, severity, score, threshold, client_ip, window_id,
       toUnixTimestamp64Milli(window_start), toUnixTimestamp64Milli(window_end), explanation, evidence
FROM detections FINAL
WHERE subject_id = {subject:String} AND window_start >= fromUnixTimestamp64Milli({start_ms:Int64}, 'UTC')
ORDER BY window_start, detector
"""

# An action belongs to the subject when it targets it, or when one of its
# reasons is one of the subject's detections (a client action taken on a
# token's findings).
_ACTIONS_SQL = """
SELECT action_id, kind, subject, limit_rps, toUnixTimestamp64Milli(issued_at), toUnixTimestamp64Milli(expires_at),
       rule, policy_version, dry_run, origin, reason, reasons
FROM actions FINAL
WHERE issued_at >= fromUnixTimestamp64Milli({start_ms:Int64}, 'UTC')
  AND (has({subjects:Array(String)}, subject) OR token_id = {subject:String}
       OR hasAny(arrayMap(r -> JSONExtractUInt(r, 'detection_id'), JSONExtractArrayRaw(reasons)),
                 {detection_ids:Array(UInt64)}))
ORDER BY issued_at, action_id
"""

_RECEIPTS_SQL = """
SELECT action_id, count(), min(toUnixTimestamp64Milli(applied_at))
FROM receipts FINAL
WHERE has({action_ids:Array(String)}, action_id)
GROUP BY action_id
"""


def load_history(
    store: AuditStore,
    subject_id: str,
    presence: SubjectPresence,
    since: Since,
    limit: int = DEFAULT_WINDOW_LIMIT,
    with_receipts: bool = True,
) -> SubjectHistory:
    """Read the subject's windows (the newest ``limit``), detections and actions from ``since`` on."""
    start = since.start(presence.latest)
    parameters = {"subject": subject_id, "start_ms": int(start * 1000)}
    _, count_rows = store.query(_WINDOW_COUNT_SQL, parameters=parameters)
    windows_total = int(count_rows[0][0])
    _, window_rows = store.query(_WINDOWS_SQL, parameters={**parameters, "limit": limit})
    windows = [_window_record(row) for row in reversed(window_rows)]
    if windows_total > len(windows) and windows:
        start = windows[0].start
        parameters["start_ms"] = int(start * 1000)

    _, detection_rows = store.query(_DETECTIONS_SQL, parameters=parameters)
    detections = [_detection_record(row) for row in detection_rows]
    _, action_rows = store.query(
        _ACTIONS_SQL,
        parameters={
            **parameters,
            "subjects": action_subjects(subject_id),
            "detection_ids": [d.detection_id for d in detections],
        },
    )
    actions = [_action_record(row) for row in action_rows]
    if with_receipts and actions:
        _add_receipts(store, actions)

    _attach_baselines(windows, detections)
    return SubjectHistory(
        subject_id=subject_id,
        subject_kind=presence.subject_kind,
        account=presence.account,
        start=start,
        latest=presence.latest,
        since=since,
        windows_total=windows_total,
        windows=windows,
        detections=detections,
        actions=actions,
    )


def _window_record(row: tuple) -> WindowRecord:
    window_id, start_ms, end_ms, *features = row
    return WindowRecord(int(window_id), start_ms / 1000.0, end_ms / 1000.0, *(float(value) for value in features))


def _detection_record(row: tuple) -> DetectionRecord:
    (detection_id, detector, severity, score, threshold, client_ip, window_id,
     start_ms, end_ms, explanation, evidence) = row  # fmt: skip
    return DetectionRecord(
        detection_id=int(detection_id),
        detector=detector,
        severity=int(severity),
        score=float(score),
        threshold=float(threshold),
        client_ip=client_ip,
        window_id=int(window_id),
        window_start=start_ms / 1000.0,
        window_end=end_ms / 1000.0,
        explanation=explanation,
        evidence=_json_list(evidence),
    )


def _action_record(row: tuple) -> ActionRecord:
    (action_id, kind, subject, limit_rps, issued_ms, expires_ms, rule, policy_version,
     dry_run, origin, reason, reasons) = row  # fmt: skip
    return ActionRecord(
        action_id=action_id,
        kind=kind,
        subject=subject,
        limit_rps=None if limit_rps is None else float(limit_rps),
        issued_at=issued_ms / 1000.0,
        expires_at=expires_ms / 1000.0,
        rule=rule,
        policy_version=policy_version,
        dry_run=bool(dry_run),
        origin=origin,
        reason=reason,
        reasons=_json_list(reasons),
    )


def _json_list(text: str) -> list[dict]:
    try:
        value = orjson.loads(text) if text else []
    except orjson.JSONDecodeError:
        logger.warning("Stored JSON column is not valid JSON, shown as empty: %.80r", text)
        return []
    return value if isinstance(value, list) else []


def _add_receipts(store: AuditStore, actions: list[ActionRecord]) -> None:
    _, rows = store.query(_RECEIPTS_SQL, parameters={"action_ids": [action.action_id for action in actions]})
    found = {action_id: (int(count), first_ms / 1000.0) for action_id, count, first_ms in rows}
    for action in actions:
        if action.action_id in found:
            action.receipts, action.first_applied_at = found[action.action_id]


def _attach_baselines(windows: list[WindowRecord], detections: list[DetectionRecord]) -> None:
    """Set each window's baseline from the ``requests`` evidence its detections recorded."""
    recorded: dict[int, float] = {}
    for detection in detections:
        for evidence in detection.evidence:
            if evidence.get("feature") == "requests" and evidence.get("expected") is not None:
                recorded[detection.window_id] = float(evidence["expected"])
    for window in windows:
        window.baseline = recorded.get(window.window_id)


# ---- the timeline --------------------------------------------------------


def build_timeline(history: SubjectHistory) -> list[TimelineEntry]:
    """Order windows, detections and actions in event time, folding quiet windows into runs."""
    flagged = {detection.window_id for detection in history.detections}
    items: list[tuple[float, int, str, object]] = []
    for window in history.windows:
        kind = "window" if window.window_id in flagged else "quiet"
        items.append((window.start, _RANK["window"], kind, window))
    for detection in history.detections:
        items.append((detection.window_start, _RANK["detection"], "detection", detection))
    for action in history.actions:
        items.append((action.issued_at, _RANK["action"], "action", action))
    items.sort(key=lambda item: (item[0], item[1]))

    entries: list[TimelineEntry] = []
    run: list[WindowRecord] = []
    for _, _, kind, record in items:
        if kind == "quiet":
            run.append(record)  # type: ignore[arg-type]
            continue
        if run:
            entries.append(_run_entry(run))
            run = []
        if kind == "window":
            entries.append(_window_entry(record))  # type: ignore[arg-type]
        elif kind == "detection":
            entries.append(_detection_entry(record))  # type: ignore[arg-type]
        else:
            entries.append(_action_entry(record))  # type: ignore[arg-type]
    if run:
        entries.append(_run_entry(run))
    return entries


def plural(count: float, noun: str, nouns: str | None = None) -> str:
    """Return ``"1 window"`` or ``"3 windows"``, the count without decimals."""
    return f"{count:.0f} {noun}" if count == 1 else f"{count:.0f} {nouns or noun + 's'}"


def _percent(ratio: float) -> str:
    return f"{ratio * 100:.0f}%"


def _run_entry(run: list[WindowRecord]) -> TimelineEntry:
    first, last = run[0], run[-1]
    size = first.end - first.start
    slots = int(round((last.end - first.start) / size)) if size > 0 else len(run)
    requests = [window.requests for window in run]
    active = f"{len(run)} windows" if len(run) == slots else f"{len(run)} of {slots} windows active"
    text = (
        f"{active} over {format_span(last.end - first.start)}, no detections: "
        f"{_range(requests)} requests per window (mean {sum(requests) / len(run):.1f}), "
        f"4xx up to {_percent(max(w.ratio_4xx for w in run))}, 5xx up to {_percent(max(w.ratio_5xx for w in run))}, "
        f"up to {plural(max(w.distinct_ips for w in run), 'IP')} and "
        f"{plural(max(w.distinct_countries for w in run), 'country', 'countries')}"
    )
    return TimelineEntry(time=first.start, end=last.end, kind="windows", text=text)


def _range(values: list[float]) -> str:
    low, high = min(values), max(values)
    return f"{low:.0f}" if low == high else f"{low:.0f}-{high:.0f}"


def _window_entry(window: WindowRecord) -> TimelineEntry:
    size = window.end - window.start
    rate = window.requests / size if size > 0 else 0.0
    parts = [f"{window.requests:.0f} requests ({rate:.1f}/s)"]
    if window.baseline is not None:
        parts[0] += f" against a baseline of {window.baseline:.1f}"
    errors = f"4xx {_percent(window.ratio_4xx)}, 5xx {_percent(window.ratio_5xx)}"
    if window.ratio_401_403:
        errors += f", 401/403 {_percent(window.ratio_401_403)}"
    if window.ratio_429:
        errors += f", 429 {_percent(window.ratio_429)}"
    parts.append(errors)
    parts.append(
        f"{plural(window.distinct_ips, 'IP')} in {plural(window.distinct_networks, 'network')}, "
        f"{plural(window.distinct_countries, 'country', 'countries')}, "
        f"{plural(window.distinct_user_agents, 'user agent')}, {plural(window.distinct_routes, 'route')}"
    )
    return TimelineEntry(time=window.start, end=window.end, kind="window", text="window: " + "; ".join(parts))


def severity_name(severity: int) -> str:
    try:
        return Severity(severity).name.lower()
    except ValueError:
        return str(severity)


def _detection_entry(detection: DetectionRecord) -> TimelineEntry:
    scope = f" for client {detection.client_ip}" if detection.client_ip else ""
    text = (
        f"detection {detection.detector}{scope}, {severity_name(detection.severity)}, "
        f"score {detection.score:.2f} (threshold {detection.threshold:g}): {detection.explanation}"
    )
    return TimelineEntry(time=detection.window_start, end=detection.window_end, kind="detection", text=text)


def _action_entry(action: ActionRecord) -> TimelineEntry:
    head = f"action {action.kind}"
    if action.subject:
        head += f" {action.subject}"
    if action.limit_rps is not None:
        head += f" to {action.limit_rps:g} requests/s"
    if action.expires_at > 0:
        head += f" until {format_time(action.expires_at)}"
    details = [f"rule {action.rule or '-'}", f"policy {action.policy_version or '-'}"]
    if action.origin != "pipeline":
        details.append(f"origin {action.origin}")
    if action.dry_run:
        details.append("dry run, not published")
    if action.receipts:
        details.append(f"applied by {action.receipts} agents, first at {format_time(action.first_applied_at or 0.0)}")
    return TimelineEntry(
        time=action.issued_at,
        kind="action",
        text=f"{head} ({', '.join(details)}): {summarize_reasons(action)}",
    )


def summarize_reasons(action: ActionRecord) -> str:
    """Return the action's reasons as one line, each distinct explanation once with its count."""
    explanations = [str(reason.get("explanation", "")) for reason in action.reasons if reason.get("explanation")]
    return join_explanations(explanations) or action.reason


def join_explanations(explanations: list[str]) -> str:
    """Join explanations with "; ", each distinct one once and followed by "(xN)" when repeated."""
    counts = Counter(explanations)
    return "; ".join(text if count == 1 else f"{text} (x{count})" for text, count in counts.items())


# ---- output --------------------------------------------------------------


def subject_kind_name(kind: int | None) -> str:
    if kind is None:
        return "unknown kind"
    try:
        return SUBJECT_KIND_NAMES[SubjectKind(kind)]
    except ValueError:
        return f"kind {kind}"


def render_text(history: SubjectHistory, entries: list[TimelineEntry]) -> str:
    """Render the header, one line per timeline entry and the notes, as plain text."""
    account = f", account {history.account}" if history.account else ""
    first = entries[0].time if entries else history.start
    scope = history.since.describe() + (" of its stored history" if history.since.span_s is not None else "")
    lines = [
        f"{history.subject_id} ({subject_kind_name(history.subject_kind)}{account})",
        f"{plural(len(history.windows), 'window')}, {plural(len(history.detections), 'detection')} and "
        f"{plural(len(history.actions), 'action')} from {format_time(first)} to {format_time(history.latest)} "
        f"({scope}), times in UTC",
        "",
    ]
    for entry in entries:
        when = format_time(entry.time)
        if entry.kind == "windows" and entry.end is not None:
            when = f"{when} - {format_time(entry.end)}"
        lines.append(f"{when}  {entry.text}")
    if history.truncated:
        lines.append("")
        lines.append(
            f"Showing the newest {len(history.windows)} of {history.windows_total} windows; "
            f"pass --limit {history.windows_total} or a shorter --since to see them all."
        )
    return "\n".join(lines) + "\n"


def to_json(history: SubjectHistory, entries: list[TimelineEntry]) -> dict:
    """Return the history and its timeline as JSON-ready data, times in ISO 8601 UTC."""
    return {
        "subject_id": history.subject_id,
        "subject_kind": subject_kind_name(history.subject_kind),
        "account": history.account,
        "start": iso_time(history.start),
        "latest": iso_time(history.latest),
        "windows_total": history.windows_total,
        "windows_shown": len(history.windows),
        "windows": [_times_to_iso(asdict(window), ("start", "end")) for window in history.windows],
        "detections": [_times_to_iso(asdict(d), ("window_start", "window_end")) for d in history.detections],
        "actions": [_action_json(action) for action in history.actions],
        "timeline": [
            {
                "time": iso_time(entry.time),
                "end": iso_time(entry.end) if entry.end is not None else None,
                "kind": entry.kind,
                "text": entry.text,
            }
            for entry in entries
        ],
    }


def _action_json(action: ActionRecord) -> dict:
    data = _times_to_iso(asdict(action), ("issued_at",))
    data["expires_at"] = iso_time(action.expires_at) if action.expires_at > 0 else None
    data["first_applied_at"] = iso_time(action.first_applied_at) if action.first_applied_at else None
    return data


def _times_to_iso(data: dict, names: tuple[str, ...]) -> dict:
    for name in names:
        data[name] = iso_time(data[name])
    return data
