"""One exception hierarchy.  The CLI prints ``str(exc)`` and exits non-zero."""

from __future__ import annotations

from dataclasses import dataclass


class CpsSimError(Exception):
    """Base class of every error cps_sim raises on purpose."""

    exit_code = 1


def cut(text: str, limit: int = 60) -> str:
    """``text`` shortened to ``limit`` characters (ending in ``...``) for a message, so that
    a 100 kB value in an input file stays one line of the error."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def short_repr(value: object, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters (:func:`cut`)."""
    return cut(repr(value), limit)


@dataclass(frozen=True)
class Issue:
    """One problem found in an input file: where it is and what is wrong."""

    path: str  # path inside the document, e.g. "sites[0].battery.capacity_kwh"
    message: str
    line: int | None = None  # 1-based
    column: int | None = None  # 1-based

    def format(self, file: str | None) -> str:
        where = file or "<scenario>"
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        if self.path:
            return f"{where}: {self.path}: {self.message}"
        return f"{where}: {self.message}"


class ScenarioError(CpsSimError):
    """A scenario (or sweep) file cannot be used.  Lists every problem found."""

    exit_code = 2

    def __init__(self, file: str | None, issues: list[Issue] | None = None):
        if issues is None:  # ScenarioError("message"): one issue without a location
            file, issues = None, [Issue("", str(file))]
        self.file = file
        self.issues = list(issues)
        super().__init__("\n".join(i.format(file) for i in self.issues))

    @classmethod
    def single(
        cls,
        file: str | None,
        path: str,
        message: str,
        line: int | None = None,
        column: int | None = None,
    ) -> ScenarioError:
        return cls(file, [Issue(path, message, line, column)])


class InputFileError(CpsSimError):
    """An input file cannot be read at all: missing, not a regular file, too large,
    unreadable.  ``path`` is the file as given, ``reason`` the problem alone (callers that
    report through their own error class use it)."""

    exit_code = 2

    def __init__(self, path: str, reason: str):
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class SimulationError(CpsSimError):
    """The simulation reached a state it must not (an invariant broke)."""


class ResultsError(CpsSimError):
    """Results could not be written or read."""


class ResultsInputError(ResultsError):
    """Results given as input (``report``, ``compare``, ``replay``, ``sweep --resume``)
    cannot be used: a folder or file missing, damaged or not what cps_sim wrote, or an
    option that does not fit them.  Bad input, like a scenario error (exit code 2)."""

    exit_code = 2


class DiskFullError(ResultsError):
    """Results could not be written: no space left, or a file-size limit reached."""


class BridgeError(CpsSimError):
    """Hardware-in-the-loop transport failure."""


class BridgeUnavailable(BridgeError):
    """No broker answered (not running, wrong host/port, no CONNACK in time)."""


class BridgeAuthError(BridgeError):
    """The broker refused the login (bad user name or password, not authorised)."""


class BridgeTlsError(BridgeError):
    """The TLS handshake failed (untrusted or wrong certificate, bad key, old protocol)."""


class RealTimeOverrun(BridgeError):
    """A strict real-time run (``--strict-lag-s`` / ``bridge.max_lag_s``) fell further
    behind the wall clock than allowed; the results up to that tick are written."""

    exit_code = 4
