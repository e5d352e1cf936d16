"""Wind turbines and farms (cps_sim.models.wind) against the bundled manufacturer curves."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cps_sim.models.weather import library_deprecations_ignored
from cps_sim.models.wind import (
    air_density_kg_m3,
    hub_wind_speed_m_s,
    load_power_curve,
    turbine_ac_power_w,
    turbine_types,
    wind_farm_ac_power_w,
)


def _weather(speeds, temp_c=15.0) -> pd.DataFrame:
    idx = pd.date_range("2026-01-01", periods=len(speeds), freq="1h", tz="Asia/Tokyo")
    df = pd.DataFrame(
        {"wind_speed_m_s": np.asarray(speeds, dtype=float), "temp_air_c": temp_c}, index=idx
    )
    df.attrs["wind_height_m"] = 10.0
    return df


def test_bundled_library_is_available_offline():
    types = turbine_types()
    assert len(types) == 67 and "E-126/4200" in types and "V90/2000" in types


@pytest.mark.parametrize(
    ("turbine", "speed", "expected_w"),
    [
        # hand-read from windpowerlib/data/default_turbine_data/power_curves.csv:
        ("E-126/4200", 3.0, 58_000.0),
        ("E-126/4200", 8.0, 1_790_000.0),
        ("E-126/4200", 14.0, 4_200_000.0),
        ("E-126/4200", 25.0, 4_200_000.0),  # last point = cut-out speed, still rated
        ("E-126/4200", 7.5, 1_495_000.0),  # linear: (1.2 MW + 1.79 MW) / 2
        ("E-126/4200", 2.0, 0.0),  # below cut-in
        ("E-126/4200", 25.5, 0.0),  # above cut-out
        ("E-126/4200", 40.0, 0.0),
    ],
)
def test_manufacturer_curve_points(turbine, speed, expected_w):
    curve = load_power_curve(turbine)
    assert turbine_ac_power_w(np.array([speed]), curve)[0] == pytest.approx(expected_w)


def test_matches_windpowerlib_power_curve_everywhere():
    from windpowerlib import WindTurbine, power_output

    v = np.linspace(0, 30, 301)
    for name in ("E-126/4200", "V90/2000", "SWT130/3600"):
        with library_deprecations_ignored():
            wt = WindTurbine(turbine_type=name, hub_height=100)
            ref = power_output.power_curve(
                pd.Series(v), wt.power_curve["wind_speed"], wt.power_curve["value"]
            ).to_numpy()
        np.testing.assert_allclose(turbine_ac_power_w(v, load_power_curve(name)), ref, atol=1e-6)


def test_hub_height_extrapolation_hand_values():
    # log: 5 m/s x ln(135/0.15)/ln(10/0.15) = 5 x 6.8024/4.1997 = 8.0987 m/s
    assert hub_wind_speed_m_s([5.0], 10.0, [135.0])[0, 0] == pytest.approx(8.0987, abs=1e-3)
    # Hellmann 1/7: 5 x 13.5^(1/7) = 5 x 1.4504 = 7.2518 m/s
    assert hub_wind_speed_m_s([5.0], 10.0, [135.0], method="hellman")[0, 0] == pytest.approx(
        7.2518, abs=1e-3
    )
    with pytest.raises(ValueError):
        hub_wind_speed_m_s([5.0], 10.0, [135.0], method="nope")


def test_air_density_and_correction():
    # ISA: 101325 Pa / (287.058 x 288.15 K) = 1.2250 kg/m3 at sea level
    rho = air_density_kg_m3([15.0], [0.0], temperature_height_m=0.0)[0, 0]
    assert rho == pytest.approx(1.2250, abs=1e-3)
    curve = load_power_curve("E-126/4200")
    # 10 % thinner air at 8 m/s: read at 8 x 0.9^(1/3) = 7.7238 m/s
    # -> 1.2 + 0.7238 x 0.59 = 1.6270 MW (less than 1.79 MW)
    p = turbine_ac_power_w(np.array([8.0]), curve, air_density=np.array([0.9 * 1.225]))[0]
    assert p == pytest.approx(1_627_000, rel=1e-3)
    assert turbine_ac_power_w(np.array([8.0]), curve, air_density=np.array([1.225]))[0] == (
        pytest.approx(1_790_000)
    )


def test_farm_scales_with_turbines_and_efficiency_and_mixed_types():
    # measured 10 m wind chosen so that hub (log, 135 m) speed is exactly 8 m/s:
    v10 = 8.0 / (np.log(135 / 0.15) / np.log(10 / 0.15))
    w = _weather([v10, 0.0, 50.0])
    p = wind_farm_ac_power_w(
        w,
        ["E-126/4200", "E-126/4200", "V90/2000"],
        [135, 135, 135],
        n_turbines=[1, 10, 3],
        efficiency=[1.0, 0.9, 1.0],
    )
    # 1 x 1.79 MW; 10 x 0.9 x 1.79 MW = 16.11 MW; zero wind and storm -> 0
    assert p[0, 0] == pytest.approx(1.79e6)
    assert p[0, 1] == pytest.approx(16.11e6)
    assert np.all(p[1:] == 0)
    v90 = load_power_curve("V90/2000")
    assert p[0, 2] == pytest.approx(3 * np.interp(8.0, v90.wind_speed_m_s, v90.power_w))


def test_one_farm_in_one_equals_one_in_thousand():
    rng = np.random.default_rng(0)
    w = _weather(rng.weibull(2.0, 200) * 6.0, temp_c=rng.normal(10, 5, 200))
    n = 1000
    types = rng.choice(["E-126/4200", "V90/2000", "E-82/2000"], n).tolist()
    hubs = rng.uniform(80, 140, n)
    counts = rng.integers(1, 20, n)
    many = wind_farm_ac_power_w(w, types, hubs, counts, 0.92, density_correction=True)
    for i in (0, 500, 999):
        one = wind_farm_ac_power_w(
            w, [types[i]], [hubs[i]], [counts[i]], 0.92, density_correction=True
        )
        np.testing.assert_allclose(many[:, i], one[:, 0], rtol=1e-12)


def test_monotone_below_cut_out_and_bounded_by_rating():
    curve = load_power_curve("E-126/4200")
    v = np.linspace(0, 25, 501)
    p = turbine_ac_power_w(v, curve)
    assert np.all(np.diff(p) >= 0) and p.max() == curve.nominal_power_w


def test_unknown_turbine_raises():
    with pytest.raises(KeyError, match="turbine_types"):
        load_power_curve("XYZ/1")
