"""What the simulator is told: :class:`SimConfig` (fixed at start) and :class:`Faults`.

Each field has one parser, shared by code, the ``KISI_SIM_*`` environment and the admin API,
so a bad value fails the same way everywhere, with a message naming the field or variable.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from kisi_sim.identity import (
    AUTH_SCHEMES,
    KISI_LOGIN,
    SCHEME_BY_WORD,
    Account,
    key_fingerprint,
    looks_like_email,
)
from kisi_sim.responses import FAULT_ERRORS, RATE_LIMIT_BODIES
from kisi_sim.store import COLLECTIONS, DEFAULT_SEED_COUNTS, JsonObject

__all__ = [
    "CONFIG_FIELDS",
    "DEFAULT_ROUTE_RATES",
    "DEMO_EMAIL",
    "DEMO_KEY",
    "DEMO_PASSWORD",
    "FALSE_WORDS",
    "FAULT_FIELDS",
    "Faults",
    "SimConfig",
    "SimConfigError",
    "key_fingerprint",
]

DEMO_KEY: Final = "sim-demo-key"
# The demo account (user 1, whose seeded e-mail this is) for POST /logins.
DEMO_EMAIL: Final = "user1@example.com"
DEMO_PASSWORD: Final = "sim-demo-password"  # noqa: S105 -- a published demo value, like DEMO_KEY

DEFAULT_ROUTE_RATES: Final[Mapping[str, float]] = {
    "POST /event_sets": 1.0,  # Kisi: 1 per second
    "POST /signed_upload_urls": 0.1,  # Kisi: 1 per 10 seconds
}


class SimConfigError(ValueError):
    """A configuration value is invalid; the message names the field or variable."""


Parser = Callable[[object], Any]


def _decode_json(value: object) -> object:
    """Strings (from the environment) hold JSON; anything else is already decoded."""
    if not isinstance(value, str):
        return value
    try:
        decoded: object = json.loads(value)
    except ValueError:
        raise ValueError("must be JSON") from None
    return decoded


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"must be a number, got {value!r}")
    try:
        result = float(value)
    except ValueError:
        raise ValueError(f"must be a number, got {value!r}") from None
    if not math.isfinite(result):
        raise ValueError("must be finite")
    return result


def _integer(value: object) -> int:
    number = _number(value)
    if not number.is_integer():
        raise ValueError(f"must be an integer, got {value!r}")
    return int(number)


def _probability(value: object) -> float:
    result = _number(value)
    if not 0.0 <= result <= 1.0:
        raise ValueError("must be between 0 and 1")
    return result


def _non_negative_int(value: object) -> int:
    result = _integer(value)
    if result < 0:
        raise ValueError("must be >= 0")
    return result


def _positive_int(value: object) -> int:
    result = _integer(value)
    if result < 1:
        raise ValueError("must be >= 1")
    return result


def _non_negative_number(value: object) -> float:
    result = _number(value)
    if result < 0:
        raise ValueError("must be >= 0")
    return result


def _positive_number(value: object) -> float:
    result = _number(value)
    if result <= 0:
        raise ValueError("must be > 0")
    return result


def _optional_number(value: object) -> float | None:
    return None if value is None or value == "" else _non_negative_number(value)


TRUE_WORDS: Final = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS: Final = frozenset({"0", "false", "no", "off"})


def _flag(value: object) -> bool:
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word in TRUE_WORDS | FALSE_WORDS:
        return word in TRUE_WORDS
    raise ValueError(f"must be true or false, got {value!r}")


def _error_status(value: object) -> int:
    status = _integer(value)
    if status not in FAULT_ERRORS:
        raise ValueError(f"must be one of {sorted(FAULT_ERRORS)}")
    return status


def _rate_limit_body(value: object) -> str:
    if not isinstance(value, str) or value not in RATE_LIMIT_BODIES:
        raise ValueError(f"must be one of {sorted(RATE_LIMIT_BODIES)}")
    return str(value)


def _key_list(value: object) -> tuple[str, ...]:
    """Comma list or JSON array (env) or a sequence of strings (code, admin API)."""
    if isinstance(value, str):
        text = value.strip()
        items: object = _decode_json(text) if text.startswith("[") else text.split(",")
    else:
        items = value
    if not isinstance(items, list | tuple) or not all(isinstance(k, str) for k in items):
        raise ValueError("must be a list of strings")
    return tuple(k.strip() for k in items if k.strip())


def _mapping(value: object) -> Mapping[str, object]:
    decoded = _decode_json(value)
    if not isinstance(decoded, Mapping):
        raise ValueError("must be a JSON object")
    return decoded


def _key_map(value: object) -> dict[str, int]:
    """Secrets to user ids; the message never repeats a secret."""
    keys = {str(secret): user for secret, user in _mapping(value).items()}
    try:
        return {secret: _positive_int(user) for secret, user in keys.items()}
    except ValueError:
        raise ValueError("must map each secret to a positive user id") from None


def _account_map(value: object) -> dict[str, Account]:
    """E-mail -> ``{"password", "user_id"}`` (or an :class:`Account`); e-mails compare
    case-insensitively, as Kisi's do. The message never repeats a password."""
    accounts: dict[str, Account] = {}
    for email, entry in _mapping(value).items():
        if not looks_like_email(email):
            raise ValueError(f"{email!r} is not an e-mail address")
        if isinstance(entry, Account):
            account = entry
        elif isinstance(entry, Mapping) and isinstance(entry.get("password"), str):
            try:
                account = Account(str(entry["password"]), _positive_int(entry.get("user_id")))
            except ValueError:
                raise ValueError(f"{email}: user_id must be a positive integer") from None
        else:
            raise ValueError(f"{email}: must be an object with a password string and a user_id")
        if not account.password:
            raise ValueError(f"{email}: the password must not be empty")
        accounts[email.strip().lower()] = account
    return accounts


def _credential_map(value: object) -> dict[str, dict[str, int]]:
    """Scheme -> (secret -> user id) for the schemes other than ``KISI-LOGIN`` (``keys``)."""
    credentials: dict[str, dict[str, int]] = {}
    for scheme, secrets_of_scheme in _mapping(value).items():
        canonical = SCHEME_BY_WORD.get(str(scheme).upper())
        if canonical is None or canonical == KISI_LOGIN:
            others = [s for s in AUTH_SCHEMES if s != KISI_LOGIN]
            raise ValueError(f"scheme {str(scheme)[:32]!r} must be one of {others} "
                             "(KISI-LOGIN secrets go in keys)")
        try:
            credentials[canonical] = _key_map(secrets_of_scheme)
        except ValueError as error:
            raise ValueError(f"{canonical}: {error}") from None
    return credentials


def _seed_counts(value: object) -> dict[str, int]:
    counts = dict(_mapping(value))
    unknown = sorted(set(counts) - set(COLLECTIONS))
    if unknown:
        raise ValueError(f"unknown collections {unknown}")
    return {name: _non_negative_int(counts.get(name, n)) for name, n in DEFAULT_SEED_COUNTS.items()}


def _rate_map(value: object) -> dict[str, float]:
    return {str(route): _positive_number(rate) for route, rate in _mapping(value).items()}


def _text_map(value: object) -> dict[str, str]:
    return {str(route): str(text) for route, text in _mapping(value).items()}


def _env_name(field_name: str) -> str:
    """The one naming rule: ``rate_per_s`` is read from ``KISI_SIM_RATE_PER_S``."""
    return f"KISI_SIM_{field_name.upper()}"


def _normalize_fields(instance: object, parsers: Mapping[str, Parser]) -> None:
    """Validate and normalize every field of a frozen dataclass through its parser.

    Parsers accept raw strings too, so code, environment and admin API share one table.
    """
    for name, parser in parsers.items():
        try:
            value = parser(getattr(instance, name))
        except ValueError as error:
            raise SimConfigError(f"{name}: {error}") from None
        object.__setattr__(instance, name, value)


def _read_env(environ: Mapping[str, str], parsers: Mapping[str, Parser]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, parser in parsers.items():
        variable = _env_name(name)
        raw = environ.get(variable, "")
        if raw.strip() == "":
            continue
        try:
            values[name] = parser(raw)
        except ValueError as error:
            raise SimConfigError(f"{variable}: {error}") from None
    return values


@dataclass(frozen=True)
class Faults:
    """Failures to inject; settable at start (config, env) and at runtime (admin API).

    ``outage_seconds`` is an input only: the simulator turns it into ``outage_until`` (wall
    clock) when the faults are applied. ``revoked_keys`` may hold secrets or fingerprints.
    """

    error_rate: float = 0.0
    error_status: int = 503
    latency_ms: int = 0
    hang_ms: int = 0
    hang_rate: float = 1.0
    outage_until: float | None = None
    outage_seconds: float | None = None
    retry_after: bool = True
    rate_limit_body: str = "text"
    revoked_keys: tuple[str, ...] = ()
    suspend_after_bad: int = 0
    suspend_window_s: float = 60.0

    def __post_init__(self) -> None:
        _normalize_fields(self, FAULT_FIELDS)

    def merged(self, changes: Mapping[str, object]) -> Faults:
        """These faults with ``changes`` applied (a JSON merge); unknown names are errors."""
        unknown = sorted(set(changes) - set(FAULT_FIELDS))
        if unknown:
            raise SimConfigError(f"unknown fault fields {unknown}")
        updates: dict[str, Any] = dict(changes)
        return dataclasses.replace(self, **updates)

    def resolved(self, now: float) -> Faults:
        """``outage_seconds`` turned into an absolute ``outage_until``."""
        if self.outage_seconds is None:
            return self
        return dataclasses.replace(
            self, outage_until=now + self.outage_seconds, outage_seconds=None
        )

    def outage_active(self, now: float) -> bool:
        return self.outage_until is not None and now < self.outage_until

    def is_revoked(self, secret: str) -> bool:
        return secret in self.revoked_keys or key_fingerprint(secret) in self.revoked_keys

    def view(self, now: float) -> JsonObject:
        """The admin API's picture of the faults: revoked keys as fingerprints only."""
        shown = dataclasses.asdict(self)
        shown["revoked_keys"] = [
            k if k.startswith("sha256:") else key_fingerprint(k) for k in self.revoked_keys
        ]
        shown["outage_active"] = self.outage_active(now)
        return shown


FAULT_FIELDS: Final[Mapping[str, Parser]] = {
    "error_rate": _probability,
    "error_status": _error_status,
    "latency_ms": _non_negative_int,
    "hang_ms": _non_negative_int,
    "hang_rate": _probability,
    "outage_until": _optional_number,
    "outage_seconds": _optional_number,
    "retry_after": _flag,
    "rate_limit_body": _rate_limit_body,
    "revoked_keys": _key_list,
    "suspend_after_bad": _non_negative_int,
    "suspend_window_s": _positive_number,
}


@dataclass(frozen=True)
class SimConfig:
    """Everything fixed at start: keys, accounts and other credentials, seed data, rate limits,
    deprecations, initial faults.

    Mapping fields may be given partially (``seed_counts={"locks": 3}``); they are validated
    and completed with the defaults on construction.
    """

    keys: Mapping[str, int] = field(default_factory=lambda: {DEMO_KEY: 1})
    accounts: Mapping[str, Account] = field(
        default_factory=lambda: {DEMO_EMAIL: Account(DEMO_PASSWORD, 1)}
    )
    credentials: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    seed: int = 0
    seed_counts: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_SEED_COUNTS))
    rate_per_s: float = 5.0  # Kisi: 5 requests per second per user
    burst: int = 5
    route_rates: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_ROUTE_RATES))
    deprecated_routes: Mapping[str, str] = field(default_factory=dict)
    faults: Faults = field(default_factory=Faults)
    verbose: bool = False

    def __post_init__(self) -> None:
        _normalize_fields(self, CONFIG_FIELDS)
        if not isinstance(self.faults, Faults):
            raise SimConfigError("faults: must be a Faults instance")

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> SimConfig:
        """Read ``KISI_SIM_*`` variables (see the module docstring).

        >>> SimConfig.from_env({"KISI_SIM_ERROR_RATE": "0.5"}).faults.error_rate
        0.5
        """
        faults = Faults(**_read_env(environ, FAULT_FIELDS))
        return cls(**_read_env(environ, CONFIG_FIELDS), faults=faults)


CONFIG_FIELDS: Final[Mapping[str, Parser]] = {
    "keys": _key_map,
    "accounts": _account_map,
    "credentials": _credential_map,
    "seed": _integer,
    "seed_counts": _seed_counts,
    "rate_per_s": _positive_number,
    "burst": _positive_int,
    "route_rates": _rate_map,
    "deprecated_routes": _text_map,
    "verbose": _flag,
}
