"""Command line: ``cps-sim run | validate | schema`` (and more as layers land).

Errors that cps_sim raises on purpose print one clear message and exit
non-zero (2 for bad input); ``--debug`` shows the traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from cps_sim.core.errors import CpsSimError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="cps_sim: event-driven cyber-physical energy-management simulator.",
)

_state = {"debug": False}


@app.callback()
def _root(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False):
    _state["debug"] = debug


def _fail(exc: CpsSimError) -> None:
    if _state["debug"]:
        raise exc
    typer.echo(f"error: {exc}" if "\n" not in str(exc) else f"error:\n{exc}", err=True)
    raise typer.Exit(exc.exit_code)


SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set", help="Override a scenario value: path=value (sites[0].pv.share=0.8). Repeatable."
    ),
]


@app.command()
def run(
    scenario: Annotated[Path, typer.Argument(help="Scenario YAML file.")],
    seed: Annotated[int | None, typer.Option(help="Root seed (overrides the file).")] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Results directory (default: results/<name>-seed<seed>-<hash>)."),
    ] = None,
    set_: SetOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    expect: Annotated[
        str,
        typer.Option(
            "--expect",
            help="The scenario's expect: block. check: exit 3 when one fails "
            "(default); report: print the report, exit 0; off: do not check.",
        ),
    ] = "check",
    oracle: Annotated[
        bool,
        typer.Option(
            "--oracle",
            help="Run the perfect-foresight "
            "optimum (one LP per site, replayed through the "
            "engine) instead of the scenario's controllers.",
        ),
    ] = False,
    objective: Annotated[
        str | None,
        typer.Option(
            help="--oracle: cost, co2, peak or "
            "curtailment (default: the scenario's "
            "oracle.objective, else cost)."
        ),
    ] = None,
):
    """Run a scenario and write timeseries, events, KPIs and a manifest."""
    from cps_sim.experiment.run import run_file

    if expect not in ("check", "report", "off"):
        _fail(CpsSimError(f"--expect must be check, report or off, got {expect!r}"))
    if objective is not None and objective not in ("cost", "co2", "peak", "curtailment"):
        _fail(CpsSimError(f"--objective must be cost, co2, peak or curtailment, got {objective!r}"))
    try:
        result = run_file(
            scenario,
            overrides=set_ or [],
            seed=seed,
            out_dir=out,
            quiet=quiet,
            check_expect=expect != "off",
            oracle=oracle,
            objective=objective,
        )
    except CpsSimError as exc:
        _fail(exc)
    from cps_sim.experiment.summary import format_blocks, run_blocks

    typer.echo(f"results: {result.out_dir}")
    typer.echo(format_blocks(run_blocks(result.out_dir)))
    from cps_sim.experiment.oracle import summary_lines

    for line in summary_lines(result.kpis):
        typer.echo(f"  {line}")
    typer.echo(f"  wall time {result.wall_time_s:.2f} s")
    if result.expectations is not None:
        report = result.expectations
        typer.echo(report.format(), err=not report.passed)
        if not report.passed and expect == "check":
            raise typer.Exit(3)  # an expectation failed (results are written)


@app.command()
def validate(
    scenario: Annotated[Path, typer.Argument(help="Scenario YAML file.")], set_: SetOpt = None
):
    """Check a scenario file; print every problem with file, line and path."""
    from cps_sim.experiment.memory import check_fits
    from cps_sim.scenario.loader import load_scenario

    try:
        sc = load_scenario(scenario, set_ or [])
        if sc.bridge is not None:  # cross-checks of the bridge block (cps-sim hil runs them too)
            from cps_sim.bridge.runtime import check_bridge

            check_bridge(sc, sc.bridge, sc.speed, str(scenario))
        est = check_fits(sc, str(scenario), streamed=True)  # the refusal cps-sim run gives
        # the run's set-up (data files, controllers, wiring): what cps-sim run refuses at
        # its start is refused here too
        from cps_sim.experiment.run import check_setup

        check_setup(sc, str(scenario))
    except CpsSimError as exc:
        _fail(exc)
    sites = sum(g.count for g in sc.sites)
    typer.echo(
        f"{scenario}: OK ({sc.name}: {len(sc.sites)} site group(s), {sites:,} sites, "
        f"{sc.duration_days:g} days at {sc.tick_s:g} s ticks"
        + (f", after a {sc.warmup_days}-day warm-up" if sc.warmup_days else "")
        + f"; {est.ticks:,} ticks, about {est.total_bytes / 1e9:.1f} GB of memory)"
    )


@app.command()
def schema(
    markdown: Annotated[
        bool,
        typer.Option(
            "--markdown", help="Print the scenario reference (docs/scenarios.md) instead."
        ),
    ] = False,
):
    """Print the JSON Schema of scenario files (for editor autocompletion)."""
    if markdown:
        from cps_sim.scenario.reference_doc import render

        typer.echo(render(), nl=False)
        return
    from cps_sim.scenario.schema import Scenario

    typer.echo(json.dumps(Scenario.model_json_schema(), indent=2))


@app.command()
def sweep(
    sweep_file: Annotated[Path, typer.Argument(help="Sweep YAML file.")],
    workers: Annotated[int | None, typer.Option(help="Parallel runs (default: all cores).")] = None,
    backend: Annotated[str, typer.Option(help="local (process pool) or dask.")] = "local",
    address: Annotated[
        str | None,
        typer.Option(help="Dask scheduler, e.g. tcp://host:8786 (default: a LocalCluster)."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Results directory (default: results/<sweep name>).")
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume", help="Continue a sweep in OUT: skip finished runs, redo the rest."
        ),
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
):
    """Run a batch of scenario variants (grid / random / LHS) and write a catalog."""
    if backend == "local":  # workers import the engine while this process imports the rest
        from cps_sim.experiment.executors import start_fork_server

        start_fork_server()
    from cps_sim.experiment.sweep import run_sweep, summary

    if backend not in ("local", "dask"):
        _fail(CpsSimError(f"--backend must be local or dask, got {backend!r}"))
    try:
        result = run_sweep(
            sweep_file,
            out,
            workers=workers,
            backend=backend,  # type: ignore[arg-type]
            address=address,
            resume=resume,
            quiet=True if quiet else None,
        )
    except CpsSimError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        typer.echo("interrupted: finished runs are kept; continue with --resume", err=True)
        raise typer.Exit(130) from None
    typer.echo(summary(result))
    raise typer.Exit(result.exit_code)


@app.command()
def report(
    results_dir: Annotated[
        Path | None,
        typer.Argument(
            help="A run or sweep results directory (with --gallery: the scenarios "
            "folder, default scenarios)."
        ),
    ] = None,
    week: Annotated[
        str | None,
        typer.Option(
            help="Run reports: first local day of the "
            "week shown (default: the week with the "
            "highest import peak)."
        ),
    ] = None,
    objective: Annotated[
        str,
        typer.Option(help="Sweep reports: KPI that ranks best and worst runs (lower is better)."),
    ] = "cost_jpy",
    out: Annotated[
        Path | None, typer.Option(help="Where to write (default: RESULTS_DIR/report).")
    ] = None,
    constraint: Annotated[
        list[str] | None,
        typer.Option(
            "--constraint",
            help="Sweep reports: a design point ranks only if its mean "
            "meets this, e.g. 'ev_unmet_at_departure_kwh <= 1'. Repeatable.",
        ),
    ] = None,
    tradeoff: Annotated[
        str,
        typer.Option(
            help="Sweep reports: KPI on the trade-off "
            "plot's x axis (lower is better; prefix - "
            "to maximise)."
        ),
    ] = "co2_kg",
    gallery: Annotated[
        bool,
        typer.Option(
            "--gallery",
            help="Run every scenario of the folder and write the gallery "
            "(OUT/gallery.md + OUT/gallery/*.png; OUT default docs).",
        ),
    ] = False,
):
    """Plot a run (flows, SoC, daily profiles, KPIs) or a sweep (design points with
    confidence intervals, sensitivity, heatmap, ranking under constraints, Pareto front)."""
    if gallery:
        from cps_sim.experiment.gallery import build_gallery

        try:
            entries = build_gallery(results_dir or Path("scenarios"), out or Path("docs"))
        except CpsSimError as exc:
            _fail(exc)
        typer.echo(f"gallery: {(out or Path('docs')) / 'gallery.md'} ({len(entries)} scenarios)")
        return
    if results_dir is None:
        _fail(CpsSimError("give a run or sweep results directory (or --gallery)"))
    from cps_sim.experiment.report import make_report

    try:
        rep = make_report(
            results_dir,
            week_start=week,
            objective=objective,
            out_dir=out,
            constraints=constraint or [],
            tradeoff=tradeoff,
        )
    except CpsSimError as exc:
        _fail(exc)
    typer.echo(f"{rep.kind} report: {rep.html} ({len(rep.pngs)} plots)")


@app.command()
def emulate(
    profile: Annotated[
        str,
        typer.Argument(
            help="Device profile: a name from devices/profiles "
            "(generic, tasmota_plug, shelly_gen2, openevse, goe, "
            "battery_inverter) or a .yaml path."
        ),
    ],
    kind: Annotated[
        str | None,
        typer.Option(
            help="ev_charger, battery, pv, plug, meter or "
            "heat_pump (default: the profile's first kind; "
            "the generic profile needs it)."
        ),
    ] = None,
    count: Annotated[int, typer.Option(help="Number of devices.")] = 1,
    broker: Annotated[
        str | None,
        typer.Option(
            help="mqtt://host:port or mqtts://host:port (default: start an embedded broker)."
        ),
    ] = None,
    prefix: Annotated[
        str, typer.Option(help="Topic prefix (generic profile: <prefix>/dev/<id>/...).")
    ] = "cps/emu",
    interval: Annotated[float, typer.Option(help="Telemetry period [wall s].")] = 1.0,
    speed: Annotated[
        float, typer.Option(help="Device clock speed (60 = one hour per minute).")
    ] = 1.0,
    duration: Annotated[
        str | None,
        typer.Option(help="Stop after this wall time (90s, 10m, 1h; default: until Ctrl-C)."),
    ] = None,
    id_prefix: Annotated[
        str | None, typer.Option(help="Device ids <id-prefix>-0000... (default: the kind).")
    ] = None,
    first_id: Annotated[
        int,
        typer.Option(
            help="Number of the first device id (--first-id 50 --count 50: "
            "<id-prefix>-0050 .. -0099; spreads one rig over several processes)."
        ),
    ] = 0,
    seed: Annotated[int, typer.Option(help="Seed of the device population.")] = 0,
    ttl: Annotated[
        float,
        typer.Option(
            help="Fail-safe after this many device seconds "
            "without a command (when the command has no "
            "ttl_s)."
        ),
    ] = 60.0,
    clients: Annotated[
        str,
        typer.Option(
            help="device: one MQTT connection and last will per device; shared: one for the fleet."
        ),
    ] = "device",
    protocol: Annotated[str, typer.Option(help="MQTT protocol: 3.1.1 or 5.")] = "3.1.1",
    username: Annotated[
        str | None,
        typer.Option(
            help="Broker user name (password from the environment variable --password-env)."
        ),
    ] = None,
    password_env: Annotated[
        str, typer.Option(help="Environment variable holding the password.")
    ] = "CPS_SIM_MQTT_PASSWORD",
    ca_file: Annotated[str | None, typer.Option(help="CA certificate (PEM) for mqtts://.")] = None,
    homeassistant: Annotated[
        bool,
        typer.Option(
            "--homeassistant", help="Announce the devices to Home Assistant (MQTT discovery)."
        ),
    ] = False,
    ha_remove: Annotated[
        bool, typer.Option("--ha-remove", help="Remove the Home Assistant entities on exit.")
    ] = False,
    weather: Annotated[
        str, typer.Option(help="pv/heat_pump weather: synthetic or clear.")
    ] = "synthetic",
    start: Annotated[
        str | None, typer.Option(help="Device clock start, ISO 8601 (default: now).")
    ] = None,
    telemetry_qos: Annotated[
        int | None, typer.Option(help="QoS of telemetry (default: the profile's, 0 for generic).")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress lines.")] = False,
):
    """Emulated MQTT devices driven by the models, speaking a device profile."""
    from cps_sim.bridge.emulate_cli import run_emulate

    try:
        run_emulate(
            profile,
            kind=kind,
            count=count,
            broker=broker,
            prefix=prefix,
            interval_s=interval,
            speed=speed,
            duration=duration,
            id_prefix=id_prefix,
            first_id=first_id,
            seed=seed,
            ttl_s=ttl,
            clients=clients,
            protocol=protocol,
            username=username,
            password_env=password_env,
            ca_file=ca_file,
            homeassistant=homeassistant,
            ha_remove=ha_remove,
            weather=weather,
            start=start,
            telemetry_qos=telemetry_qos,
            quiet=quiet,
        )
    except CpsSimError as exc:
        _fail(exc)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings on the command line: one ``warning: ...`` line, no source location."""
    print(f"warning: {message}", file=sys.stderr if file is None else file)


@app.command()
def hil(
    scenario: Annotated[Path, typer.Argument(help="Scenario YAML file (with a bridge: block).")],
    broker: Annotated[
        str | None,
        typer.Option(
            help="Broker URL mqtt://host:port or "
            "mqtts://... (default: the scenario's "
            "bridge.url, else an embedded broker)."
        ),
    ] = None,
    speed: Annotated[
        float | None,
        typer.Option(
            help="Simulated seconds per wall second (1 = real time; default: the scenario's speed)."
        ),
    ] = None,
    duration: Annotated[
        str | None,
        typer.Option(help="Run length, e.g. 600, 10m, 2h (whole ticks; default: the scenario's)."),
    ] = None,
    record: Annotated[
        Path | None,
        typer.Option(help="Also write the message recording here (for cps-sim replay)."),
    ] = None,
    emulate: Annotated[
        bool,
        typer.Option("--emulate", help="Start emulators for the devices marked emulated: true."),
    ] = False,
    strict_lag_s: Annotated[
        float | None,
        typer.Option(
            "--strict-lag-s",
            help="Strict real time: stop (results written, exit 4) when a "
            "tick settles more than this many wall seconds late (default: the scenario's "
            "bridge.max_lag_s; none = measure and report only).",
        ),
    ] = None,
    expect: Annotated[
        str,
        typer.Option(
            "--expect",
            help="The scenario's expect: block. check: exit 3 when one fails "
            "(default); report: print the report, exit 0; off: do not check.",
        ),
    ] = "check",
    out: Annotated[Path | None, typer.Option(help="Results directory.")] = None,
    set_: SetOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No status line.")] = False,
):
    """Run a scenario in real time over MQTT: real, emulated and simulated devices, external
    controllers (docs/hil.md)."""
    from cps_sim.bridge.hil import HilOptions, parse_duration, run_hil
    from cps_sim.core.errors import RealTimeOverrun

    if expect not in ("check", "report", "off"):
        _fail(CpsSimError(f"--expect must be check, report or off, got {expect!r}"))
    try:
        opts = HilOptions(
            broker=broker,
            speed=speed,
            record=record,
            quiet=quiet,
            emulate=emulate,
            strict_lag_s=strict_lag_s,
            check_expect=expect != "off",
            duration_s=parse_duration(duration) if duration else None,
        )
        res = run_hil(scenario, opts, set_ or [], out)
    except CpsSimError as exc:
        _fail(exc)
    k = res.kpis
    typer.echo(
        f"results: {res.out_dir}" + ("  (interrupted: partial run)" if res.interrupted else "")
    )
    lag = (
        f"lag p50 {k['hil_lag_p50_s'] * 1e3:.1f} ms, p99 {k['hil_lag_p99_s'] * 1e3:.1f} ms,"
        f" max {k['hil_lag_max_s'] * 1e3:.1f} ms"
        if "hil_lag_p50_s" in k
        else "no ticks"
    )
    typer.echo(f"  broker {res.broker_url}; {lag}")
    typer.echo(
        f"  messages in {k['bridge_received']:.0f} (accepted {k['bridge_accepted']:.0f}"
        f", rejected {k['bridge_rejected']:.0f}, dropped {k['bridge_queue_drops']:.0f})"
        f", out {k['bridge_published']:.0f}; disconnects {k['bridge_disconnects']:.0f}"
    )
    typer.echo(f"  grid import {k['grid_import_kwh']:.2f} kWh, wall time {res.wall_time_s:.1f} s")
    if res.overrun is not None:
        _fail(RealTimeOverrun(f"{res.overrun}; results up to then in {res.out_dir}"))
    if res.expectations is not None:
        report = res.expectations
        typer.echo(report.format(), err=not report.passed)
        if not report.passed and expect == "check":
            raise typer.Exit(3)  # an expectation failed (results are written)


@app.command()
def replay(
    recording: Annotated[
        Path,
        typer.Argument(
            help="bridge.parquet of a cps-sim hil "
            "run (or its results directory, or a "
            "--record file)."
        ),
    ],
    out: Annotated[
        Path | None, typer.Option(help="Results directory (default: results/<name>-replay).")
    ] = None,
):
    """Re-run a recorded hil run offline; reproduces its KPIs and time series."""
    from cps_sim.bridge.hil import run_replay

    try:
        res = run_replay(recording, out)
    except CpsSimError as exc:
        _fail(exc)
    typer.echo(f"results: {res.out_dir}")
    typer.echo(
        f"  grid import {res.kpis['grid_import_kwh']:.2f} kWh, wall time {res.wall_time_s:.2f} s"
    )


@app.command()
def compare(
    runs: Annotated[
        list[Path], typer.Argument(help="Two or more run folders (the first is the baseline).")
    ],
    week: Annotated[
        str | None,
        typer.Option(
            help="First local day of the week overlaid (default: the first run's peak-import week)."
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Where to write (default: results/compare-A-vs-B).")
    ] = None,
):
    """Compare runs of the same horizon: KPI differences, week and daily-profile overlays."""
    from cps_sim.experiment.compare import compare_runs, format_summary

    try:
        res = compare_runs(list(runs), out_dir=out, week_start=week)
    except CpsSimError as exc:
        _fail(exc)
    typer.echo(format_summary(res))


def _click_exceptions() -> tuple[tuple[type[BaseException], ...], ...]:
    """Click's exception classes: typer >= 0.20 vendors click as ``typer._click``."""
    mods = []
    try:
        from typer._click import exceptions as vendored

        mods.append(vendored)
    except ImportError:
        pass
    try:
        from click import exceptions as upstream

        mods.append(upstream)
    except ImportError:
        pass

    def get(name: str) -> tuple[type[BaseException], ...]:
        return tuple(getattr(m, name) for m in mods if hasattr(m, name))

    return get("ClickException"), get("UsageError"), get("NoArgsIsHelpError"), get("Abort")


def main() -> None:
    """Entry point: whatever goes wrong ends in ``error: ...`` and a non-zero exit.

    Only ``--debug`` shows a traceback.  Errors cps_sim raises on purpose
    carry their own message; anything else is reported as an internal error
    (a bug to report) rather than as a traceback.
    """
    import warnings

    warnings.showwarning = _show_warning
    click_errors, usage_errors, no_args, aborts = _click_exceptions()
    try:
        rc = app(standalone_mode=False)
    except no_args as exc:  # bare `cps-sim`: the help
        ctx = getattr(exc, "ctx", None)
        typer.echo(ctx.get_help() if ctx is not None else str(exc))
        sys.exit(0)
    except usage_errors as exc:  # bad option, unknown command, missing argument
        ctx = getattr(exc, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        print(f"error: {exc.format_message()}{hint}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except click_errors as exc:
        print(f"error: {exc.format_message()}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except aborts:
        print("error: aborted", file=sys.stderr)
        sys.exit(1)
    except CpsSimError as exc:  # raised outside a command body
        if _state["debug"]:
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        if _state["debug"]:
            raise
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    except MemoryError:
        if _state["debug"]:
            raise
        print(
            "error: out of memory; make the run smaller (fewer sites, a shorter horizon or "
            "a longer tick_s)",
            file=sys.stderr,
        )
        sys.exit(1)
    except OSError as exc:
        if _state["debug"]:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        sys.exit(1)
    except Exception as exc:
        if _state["debug"]:
            raise
        print(
            f"error: internal error ({type(exc).__name__}: {exc}); rerun with --debug for "
            "the traceback and please report it",
            file=sys.stderr,
        )
        sys.exit(1)
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":
    main()
