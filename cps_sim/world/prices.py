"""Per-tick import/export prices of a run, from the scenario's tariff (market layer)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cps_sim.core.clock import Clock
from cps_sim.core.errors import CpsSimError, ScenarioError
from cps_sim.scenario.loader import resolve_data_path
from cps_sim.scenario.schema import Scenario


def tick_prices(
    scenario: Scenario, clock: Clock, base_dir: Path | None
) -> tuple[np.ndarray, np.ndarray]:
    """Import and export price [JPY/kWh] held over each tick (priced at the tick start)."""
    from cps_sim.market import tariffs
    from cps_sim.market.prices import read_price_csv

    t = scenario.tariff
    times = clock.index(np.arange(scenario.n_ticks) * scenario.tick_s)
    path: Path | None = None
    try:
        if t.type == "flat":
            tariff = tariffs.FlatTariff(
                import_jpy_per_kwh=t.import_jpy_per_kwh, export_jpy_per_kwh=t.export_jpy_per_kwh
            )
        elif t.type == "tou":
            periods = tuple(
                tariffs.TouPeriod(
                    name=p.name,
                    price_jpy_per_kwh=p.price_jpy_per_kwh,
                    start_hour=p.start_hour,
                    end_hour=p.end_hour,
                    day_types=tuple(p.day_types),
                    months=tuple(p.months),
                )
                for p in t.periods
            )
            tariff = tariffs.TouTariff(
                periods=periods, export_jpy_per_kwh=t.export_jpy_per_kwh, tz=scenario.timezone
            )
        elif t.type == "jepx":
            from cps_sim.market.prices import read_jepx_spot

            path = resolve_data_path(t.jepx_csv, base_dir or Path.cwd(), field="tariff.jepx_csv")
            df = read_jepx_spot(path, tz=scenario.timezone, areas=(t.jepx_area,))
            _covers(df.index, times, scenario.tick_s, path)
            tariff = tariffs.DynamicTariff(
                price_jpy_per_kwh=df[f"{t.jepx_area}_price_jpy_per_kwh"],
                import_adder_jpy_per_kwh=t.import_adder_jpy_per_kwh,
                export_multiplier=t.export_multiplier,
                export_adder_jpy_per_kwh=t.export_adder_jpy_per_kwh,
            )
        else:
            path = resolve_data_path(
                t.prices_csv, base_dir or Path.cwd(), field="tariff.prices_csv"
            )
            df = read_price_csv(path, tz=scenario.timezone)
            tariff = tariffs.DynamicTariff(
                price_jpy_per_kwh=df["price_jpy_per_kwh"],
                import_adder_jpy_per_kwh=t.import_adder_jpy_per_kwh,
                export_multiplier=t.export_multiplier,
                export_adder_jpy_per_kwh=t.export_adder_jpy_per_kwh,
            )
        imp = np.asarray(tariff.import_price_jpy_per_kwh(times), dtype=float)
        exp = np.asarray(tariff.export_price_jpy_per_kwh(times), dtype=float)
    except ScenarioError:
        raise
    except (CpsSimError, ValueError, KeyError) as exc:
        msg = str(exc)
        if path is not None and str(path) not in msg:
            msg = f"{path}: {msg}"
        raise ScenarioError.single(None, "tariff", msg) from None
    return imp, exp


def _covers(index, times, tick_s: float, path: Path) -> None:
    """A 30-min price file must cover every tick of the run."""
    import pandas as pd

    from cps_sim.market.prices import PriceDataError

    end = times[-1] + pd.Timedelta(seconds=tick_s)
    last = index[-1] + pd.Timedelta(minutes=30)
    if len(index) == 0 or index[0] > times[0] or last < end:
        raise PriceDataError(
            f"{path}: the prices cover {index[0]} .. {last}, the run needs {times[0]} .. {end}"
        )


def tick_carbon_prices(scenario: Scenario, clock: Clock) -> np.ndarray:
    """Carbon price [JPY/t] per tick: flat, or the GX timeline by fiscal year."""
    e = scenario.emissions
    if e.carbon_price == "flat":
        return np.full(scenario.n_ticks, e.carbon_price_jpy_per_t)
    from cps_sim.market.carbon import default_timeline

    timeline = default_timeline(
        ets_start_jpy_per_t=e.ets_start_jpy_per_t,
        ets_increase_jpy_per_t_per_fy=e.ets_increase_jpy_per_t_per_fy,
        levy_start_jpy_per_t=e.levy_start_jpy_per_t,
        levy_increase_jpy_per_t_per_fy=e.levy_increase_jpy_per_t_per_fy,
        auction_start_jpy_per_t=e.auction_start_jpy_per_t,
        auction_increase_jpy_per_t_per_fy=e.auction_increase_jpy_per_t_per_fy,
        cap_jpy_per_t=e.carbon_price_cap_jpy_per_t,
    )
    times = clock.index(np.arange(scenario.n_ticks) * scenario.tick_s)
    return np.asarray(timeline.carbon_price_jpy_per_t(times), dtype=float)
