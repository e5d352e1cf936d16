"""Price data: JEPX spot CSV importer, plain price CSV importer/writer, synthetic prices.

JEPX spot file ``spot_<FY>.csv`` (user-downloaded; cp932; one row per
delivery date x 30-min slot).  Columns are found **by name** (after Unicode
NFKC normalisation, so full-width brackets match), never by position:

==============================  ================================  =======
JEPX column                     output column                     unit
==============================  ================================  =======
受渡日 (older files: 年月日)      index ``timestamp`` (slot start)  JST
時刻コード                        slot 1..48 -> (k-1) x 30 min      --
売り入札量(kWh)                   ``sell_bid_kwh`` (optional)        kWh
買い入札量(kWh)                   ``buy_bid_kwh`` (optional)         kWh
約定総量(kWh)                     ``contract_kwh`` (optional)        kWh
システムプライス(円/kWh)           ``system_price_jpy_per_kwh``       JPY/kWh
エリアプライス北海道(円/kWh) ...    ``hokkaido_price_jpy_per_kwh`` ... JPY/kWh
==============================  ================================  =======

Plain price CSV (documented format, UTF-8)::

    timestamp,price_jpy_per_kwh[,export_price_jpy_per_kwh]
    2026-04-01T00:00:00+09:00,12.3

``timestamp`` is ISO 8601, the *start* of the interval the price holds for;
timestamps without an offset are read in ``tz`` (default Asia/Tokyo).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

from cps_sim.core.errors import CpsSimError

JEPX_FLOOR_JPY_PER_KWH = 0.01  # JEPX spot minimum price

JEPX_DATE_COLUMNS = ("受渡日", "年月日")
JEPX_SLOT_COLUMN = "時刻コード"
JEPX_SYSTEM_COLUMN = "システムプライス(円/kWh)"
JEPX_AREAS = {  # JEPX area name -> output prefix (Okinawa is not in JEPX)
    "北海道": "hokkaido",
    "東北": "tohoku",
    "東京": "tokyo",
    "中部": "chubu",
    "北陸": "hokuriku",
    "関西": "kansai",
    "中国": "chugoku",
    "四国": "shikoku",
    "九州": "kyushu",
}
JEPX_VOLUME_COLUMNS = {
    "売り入札量(kWh)": "sell_bid_kwh",
    "買い入札量(kWh)": "buy_bid_kwh",
    "約定総量(kWh)": "contract_kwh",
}
AREA_NAMES = ("system", *JEPX_AREAS.values())


class PriceDataError(CpsSimError):
    """A price file cannot be used; the message names the file and the problem."""

    exit_code = 2  # bad input, as every data-file error


def _norm(name: str) -> str:
    return unicodedata.normalize("NFKC", str(name)).strip().replace(" ", "").lstrip("\ufeff")


def read_jepx_spot(
    path: str | Path,
    encoding: str = "cp932",
    tz: str = "Asia/Tokyo",
    areas: tuple[str, ...] = AREA_NAMES,
) -> pd.DataFrame:
    """Read a JEPX spot-market CSV into a DataFrame indexed by slot-start timestamps.

    Parameters
    ----------
    path : str or Path
        ``spot_<FY>.csv`` as downloaded from JEPX (or a file with the same headers).
    encoding : str
        File encoding; JEPX publishes cp932 (Shift_JIS superset).
    tz : str
        Time zone of the delivery dates (JST).
    areas : tuple of str
        Which prices to return (``"system"`` and/or area names such as ``"tokyo"``).

    Returns
    -------
    pandas.DataFrame
        Index ``timestamp`` (tz-aware, start of each 30-min slot); columns
        ``<area>_price_jpy_per_kwh`` and, where present, the bid/contract volumes.

    Raises
    ------
    PriceDataError
        When the file cannot be decoded, a needed column is missing, or a slot
        code is outside 1..48 or duplicated.
    """
    path = Path(path)
    try:
        raw = pd.read_csv(
            path, encoding=encoding, dtype=str, skipinitialspace=True, skip_blank_lines=False
        )
    except UnicodeDecodeError as exc:
        raise PriceDataError(
            f"{path}: cannot decode as {encoding} ({exc.reason} at byte {exc.start})"
        ) from None
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise PriceDataError(f"{path}: cannot read CSV: {exc}") from None
    cols = {_norm(c): c for c in raw.columns}
    found = ", ".join(cols) or "(none)"

    def need(*names: str) -> str:
        for n in names:
            if _norm(n) in cols:
                return cols[_norm(n)]
        raise PriceDataError(
            f"{path}: missing column {' or '.join(repr(n) for n in names)} (columns found: {found})"
        )

    date_col = need(*JEPX_DATE_COLUMNS)
    slot_col = need(JEPX_SLOT_COLUMN)
    want = {
        "system": JEPX_SYSTEM_COLUMN,
        **{v: f"エリアプライス{k}(円/kWh)" for k, v in JEPX_AREAS.items()},
    }
    unknown = set(areas) - set(want)
    if unknown:
        raise ValueError(f"unknown JEPX area(s) {sorted(unknown)}; known: {list(want)}")
    raw = raw.dropna(how="all")
    dates = pd.to_datetime(
        raw[date_col].str.strip(), format="mixed", yearfirst=True, errors="coerce"
    )
    if dates.isna().any():  # the index labels are data-row numbers: line = label + 2
        row = int(np.argmax(dates.isna().to_numpy()))
        raise PriceDataError(
            f"{path}:{raw.index[row] + 2}: column {date_col!r}: bad date "
            f"{raw[date_col].iloc[row]!r}"
        )
    slot = pd.to_numeric(raw[slot_col], errors="coerce").to_numpy()
    bad = ~np.isfinite(slot) | (slot < 1) | (slot > 48) | (slot != np.round(slot))
    if bad.any():
        row = int(np.argmax(bad))
        raise PriceDataError(
            f"{path}:{raw.index[row] + 2}: column {slot_col!r}: must be "
            f"1..48, got {raw[slot_col].iloc[row]!r}"
        )
    ts = (pd.DatetimeIndex(dates) + pd.to_timedelta((slot - 1) * 30, unit="min")).tz_localize(tz)
    out = pd.DataFrame(index=pd.DatetimeIndex(ts, name="timestamp"))
    for area in areas:
        col = need(want[area])
        vals = pd.to_numeric(raw[col].str.replace(",", ""), errors="coerce").to_numpy()
        if np.isnan(vals).any():
            row = int(np.argmax(np.isnan(vals)))
            raise PriceDataError(
                f"{path}:{raw.index[row] + 2}: column {col!r}: not a number: {raw[col].iloc[row]!r}"
            )
        out[f"{area}_price_jpy_per_kwh"] = vals
    for jp, name in JEPX_VOLUME_COLUMNS.items():
        if _norm(jp) in cols:
            out[name] = pd.to_numeric(
                raw[cols[_norm(jp)]].str.replace(",", ""), errors="coerce"
            ).to_numpy()
    if out.index.has_duplicates:
        raise PriceDataError(f"{path}: duplicate slot {out.index[out.index.duplicated()][0]}")
    out = out.sort_index()
    check_series_index(out.index, path)
    return out


def read_price_csv(
    path: str | Path, tz: str = "Asia/Tokyo", value: str = "price_jpy_per_kwh"
) -> pd.DataFrame:
    """Read a plain price CSV (``timestamp,price_jpy_per_kwh[,export_price_jpy_per_kwh]``).

    Returns a DataFrame indexed by tz-aware ``timestamp`` (converted to ``tz``)
    with float price columns; extra columns are kept as they are.  ``value``
    names the required value column (the same format carries other per-slot
    series, e.g. ``net_import_kwh`` plans).  The rows must be evenly spaced
    (:func:`check_series_index`).
    """
    path = Path(path)
    try:
        raw = pd.read_csv(path, encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise PriceDataError(f"{path}: cannot read CSV: {exc}") from None
    for col in ("timestamp", value):
        if col not in raw.columns:
            raise PriceDataError(
                f"{path}: missing column {col!r} (columns found: "
                f"{', '.join(map(str, raw.columns))})"
            )
    text = raw["timestamp"].astype(str).str.strip()
    aware = text.str.contains(r"(?:[+-]\d\d:?\d\d|Z)$", regex=True).to_numpy()
    ts = pd.Series(pd.NaT, index=raw.index, dtype=f"datetime64[ns, {tz}]")
    if aware.any():
        ts[aware] = pd.to_datetime(
            text[aware], format="ISO8601", errors="coerce", utc=True
        ).dt.tz_convert(tz)
    if (~aware).any():
        ts[~aware] = pd.to_datetime(text[~aware], format="ISO8601", errors="coerce").dt.tz_localize(
            tz
        )
    if ts.isna().any():
        row = int(np.argmax(ts.isna().to_numpy()))
        raise PriceDataError(f"{path}: row {row + 2}: bad timestamp {raw['timestamp'].iloc[row]!r}")
    idx = pd.DatetimeIndex(ts)
    out = raw.drop(columns="timestamp").set_index(pd.DatetimeIndex(idx, name="timestamp"))
    for col in [c for c in out.columns if c.endswith("_jpy_per_kwh") or c == value]:
        vals = pd.to_numeric(out[col], errors="coerce")
        if vals.isna().any():
            row = int(np.argmax(vals.isna().to_numpy()))
            raise PriceDataError(f"{path}: row {row + 2}: column {col!r}: not a number")
        out[col] = vals.astype(float)
    if out.index.has_duplicates:
        raise PriceDataError(f"{path}: duplicate timestamp {out.index[out.index.duplicated()][0]}")
    out = out.sort_index()
    check_series_index(out.index, path)
    return out


def check_series_index(index: pd.DatetimeIndex, path: str | Path, what: str = "rows") -> None:
    """A time series file must have rows, evenly spaced (sorted index; no gap).

    Raises :class:`PriceDataError` naming the file and the first gap.
    """
    if len(index) == 0:
        raise PriceDataError(f"{path}: no data rows (only a header)")
    if len(index) < 2:
        return
    steps = np.diff(index.asi8)
    step = int(steps.min())
    bad = np.flatnonzero(steps != step)
    if bad.size:
        i = int(bad[0])
        raise PriceDataError(
            f"{path}: gap in the {what}: {index[i]} is followed by {index[i + 1]}, but the "
            f"step is {pd.Timedelta(step)} ({bad.size} irregular step(s)); fill the missing "
            "rows"
        )


def write_price_csv(prices: pd.Series | pd.DataFrame, path: str | Path) -> None:
    """Write prices in the plain CSV format (ISO 8601 timestamps with offset)."""
    df = prices.to_frame("price_jpy_per_kwh") if isinstance(prices, pd.Series) else prices
    out = df.copy()
    out.insert(0, "timestamp", [t.isoformat() for t in df.index])
    out.to_csv(path, index=False)


# --------------------------------------------------------------------------- synthetic prices

# ASSUMPTIONS (not from the seed): JEPX system prices were of order 10-15 JPY/kWh on average
# in FY2023-FY2024, near the 0.01 floor at spring midday in PV-rich areas, and 20-30 at
# evening peaks.  These defaults reproduce that shape; calibrate them to your data.
ASSUMED_BASE_JPY_PER_KWH = 12.0
ASSUMED_SLOPE_JPY_PER_KWH = 10.0
ASSUMED_AR1_PHI = 0.8
ASSUMED_NOISE_SIGMA_JPY_PER_KWH = 1.5


@dataclass(frozen=True)
class SyntheticPriceParams:
    """``price = base + slope * net_load / reference + AR(1) noise``, floored.

    ``reference_w`` None means the largest absolute net load of the series,
    so ``net_load / reference`` lies in [-1, 1].  The AR(1) noise has the
    stationary standard deviation ``noise_sigma_jpy_per_kwh``.
    """

    base_jpy_per_kwh: float = ASSUMED_BASE_JPY_PER_KWH
    slope_jpy_per_kwh: float = ASSUMED_SLOPE_JPY_PER_KWH
    ar1_phi: float = ASSUMED_AR1_PHI
    noise_sigma_jpy_per_kwh: float = ASSUMED_NOISE_SIGMA_JPY_PER_KWH
    floor_jpy_per_kwh: float = JEPX_FLOOR_JPY_PER_KWH
    reference_w: float | None = None

    def __post_init__(self) -> None:
        if not -1 < self.ar1_phi < 1:
            raise ValueError(f"ar1_phi must be in (-1, 1), got {self.ar1_phi}")
        if self.noise_sigma_jpy_per_kwh < 0:
            raise ValueError("noise_sigma_jpy_per_kwh must be >= 0")


def ar1_noise(n: int, phi: float, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Stationary AR(1) series ``e[t] = phi e[t-1] + sqrt(1-phi^2) sigma z[t]``, std ``sigma``."""
    z = rng.standard_normal(n) * sigma
    z[1:] *= np.sqrt(1.0 - phi * phi)
    if n == 0 or phi == 0:
        return z
    # linear recursion via scipy's IIR filter (vectorised): y[t] = z[t] + phi*y[t-1]
    from scipy.signal import lfilter

    return lfilter([1.0], [1.0, -phi], z)


def synthetic_day_ahead_prices(
    net_load_w: npt.ArrayLike,
    rng: np.random.Generator | int,
    params: SyntheticPriceParams | None = None,
) -> np.ndarray:
    """Seeded synthetic day-ahead prices [JPY/kWh] correlated with net load.

    Parameters
    ----------
    net_load_w : array_like
        System (or area) net load per price interval [W] (load minus
        variable renewables), shape (T,).
    rng : numpy.random.Generator or int
        Random stream (use a named stream from :class:`cps_sim.core.rng.RngStreams`)
        or a seed.
    params : SyntheticPriceParams
        Model coefficients (ASSUMED defaults).

    Returns
    -------
    numpy.ndarray
        Prices, shape (T,), never below ``params.floor_jpy_per_kwh``.
    """
    p = params or SyntheticPriceParams()
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    x = np.asarray(net_load_w, dtype=float)
    if x.ndim != 1:
        raise ValueError(f"net_load_w must be 1-D, got shape {x.shape}")
    ref = p.reference_w if p.reference_w is not None else float(np.max(np.abs(x), initial=0.0))
    norm = x / ref if ref > 0 else np.zeros_like(x)
    noise = ar1_noise(len(x), p.ar1_phi, p.noise_sigma_jpy_per_kwh, gen)
    return np.maximum(p.base_jpy_per_kwh + p.slope_jpy_per_kwh * norm + noise, p.floor_jpy_per_kwh)
