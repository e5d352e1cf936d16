from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cps_sim.core.rng import RngStreams
from cps_sim.market.prices import (
    PriceDataError,
    SyntheticPriceParams,
    ar1_noise,
    read_jepx_spot,
    read_price_csv,
    synthetic_day_ahead_prices,
    write_price_csv,
)
from cps_sim.market.tariffs import DynamicTariff

DATA = Path(__file__).resolve().parents[1] / "data"
SAMPLE = DATA / "jepx_spot_sample.csv"


def test_read_jepx_sample_file():
    df = read_jepx_spot(SAMPLE)
    # 2 days x 48 slots, 30-min spacing, JST slot starts
    assert len(df) == 96
    assert df.index[0] == pd.Timestamp("2026-04-01 00:00", tz="Asia/Tokyo")
    assert df.index[-1] == pd.Timestamp("2026-04-02 23:30", tz="Asia/Tokyo")
    assert (df.index[1:] - df.index[:-1] == pd.Timedelta("30min")).all()
    # first row: system 11.55, Tokyo 13.55, Kyushu 10.55 (values from the file)
    first = df.iloc[0]
    assert first["system_price_jpy_per_kwh"] == pytest.approx(11.55)
    assert first["tokyo_price_jpy_per_kwh"] == pytest.approx(13.55)
    assert first["kyushu_price_jpy_per_kwh"] == pytest.approx(10.55)
    # slot 24 = 11:30-12:00, Kyushu at the 0.01 floor
    assert df.loc[
        pd.Timestamp("2026-04-01 11:30", tz="Asia/Tokyo"), "kyushu_price_jpy_per_kwh"
    ] == pytest.approx(0.01)
    assert df["contract_kwh"].iloc[0] == 1_500_500_000
    assert {
        f"{a}_price_jpy_per_kwh"
        for a in ("hokkaido", "tohoku", "chubu", "hokuriku", "kansai", "chugoku", "shikoku")
    } <= set(df.columns)


def test_jepx_columns_by_name_not_position_and_old_date_header(tmp_path):
    raw = pd.read_csv(SAMPLE, encoding="cp932")
    raw = raw.rename(columns={"受渡日": "年月日"})
    raw = raw[list(reversed(raw.columns))]  # reorder columns
    f = tmp_path / "spot_2026.csv"
    raw.to_csv(f, index=False, encoding="cp932")
    df = read_jepx_spot(f, areas=("system", "tokyo"))
    assert df["system_price_jpy_per_kwh"].iloc[0] == pytest.approx(11.55)
    assert list(df.columns[:2]) == ["system_price_jpy_per_kwh", "tokyo_price_jpy_per_kwh"]


def test_jepx_missing_column_names_file_and_column(tmp_path):
    raw = pd.read_csv(SAMPLE, encoding="cp932").drop(columns=["時刻コード"])
    f = tmp_path / "spot_2026.csv"
    raw.to_csv(f, index=False, encoding="cp932")
    with pytest.raises(PriceDataError, match=r"spot_2026\.csv: missing column '時刻コード'"):
        read_jepx_spot(f)


def test_jepx_bad_slot_and_wrong_encoding(tmp_path):
    raw = pd.read_csv(SAMPLE, encoding="cp932")
    raw.loc[3, "時刻コード"] = 49
    f = tmp_path / "bad.csv"
    raw.to_csv(f, index=False, encoding="cp932")
    with pytest.raises(PriceDataError, match=r":5: column '時刻コード': must be 1\.\.48"):
        read_jepx_spot(f)
    with pytest.raises(PriceDataError, match="cannot decode as utf-8"):
        read_jepx_spot(SAMPLE, encoding="utf-8")


def test_jepx_feeds_dynamic_tariff():
    df = read_jepx_spot(SAMPLE, areas=("tokyo",))
    t = DynamicTariff(df["tokyo_price_jpy_per_kwh"], import_adder_jpy_per_kwh=15.0)
    q = pd.DatetimeIndex(["2026-04-01 00:10"], tz="Asia/Tokyo")
    assert t.import_price_jpy_per_kwh(q)[0] == pytest.approx(13.55 + 15.0)


def test_plain_price_csv_roundtrip_and_naive_timestamps(tmp_path):
    f = tmp_path / "prices.csv"
    f.write_text(
        "timestamp,price_jpy_per_kwh,export_price_jpy_per_kwh\n"
        "2026-04-01T00:00:00+09:00,12.5,8\n"
        "2026-04-01 00:30,13.0,8\n",
        encoding="utf-8",
    )
    df = read_price_csv(f)
    assert df.index.tz is not None
    assert df.index[1] == pd.Timestamp("2026-04-01 00:30", tz="Asia/Tokyo")
    np.testing.assert_allclose(df["price_jpy_per_kwh"], [12.5, 13.0])
    g = tmp_path / "out.csv"
    write_price_csv(df, g)
    pd.testing.assert_frame_equal(read_price_csv(g), df)


def test_plain_price_csv_errors(tmp_path):
    f = tmp_path / "p.csv"
    f.write_text("time,price\n2026-04-01,1\n", encoding="utf-8")
    with pytest.raises(PriceDataError, match=r"p\.csv: missing column 'timestamp'"):
        read_price_csv(f)
    f.write_text("timestamp,price_jpy_per_kwh\n2026-04-01,abc\n", encoding="utf-8")
    with pytest.raises(PriceDataError, match="row 2: column 'price_jpy_per_kwh'"):
        read_price_csv(f)


def test_ar1_noise_statistics():
    e = ar1_noise(200_000, 0.8, 2.0, np.random.default_rng(0))
    assert e.std() == pytest.approx(2.0, rel=0.03)
    # lag-1 autocorrelation = phi
    assert np.corrcoef(e[:-1], e[1:])[0, 1] == pytest.approx(0.8, abs=0.01)


def test_synthetic_prices_seeded_correlated_and_floored():
    t = np.arange(48 * 30)
    net = 30e9 * np.cos(2 * np.pi * (t % 48 - 38) / 48)  # high evening, negative midday
    rng = RngStreams(42)
    a = synthetic_day_ahead_prices(net, rng.generator("market/prices"))
    b = synthetic_day_ahead_prices(net, rng.generator("market/prices"))
    np.testing.assert_array_equal(a, b)
    assert np.corrcoef(a, net)[0, 1] > 0.8
    assert a.min() >= 0.01
    # without noise: price = 12 + 10 * net/|net|max -> 2 .. 22
    p = synthetic_day_ahead_prices(net, 0, SyntheticPriceParams(noise_sigma_jpy_per_kwh=0.0))
    assert p.min() == pytest.approx(2.0)
    assert p.max() == pytest.approx(22.0)
    floored = synthetic_day_ahead_prices(
        net, 0, SyntheticPriceParams(base_jpy_per_kwh=2.0, noise_sigma_jpy_per_kwh=0.0)
    )
    assert floored.min() == 0.01
