"""Country facts for the rules: IP-to-country lookup and approximate country centroids.

Country of a request, best first:

1. the country the gateway logged (``country=`` extra field, GeoIP modules);
2. with ``IptoccCountryLookup``, the country a Regional Internet Registry
   assigned the client's address block to, from the ``iptocc`` package
   (MIT or Apache-2.0; its wheel embeds the RIR delegation data, so nothing
   is downloaded at run time). The registry country is where the block was
   assigned, not where it is used: the iptocc documentation cites about 95 %
   agreement with MaxMind for IPv4.

The window stage applies the lookup (``TumblingWindows(country_lookup=...)``)
only to events whose gateway logged no country.

Centroids are rough geographic centres in whole or half degrees, written
for this project. They serve distance estimates for impossible travel,
where errors of a few hundred kilometres do not matter. Codes missing here have
no distance, and travel involving them is never flagged.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from pipeline.errors import ConfigError

logger = logging.getLogger(__name__)

EARTH_RADIUS_KM = 6371.0


class IptoccCountryLookup:
    """Maps client IPs to ISO 3166-1 alpha-2 codes with the ``iptocc`` package, "" when unknown.

    About 10 million addresses per second in batch (iptocc 3.3 on one core);
    invalid and private addresses give "".
    """

    def __init__(self) -> None:
        try:
            import iptocc  # noqa: F401 - checked here so a missing package fails at start-up
        except ImportError:
            raise ConfigError(
                "country lookup 'iptocc' needs the iptocc package; install it with `pip install iptocc` "
                "or set the country lookup to 'log' to use only countries the gateway logs"
            ) from None

    def __call__(self, addresses: np.ndarray) -> np.ndarray:
        from iptocc import country_code

        codes = country_code([str(address) for address in addresses])
        result = np.empty(len(codes), dtype=object)
        result[:] = [code or "" for code in codes]
        return result


def build_country_lookup(source: str) -> IptoccCountryLookup | None:
    """Return the lookup for ``source``: 'log' (None, logged countries only) or 'iptocc'."""
    if source == "log":
        return None
    if source == "iptocc":
        return IptoccCountryLookup()
    raise ConfigError(f"unknown country lookup {source!r}; use 'log' or 'iptocc'")


# ISO code, latitude, longitude (degrees, approximate centre of the country).
_CENTROIDS = """
AD 42.5 1.5|AE 24 54|AF 33 66|AG 17 -62|AL 41 20|AM 40 45|AO -12 18|AR -34 -64|AT 47.5 14|AU -25 134
AZ 40.5 48|BA 44 18|BB 13 -59.5|BD 24 90|BE 50.5 4.5|BF 12 -1.5|BG 43 25|BH 26 50.5|BI -3.5 30|BJ 9.5 2.3
BN 4.5 114.7|BO -17 -65|BR -10 -52|BS 24 -76|BT 27.5 90.5|BW -22 24|BY 53.5 28|BZ 17 -88.7|CA 58 -100
CD -3 23.5|CF 7 21|CG -1 15|CH 47 8|CI 7.5 -5.5|CL -33 -71|CM 6 12|CN 35 104|CO 4 -73|CR 10 -84|CU 21.5 -79
CV 16 -24|CY 35 33|CZ 49.8 15.5|DE 51 10|DJ 11.8 42.6|DK 56 10|DM 15.4 -61.4|DO 19 -70.7|DZ 28 3|EC -1.5 -78
EE 59 25.5|EG 27 30|ER 15 39|ES 40 -4|ET 9 39.5|FI 64 26|FJ -18 178|FR 46.5 2.5|GA -0.8 11.6|GB 54 -2.5
GD 12.1 -61.7|GE 42 43.5|GH 8 -1|GM 13.4 -15.5|GN 10.5 -10.5|GQ 1.6 10.5|GR 39 22|GT 15.5 -90.3|GW 12 -15
GY 5 -59|HK 22.3 114.2|HN 15 -86.5|HR 45 16|HT 19 -72.5|HU 47 19.5|ID -2.5 118|IE 53.2 -8|IL 31.5 35|IN 22 79
IQ 33 44|IR 32.5 54|IS 65 -18.5|IT 42.8 12.5|JM 18.1 -77.3|JO 31 36.5|JP 36.5 138.5|KE 0.5 38|KG 41.5 74.5
KH 12.5 105|KM -12 44|KN 17.3 -62.7|KP 40 127|KR 36.5 128|KW 29.3 47.7|KZ 48 67|LA 18.5 103|LB 33.9 35.8
LC 13.9 -61|LI 47.2 9.5|LK 7.8 80.7|LR 6.5 -9.5|LS -29.5 28.2|LT 55.2 24|LU 49.8 6.1|LV 57 25|LY 27 17
MA 32 -6|MC 43.7 7.4|MD 47 28.5|ME 42.8 19.2|MG -19 47|MK 41.6 21.7|ML 17 -4|MM 21 96|MN 46.8 103|MO 22.2 113.5
MR 20 -10.5|MT 35.9 14.4|MU -20.3 57.6|MV 3.2 73.2|MW -13.5 34|MX 23.5 -102|MY 4 109.5|MZ -18 35.5|NA -22 17
NE 17 9|NG 9.5 8|NI 12.8 -85|NL 52.2 5.5|NO 62 10|NP 28.2 84|NZ -41.5 173|OM 21 57|PA 8.5 -80|PE -9.5 -75
PG -6.5 145|PH 12.5 122|PK 30 70|PL 52 19.5|PR 18.2 -66.5|PS 31.9 35.2|PT 39.5 -8|PY -23 -58|QA 25.3 51.2
RO 46 25|RS 44 20.8|RU 60 95|RW -2 30|SA 24 45|SB -9 160|SC -4.6 55.5|SD 15.5 30|SE 62 15|SG 1.35 103.8
SI 46.1 14.8|SK 48.7 19.5|SL 8.5 -11.8|SM 43.9 12.4|SN 14.5 -14.5|SO 6 46|SR 4 -56|SS 7.5 30|SV 13.8 -88.9
SY 35 38.5|SZ -26.5 31.5|TD 15.5 19|TG 8.5 1|TH 15 101|TJ 38.8 71|TL -8.8 125.9|TM 39 59.5|TN 34 9.5|TO -21.2 -175.2
TR 39 35|TT 10.5 -61.3|TW 23.7 121|TZ -6.5 35|UA 49 32|UG 1.3 32.4|US 39.5 -98.5|UY -33 -56|UZ 41.5 64
VA 41.9 12.45|VC 13.2 -61.2|VE 7 -66|VN 16 107|VU -16 167|WS -13.8 -172|XK 42.6 20.9|YE 15.5 47.5|ZA -29 25
ZM -13.5 27.8|ZW -19 29.8|GL 72 -40|GU 13.45 144.8|RE -21.1 55.5|NC -21.5 165.5|PF -17.7 -149.4|FO 62 -7
GI 36.1 -5.35|IM 54.2 -4.5|JE 49.2 -2.1|GG 49.45 -2.6|BM 32.3 -64.8|KY 19.3 -81.3|AW 12.5 -70|CW 12.2 -69
"""


def _parse_centroids(text: str) -> tuple[pd.Index, np.ndarray]:
    entries = [entry.split() for entry in text.replace("\n", "|").split("|") if entry.strip()]
    codes = pd.Index([code for code, _, _ in entries], dtype=object)
    coordinates = np.radians(np.array([[float(lat), float(lon)] for _, lat, lon in entries]))
    return codes, coordinates


CENTROID_CODES, CENTROID_RADIANS = _parse_centroids(_CENTROIDS)


def country_indices(codes: np.ndarray) -> np.ndarray:
    """Return each code's row in the centroid table, -1 for unknown or empty codes."""
    if len(codes) == 0:
        return np.empty(0, dtype=np.int64)
    return CENTROID_CODES.get_indexer(np.asarray(codes, dtype=object)).astype(np.int64)


def distance_km(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Return great-circle distances between centroid rows, NaN where either row is -1."""
    known = (first >= 0) & (second >= 0)
    a = CENTROID_RADIANS[np.where(known, first, 0)]
    b = CENTROID_RADIANS[np.where(known, second, 0)]
    dlat = b[:, 0] - a[:, 0]
    dlon = b[:, 1] - a[:, 1]
    h = np.sin(dlat / 2) ** 2 + np.cos(a[:, 0]) * np.cos(b[:, 0]) * np.sin(dlon / 2) ** 2
    distance = 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))
    return np.where(known, distance, np.nan)
