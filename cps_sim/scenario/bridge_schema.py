"""Scenario block ``bridge:`` — the MQTT bridge of ``cps-sim hil`` (docs/hil.md).

Broker, credentials and TLS, the topic prefix, real or emulated devices bound
to members of site groups, and the groups exposed to external controllers.
Credentials never sit in the file: ``password_env`` names an environment
variable, ``password_file`` a file holding the password (a ``password:`` key is
rejected).  Cross-checks against the site groups (names, site indices, devices
present at the site) run when the bridge is built, with the same
``bridge.devices[i].binds.site`` paths.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from cps_sim.scenario.sites_schema import _Model

_ID = r"^[A-Za-z0-9_-]{1,64}$"
_PREFIX = re.compile(r"^[A-Za-z0-9_-]{1,64}(/[A-Za-z0-9_-]{1,64}){0,7}$")
MemberKind = Literal["ev", "battery", "pv", "load"]


class BridgeTlsSpec(_Model):
    """TLS to the broker (TLS 1.2 or newer; the certificate is always verified)."""

    ca_file: str | None = Field(
        None,
        description="CA certificate (PEM) that signed the "
        "broker's certificate; default: the system's trusted CAs.",
    )
    cert_file: str | None = Field(
        None, description="Client certificate (PEM), for brokers that require one."
    )
    key_file: str | None = Field(None, description="Key of the client certificate (PEM).")

    @model_validator(mode="after")
    def _pair(self) -> BridgeTlsSpec:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self


class BindSpec(_Model):
    """The population member a device stands for."""

    group: str = Field(pattern=_ID, description="Site-group name.")
    site: int = Field(ge=0, lt=10_000_000, description="Site index within the group (0-based).")
    kind: MemberKind = Field(
        description="ev: the site's EV charger (first EV of the site); "
        "battery: the home battery; pv: the PV inverter; load: the site "
        "load (a smart plug or a meter on the load)."
    )


class BridgeDeviceSpec(_Model):
    """A real or emulated device bound to one member of a population."""

    name: str = Field(
        pattern=_ID,
        description="Device id: the topic level <prefix>/dev/<name>/... (generic profile).",
    )
    profile: str = Field(
        "generic",
        pattern=r"^[A-Za-z0-9_./-]{1,200}$",
        description="Device profile (devices/profiles/<name>.yaml) mapping "
        "the device's own topics onto the canonical signals.",
    )
    topic: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_-]{1,64}(/[A-Za-z0-9_-]{1,64}){0,7}$",
        description="The device's own base topic for vendor profiles "
        "(e.g. the Tasmota topic 'plug1'); default: the device name.",
    )
    binds: BindSpec = Field(
        description="The population member this device stands for (group, site, kind)."
    )
    emulated: bool = Field(
        False,
        description="An emulator (cps-sim emulate), not hardware: "
        "only then may cps-sim hil run faster than real time.",
    )
    max_power_w: float | None = Field(
        None,
        gt=0,
        le=1e7,
        description="Rated power drawn (+, W); default: the member's rating in the model.",
    )
    min_power_w: float | None = Field(
        None,
        ge=-1e7,
        le=0,
        description="Rated power fed back "
        "(-, W; e.g. V2H, battery discharge); default: the "
        "member's rating, 0 for loads and chargers without V2X.",
    )
    max_ramp_w_per_s: float | None = Field(
        None, gt=0, le=1e9, description="Largest setpoint change per second; none = no rate limit."
    )
    max_current_a: float | None = Field(
        None,
        gt=0,
        le=1000,
        description="Chargers driven by a current limit: the largest "
        "current; default: the profile's.",
    )
    min_current_a: float | None = Field(
        None,
        ge=0,
        le=80,
        description="Below this current the charger pauses (IEC 61851: "
        "6 A); default: the profile's.",
    )
    voltage_v: float | None = Field(
        None,
        gt=0,
        le=1000,
        description="Phase voltage for power <-> current (Japan 200 V); default: the profile's.",
    )
    phases: int | None = Field(
        None,
        ge=1,
        le=3,
        description="Phases the charger uses for power <-> current; default: the profile's.",
    )
    max_age_s: float = Field(
        30.0,
        gt=0,
        le=86400,
        description="A measurement older than this "
        "is stale: the model's power is used instead (flagged).",
    )
    ttl_s: float = Field(
        60.0,
        gt=0,
        le=86400,
        description="Time to live of each setpoint "
        "sent to the device; its own fail-safe applies after it.",
    )
    fail_safe_power_w: float = Field(
        0.0,
        ge=-1e7,
        le=1e7,
        description="The setpoint sent "
        "when the device's controller has no valid setpoint (its "
        "fallback) and when the run ends.",
    )


class ExposeSpec(_Model):
    """A simulated site group offered to an external controller over MQTT."""

    group: str = Field(
        pattern=_ID,
        description="Site group whose observations are published and whose "
        "setpoints an external controller sends.",
    )
    interval_s: float | None = Field(
        None,
        gt=0,
        le=86400,
        description="Observation publish interval [s]; default: every settlement tick.",
    )
    ttl_s: float = Field(
        60.0,
        gt=0,
        le=86400,
        description="Time to live of a setpoint that carries no ttl_s of its own.",
    )
    fallback: Literal["uncontrolled", "off"] = Field(
        "uncontrolled",
        description="What the group does without a valid setpoint: "
        "uncontrolled = EVs charge at full power; off = EVs stop; both: batteries and water "
        "heaters on their own rules, no comfort-band shift of air-conditioners.",
    )
    per_device: bool = Field(
        True,
        description="Also publish <prefix>/dev/<group>-<site>-<kind>/telemetry for every member.",
    )
    max_ramp_w_per_s: float | None = Field(
        None,
        gt=0,
        le=1e9,
        description="Largest change of any setpoint per second of simulated time.",
    )


class BridgeSpec(_Model):
    """MQTT bridge for hardware in the loop (``cps-sim hil``)."""

    url: str | None = Field(
        None,
        pattern=r"^(mqtts?|tcp|ssl)://[^/@\s]+(:\d+)?/?$",
        description="Broker URL mqtt://host:port or mqtts://host:port; "
        "default: cps-sim hil starts an embedded broker (or use --broker).",
    )
    username: str | None = Field(
        None,
        min_length=1,
        max_length=256,
        description="Broker user name (the password comes from "
        "password_env or password_file, never from this file).",
    )
    password: Any = Field(None, description="Not allowed: use password_env or password_file.")
    password_env: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$",
        description="Name of the environment variable holding the password.",
    )
    password_file: str | None = Field(
        None, description="File holding the password (first line), relative to the scenario."
    )
    tls: BridgeTlsSpec | None = Field(
        None, description="TLS settings (CA, client certificate); none: plain TCP."
    )
    protocol: Literal["5", "3.1.1"] = Field("5", description="MQTT protocol version.")
    prefix: str | None = Field(
        None,
        description="Topic prefix; default cps/<scenario name>. "
        "Runs sharing a broker need different prefixes.",
    )
    homeassistant: bool = Field(
        False,
        description="Announce simulated and emulated devices with Home Assistant MQTT discovery.",
    )
    discovery_prefix: str = Field(
        "homeassistant",
        pattern=_ID,
        description="Home Assistant MQTT discovery prefix for the published entities.",
    )
    keepalive_s: int = Field(
        10,
        ge=2,
        le=3600,
        description="MQTT keepalive [s]: a silent broker is detected after about 1.5 x this.",
    )
    max_skew_s: float = Field(
        60.0,
        gt=0,
        le=86400,
        description="Messages whose ts is further "
        "from the receive time are flagged clock_skew (receive time "
        "used).",
    )
    max_lag_s: float | None = Field(
        None,
        gt=0,
        le=3600,
        description="Strict real time: when a tick is settled more than this many wall "
        "seconds late, the run stops (results up to then written, reason in kpis.json and "
        "bridge_events.parquet, cps-sim hil exits 4); default: lag is only measured and "
        "reported (cps-sim hil --strict-lag-s overrides).",
    )
    queue_size: int = Field(
        10_000,
        ge=10,
        le=10_000_000,
        description="Inbound queue bound; messages beyond it are dropped and counted.",
    )
    devices: list[BridgeDeviceSpec] = Field(
        default_factory=list,
        max_length=10_000,
        description="Real or emulated devices, each bound to one member of a site group.",
    )
    expose: list[ExposeSpec] = Field(
        default_factory=list,
        description="Groups that external controllers drive (a plain group name is enough).",
    )

    @field_validator("password")
    @classmethod
    def _no_password(cls, v: Any) -> None:
        if v is not None:
            raise ValueError(
                "passwords do not belong in scenario files (they end up in "
                "results and version control): set password_env to the name of "
                "an environment variable, or password_file to a file"
            )
        return None

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, v: str | None) -> str | None:
        if v is not None and not _PREFIX.match(v):
            raise ValueError(
                f"prefix {v!r}: 1 to 8 levels of [A-Za-z0-9_-] separated by '/' "
                "(no wildcards, no leading or trailing '/')"
            )
        return v

    @field_validator("expose", mode="before")
    @classmethod
    def _names(cls, v: Any) -> Any:
        if isinstance(v, list):
            return [{"group": x} if isinstance(x, str) else x for x in v]
        return v

    @model_validator(mode="after")
    def _unique(self) -> BridgeSpec:
        names = [d.name for d in self.devices]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"device names must be unique, repeated: {', '.join(dup)}")
        groups = [e.group for e in self.expose]
        dup = sorted({n for n in groups if groups.count(n) > 1})
        if dup:
            raise ValueError(f"expose lists a group twice: {', '.join(dup)}")
        if self.password_env and self.password_file:
            raise ValueError("give password_env or password_file, not both")
        if (self.password_env or self.password_file) and not self.username:
            raise ValueError("a password needs a username")
        members = [(d.binds.group, d.binds.site, d.binds.kind) for d in self.devices]
        dup_m = sorted({m for m in members if members.count(m) > 1})
        if dup_m:
            raise ValueError(f"two devices bind the same member: {dup_m[0]}")
        return self

    def prefix_for(self, scenario_name: str) -> str:
        if self.prefix:
            return self.prefix
        safe = re.sub(r"[^A-Za-z0-9_-]", "_", scenario_name)[:64]
        return f"cps/{safe}"
