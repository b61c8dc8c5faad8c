"""The analyst workflow on top of the audit store.

- ``access``: open the store for reading and check that its tables exist.
- ``timerange``: ``--since`` values and UTC time formatting.
- ``timeline``: one token's windows, detections and actions as a timeline
  (``tokensentry explain``).
- ``baseline``: a token's EWMA baseline replayed from its stored windows.
- ``backtest``: stored windows replayed through the detectors and a
  candidate policy, compared with the stored actions (``tokensentry backtest``).
- ``sizes``: stored bytes per table, per event and per detection
  (``tokensentry store size``).

Every module here only reads the store.
"""
