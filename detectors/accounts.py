"""Per-account aggregates of token windows, so abuse spread over many tokens of one account is seen as one.

A token's account is its registry ``account``, else the account the gateway
logged (consumer or user). Token windows of one account and one window
start are summed into one account window. Distinct IPs and countries come
from the batch's pair tables, so an address used by two tokens of the
account counts once. Requests without a credential have no account.

All windows of one window start close in the same batch (the window stage
closes every window ending before the watermark at once), so aggregating
within a batch sees every token of the account.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from detectors.base import DetectionContext, registry_rows
from pipeline.windows import WindowBatch, window_ids
from schemas.detections import ACCOUNT_PREFIX, ACCOUNT_SUBJECT_KIND
from schemas.events import SubjectKind

ACCOUNT_FEATURES: tuple[str, ...] = (
    "requests",
    "failures_401_403",
    "tokens",
    "distinct_ips",
    "distinct_countries",
)
ACCOUNT_FEATURE_INDEX = {name: i for i, name in enumerate(ACCOUNT_FEATURES)}


@dataclass(slots=True)
class AccountWindows:
    """Account aggregates of one batch; ``keys`` has the window key columns plus ``plan``.

    ``subject_id`` is ``account:<name>`` and ``subject_kind`` is
    ``ACCOUNT_SUBJECT_KIND``, so detections are built as for token windows.
    """

    keys: dict[str, np.ndarray]
    features: np.ndarray

    @property
    def size(self) -> int:
        return int(self.features.shape[0])

    def feature(self, name: str) -> np.ndarray:
        return self.features[:, ACCOUNT_FEATURE_INDEX[name]]


def account_windows(windows: WindowBatch, context: DetectionContext) -> AccountWindows | None:
    """Return the batch's account aggregates (computed once per batch), or None when no window has an account."""
    key = ("account_windows", context.tokens.version, id(context.tokens))
    if key not in windows.cache:
        windows.cache[key] = _aggregate(windows, context)
    return windows.cache[key]


def _aggregate(windows: WindowBatch, context: DetectionContext) -> AccountWindows | None:
    if windows.size == 0:
        return None
    tokens = context.tokens
    rows = registry_rows(windows, context)
    accounts = windows.keys["account"].copy()
    known = np.flatnonzero(rows >= 0)
    if len(known):
        registered = tokens.account[rows[known]]
        accounts[known] = np.where(registered != "", registered, accounts[known])
    usable = (accounts != "") & (windows.keys["subject_kind"] != SubjectKind.CLIENT_IP)
    if not usable.any():
        return None
    account_codes, names = pd.factorize(accounts, use_na_sentinel=False)
    start_codes, starts = pd.factorize(windows.keys["window_start"], use_na_sentinel=False)
    combined = np.where(usable, start_codes.astype(np.int64) * len(names) + account_codes, -1)
    group_of_row = np.full(windows.size, -1, dtype=np.int64)
    group, group_keys = pd.factorize(combined[usable], sort=True)
    group_of_row[usable] = group
    n_groups = len(group_keys)

    requests = windows.feature("requests")[usable]
    features = np.zeros((n_groups, len(ACCOUNT_FEATURES)))
    features[:, 0] = np.bincount(group, weights=requests, minlength=n_groups)
    features[:, 1] = np.bincount(
        group, weights=requests * windows.feature("ratio_401_403")[usable], minlength=n_groups
    )
    features[:, 2] = np.bincount(group, minlength=n_groups)
    if windows.pairs is not None:
        features[:, 3] = _distinct_in_groups(windows.pairs["client_ip"], group_of_row, n_groups, skip_empty=False)
        features[:, 4] = _distinct_in_groups(windows.pairs["country"], group_of_row, n_groups, skip_empty=True)

    names = np.asarray(names, dtype=object)
    account_of_group = names[group_keys % len(names)]
    start_of_group = np.asarray(starts, dtype=np.float64)[group_keys // len(names)]
    size = windows.keys["window_end"] - windows.keys["window_start"]
    end_of_group = start_of_group + float(size[0])
    first_offset = np.full(n_groups, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first_offset, group, windows.keys["first_offset"][usable])
    last_offset = np.full(n_groups, np.iinfo(np.int64).min, dtype=np.int64)
    np.maximum.at(last_offset, group, windows.keys["last_offset"][usable])
    plan = np.full(n_groups, "", dtype=object)
    registered_rows = np.flatnonzero(usable & (rows >= 0))
    if len(registered_rows):
        plan[group_of_row[registered_rows]] = tokens.plan[rows[registered_rows]]
    subject_ids = np.array([ACCOUNT_PREFIX + name for name in account_of_group], dtype=object)
    keys = {
        "window_id": window_ids(subject_ids, start_of_group),
        "subject_id": subject_ids,
        "subject_kind": np.full(n_groups, ACCOUNT_SUBJECT_KIND, dtype=np.uint8),
        "account": account_of_group,
        "window_start": start_of_group,
        "window_end": end_of_group,
        "first_offset": first_offset,
        "last_offset": last_offset,
        "plan": plan,
    }
    return AccountWindows(keys=keys, features=features)


def _distinct_in_groups(table, group_of_row: np.ndarray, n_groups: int, skip_empty: bool) -> np.ndarray:
    """Count distinct pair values per account group."""
    groups = group_of_row[table.rows]
    keep = groups >= 0
    if skip_empty:
        keep &= table.values != ""
    if not keep.any():
        return np.zeros(n_groups)
    codes, uniques = pd.factorize(table.values[keep], use_na_sentinel=False)
    width = max(len(uniques), 1)
    pairs = pd.unique(groups[keep] * width + codes)
    return np.bincount(pairs // width, minlength=n_groups).astype(np.float64)
