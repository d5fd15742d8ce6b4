"""Every setting in one declarative table, loaded once.

Precedence: defaults < config file (TOML) < ``STATEKEEPER_*`` environment <
command-line flags. A secret may also come from ``STATEKEEPER_<NAME>_FILE``.
``docs/configuration.md#settings`` documents every entry of :data:`SETTINGS`
(a test checks it).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from statekeeper.errors import BadRequest, ConfigError
from statekeeper.state.hygiene import HistoryPolicy, parse_history
from statekeeper.terraform.layout import DEFAULT_WORKSPACE_PREFIX
from statekeeper.terraform.lockinfo import MAX_LOCK_INFO

if TYPE_CHECKING:
    from statekeeper.state.lockpolicy import LockPolicy

__all__ = [
    "LOG_LEVELS",
    "SETTINGS",
    "HookSecret",
    "HookSetting",
    "Setting",
    "Settings",
    "format_size",
    "load_settings",
]


def format_size(n: int) -> str:
    """``512 B``, ``1 KiB``, ``1.5 MiB``, ``512 MiB``: the largest unit with at most one
    decimal, the way max_body is written (``512M``)."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            break
        value /= 1024
    if unit == "B":
        return f"{n} B"
    return f"{value:.1f}".removesuffix(".0") + f" {unit}"


def _size(text: str) -> int:
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    number = float(t[:-1]) if t and t[-1] in units else None
    if number is not None and not math.isfinite(number):
        raise ValueError("a size is a number of bytes (or with K/M/G), not inf or nan")
    size = int(number * units[t[-1]]) if number is not None else int(t)
    if size <= 0:
        raise ValueError("a size must be a positive number of bytes (or with K/M/G)")
    return size


def _workspace_key_prefix(text: str) -> str:
    from statekeeper.terraform.workspaces import check_prefix

    try:
        return check_prefix(text)
    except BadRequest as exc:
        raise ValueError(exc.message) from exc


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError("it must be a whole number") from None


def _count(minimum: int) -> Callable[[str], int]:
    """A parser of whole numbers from ``minimum`` up."""

    def parse(text: str) -> int:
        value = _whole(text)
        if value < minimum:
            raise ValueError(f"it must be a whole number from {minimum} up")
        return value

    return parse


def _amount(unit: str = "seconds", *, zero: str | None = None) -> Callable[[str], float]:
    """A parser of a finite number of ``unit``: more than 0, or 0 too when ``zero`` says
    what 0 means (``no limit``); never negative, nan or inf, none of which is a limit."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"it must be a number of {unit}") from None
        if not math.isfinite(value) or value < 0 or (value == 0 and zero is None):
            if zero is None:
                raise ValueError(f"it must be a number of {unit} more than 0")
            raise ValueError(f"it must be a number of {unit} from 0 (0: {zero}) up")
        return value

    return parse


def _port(text: str) -> int:
    port = _whole(text)
    if not 1 <= port <= 65535:
        raise ValueError("a port is a whole number from 1 to 65535")
    return port


#: uvicorn's and logging's levels; ``trace`` (uvicorn's own) is left out: statekeeper logs none.
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def _log_level(text: str) -> str:
    value = text.strip().lower()
    value = "warning" if value == "warn" else value  # logging's own alias
    if value not in LOG_LEVELS:
        raise ValueError(f"the log level is one of {', '.join(LOG_LEVELS)}")
    return value


def _log_format(text: str) -> str:
    value = text.strip().lower()
    if value not in ("auto", "text", "json"):
        raise ValueError("the log format is auto, text or json")
    return value


def _hooks_allow(text: str) -> str:
    from statekeeper.hooks.guard import parse_allow

    parse_allow(text)  # checked here, used as it is written when hooks are built
    return text


def _lock_policy(value: object) -> LockPolicy:
    from statekeeper.state.lockpolicy import LockPolicy

    try:
        return LockPolicy.parse(value)
    except ConfigError as exc:
        # Raised as a ValueError, it is named with its source like every other setting.
        raise ValueError(exc.message) from exc


def _nice(text: str) -> int:
    value = _whole(text)
    if not 0 <= value <= 19:
        raise ValueError("a nice increment is a number from 0 (off) to 19 (the lowest priority)")
    return value


def _kept(text: str) -> timedelta | None:
    """How long something is kept, in the one duration grammar; ``0s``: for ever (as
    ``history.trash`` says "until purged")."""
    from statekeeper.times import parse_duration

    try:
        kept = parse_duration(text, what="the value")
    except BadRequest as exc:
        raise ValueError(exc.message) from exc
    return kept or None


def _secret(text: str) -> str:
    # Blank would read as "no secret": encryption off, or a random session key, in silence.
    if not text.strip():
        raise ValueError("it is empty; remove it to leave it unset")
    return text


def _bool(text: str) -> bool:
    if text.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if text.strip().lower() in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{text!r} is not a yes/no value")


@dataclass(frozen=True)
class HookSecret:
    """Where a config file's hook keeps its signing secret: an environment variable
    (``secret_env``), a file (``secret_file``) or the config file itself (``secret``).

    Read by the processes that sign (``serve`` at start-up, its delivery worker,
    ``hooks test``), never when settings load: a command that delivers nothing works
    where the secret is not, such as an operator's machine sharing the server's file.
    """

    env: str | None = None
    file: Path | None = None
    value: str | None = field(default=None, repr=False)

    def __str__(self) -> str:
        """Where it is, for listings and messages: never the secret."""
        if self.env is not None:
            return f"env {self.env}"
        if self.file is not None:
            return f"file {self.file}"
        return "inline"

    def read(self, hook: str, env: Mapping[str, str]) -> str:
        """The secret of the hook ``hook``; a ConfigError naming the variable or the
        file (never a value) when it is not there."""
        if self.env is not None:
            secret = env.get(self.env, "")
            if not secret.strip():
                raise ConfigError(
                    f"hook {hook}: the environment variable {self.env} (its secret_env) is "
                    "not set or empty; set it to the hook's signing secret"
                )
            return secret
        if self.file is not None:
            try:
                secret = self.file.read_text().strip()
            except OSError as exc:
                raise ConfigError(f"hook {hook}: cannot read its secret_file: {exc}") from exc
            except UnicodeDecodeError as exc:
                raise ConfigError(
                    f"hook {hook}: its secret_file {self.file} is not UTF-8 text"
                ) from exc
            if not secret:
                raise ConfigError(f"hook {hook}: its secret_file {self.file} is empty")
            return secret
        assert self.value is not None  # one of the three, checked when settings load
        return self.value


@dataclass(frozen=True)
class HookSetting:
    """A webhook subscription from the config file (``[[hooks]]``)."""

    name: str
    url: str
    secret: HookSecret
    events: tuple[str, ...] | None = None
    states: tuple[str, ...] | None = None


_HOOK_KEYS = {"name", "url", "events", "states", "secret", "secret_env", "secret_file"}


def _hooks(text: str) -> tuple[HookSetting, ...]:
    """``[[hooks]]`` tables (in the environment: the same as a JSON array of objects)."""
    entries = json.loads(text)
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ValueError("hooks are a list of tables: [[hooks]] name = … url = …")
    out = []
    for i, entry in enumerate(entries):
        where = f"hook {entry.get('name') or i + 1}"
        unknown = sorted(set(entry) - _HOOK_KEYS)
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}")
        for key in ("name", "url"):
            if not isinstance(entry.get(key), str) or not entry[key]:
                raise ValueError(f"{where}: {key} is required, as a string")
        for key in ("events", "states"):
            value = entry.get(key)
            if value is not None and not (
                isinstance(value, list) and value and all(isinstance(v, str) for v in value)
            ):
                raise ValueError(f'{where}: {key} is a list of strings, e.g. {key} = ["…"]')
        sources = [k for k in ("secret", "secret_env", "secret_file") if entry.get(k)]
        if len(sources) != 1:
            raise ValueError(
                f"{where}: give its signing secret as one of secret_env (an environment "
                "variable's name), secret_file or secret"
            )
        if not isinstance(entry[sources[0]], str):
            # Checked now: the secret is read only by a process that signs.
            raise ValueError(f'{where}: {sources[0]} is a string, e.g. {sources[0]} = "…"')
        out.append(
            HookSetting(
                name=entry["name"],
                url=entry["url"],
                secret=HookSecret(
                    env=entry.get("secret_env"),
                    file=Path(entry["secret_file"]) if entry.get("secret_file") else None,
                    value=entry.get("secret"),
                ),
                events=tuple(entry["events"]) if entry.get("events") else None,
                states=tuple(entry["states"]) if entry.get("states") else None,
            )
        )
    names = [h.name for h in out]
    if len(set(names)) != len(names):
        raise ValueError("two hooks have the same name")
    return tuple(out)


@dataclass(frozen=True)
class Setting:
    name: str
    #: Reads the text of the env or a flag (a table setting: also the TOML table).
    parse: Callable[[Any], Any]
    default: Any
    help: str
    secret: bool = False
    #: The command-line flag that sets it (global, or of ``serve``); None: file and env only.
    flag: str | None = None
    #: Several values: a TOML list, or comma-separated in the environment and a
    #: string (``locks = ["dynamodb://t", "s3lock://b"]`` or ``"dynamodb://t,s3lock://b"``).
    multiple: bool = False
    #: A TOML table (``[lock_policy]``); in the environment, that table's TOML text.
    table: bool = False
    #: A list of TOML tables (``[[hooks]]``); in the environment a JSON array of objects.
    tables: bool = False
    #: Not a secret itself, but may hold one ([[hooks]] with a ``secret``).
    holds_secrets: bool = False

    @property
    def env(self) -> str:
        return "STATEKEEPER_" + self.name.upper()

    @property
    def given_as(self) -> str:
        """Every way it is given, for a message that asks to correct it."""
        flag = f"{self.flag}, " if self.flag else ""
        return f"{flag}{self.env} or {self.name} in the config file"

    @property
    def shown(self) -> bool:
        """Whether a message may repeat its value: never a secret's, in any error."""
        return not (self.secret or self.holds_secrets)


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "data_dir",
        Path,
        Path(".statekeeper"),
        "Directory of the embedded store (made by the first command that writes).",
        flag="--data-dir",
    ),
    Setting(
        "store",
        str,
        None,
        "Store URL: sqlite:///…, s3://BUCKET[/PREFIX]; default: SQLite in data_dir.",
        flag="--store",
    ),
    Setting(
        "locks",
        str,
        None,
        "Lock URL(s): sqlite:///…, dynamodb://TABLE, s3lock://BUCKET; several as a TOML list "
        "or comma-separated; default: the store's own (its database, or lock files on S3).",
        multiple=True,
        flag="--locks",
    ),
    Setting("host", str, "127.0.0.1", "Address the server binds.", flag="--host"),
    Setting("port", _port, 8080, "Port the server listens on.", flag="--port"),
    Setting(
        "max_body",
        _size,
        512 * 1024**2,
        "Largest request body accepted (bytes, or with K/M/G); larger gets 413.",
    ),
    Setting(
        "max_lock_info",
        _size,
        MAX_LOCK_INFO,
        "Largest LockInfo a LOCK or UNLOCK may carry (bytes, or with K/M); larger gets 413.",
    ),
    Setting(
        "lock_wait",
        _amount(zero="answer at once"),
        1.0,
        "Seconds a LOCK retried after a 423, on a state this server has locked, waits for "
        "its UNLOCK before answering 423 again (0: answer at once).",
    ),
    Setting(
        "workspace_key_prefix",
        _workspace_key_prefix,
        DEFAULT_WORKSPACE_PREFIX,
        'Prefix of workspace states, as Terraform\'s backend "s3" names them (W of KEY is '
        "PREFIX/W/KEY); 'states PREFIX' lists the workspace states of the keys under PREFIX.",
    ),
    Setting(
        "log_level",
        _log_level,
        "info",
        "Server log level: debug, info, warning (or warn), error, critical.",
        flag="--log-level",
    ),
    Setting(
        "log_format",
        _log_format,
        "auto",
        "Server log lines: text, json (one JSON object a line), or auto (text on a terminal, "
        "JSON otherwise).",
    ),
    Setting(
        "ready_timeout",
        _amount(),
        2.0,
        "Seconds /readyz waits for the store and the lock table to answer before it says 503.",
    ),
    Setting("metrics", _bool, True, "Count requests, locks, writes and store calls for /metrics."),
    Setting(
        "metrics_listen",
        str,
        None,
        "HOST:PORT of a second listener serving only /metrics, with no credentials needed "
        "(default: /metrics on the main port, behind the 'metrics' permission).",
    ),
    Setting(
        "hooks_allow",
        _hooks_allow,
        None,
        "Comma-separated hosts and networks webhooks may reach although the guard refuses "
        "them (loopback, link-local, cloud metadata).",
    ),
    Setting("hooks_attempts", _count(1), 10, "Delivery attempts of a webhook before it is dead."),
    Setting(
        "hooks_backoff",
        _amount(),
        5.0,
        "Seconds before a webhook's first retry; doubled at each retry (at most an hour), "
        "with jitter.",
    ),
    Setting(
        "hooks",
        _hooks,
        (),
        "Webhook subscriptions kept in the config file, as [[hooks]] tables (name, url, "
        "events, states, and the secret from secret_env or secret_file); listed by "
        "'hooks list' as from the config, not removable with 'hooks remove'.",
        tables=True,
        holds_secrets=True,
    ),
    Setting(
        "hooks_stale_after",
        _amount(zero="never"),
        7200.0,
        "Seconds a lock is held before a lock.stale webhook is sent (0: never).",
    ),
    Setting(
        "hooks_deliveries_kept",
        _kept,
        timedelta(days=30),
        "How long the webhook delivery log keeps an attempt (a duration: 30d, 12h; "
        "0s: for ever); the dead letters stay.",
    ),
    Setting(
        "hooks_worker_nice",
        _nice,
        10,
        "How much lower the CPU priority of the webhook delivery worker is than the "
        "server's (os.nice: 0 to 19; 0: the same), so that a busy server's requests come "
        "first and deliveries wait for idle CPU.",
    ),
    Setting(
        "metrics_states",
        str,
        None,
        "Comma-separated state globs (team/**) whose metrics carry a state label; "
        "default: none, so the number of series does not grow with the number of states.",
    ),
    # The lock policy: one table, documented in configuration.md#lock-policy.
    Setting(
        "lock_policy",
        _lock_policy,
        None,
        "Table [lock_policy]: lock mode (exclusive or shared-plans, the default) and lock "
        "leases by operation, per state glob; see the lock policy section.",
        table=True,
    ),
    Setting(
        "tokens_file",
        Path,
        None,
        "TOML file of API tokens (names, SHA-256 hashes, scopes, expiry) for stateless "
        "replicas; default: the tokens table of the embedded database.",
        flag="--tokens-file",
    ),
    Setting(
        "oidc_config",
        Path,
        None,
        "TOML file configuring OIDC (issuer, audience, JWKS, claim rules) for CI logins.",
        flag="--oidc-config",
    ),
    Setting(
        "master_key",
        _secret,
        None,
        "Turns on encryption at rest: 32 bytes in base64 or awskms://KEY; a comma-separated "
        "list also decrypts with the later keys, and seals with a later key once a rotation "
        "makes it the store's key. Also STATEKEEPER_MASTER_KEY_FILE.",
        secret=True,
    ),
    Setting("tls_cert", Path, None, "PEM certificate (chain) to serve HTTPS.", flag="--tls-cert"),
    Setting("tls_key", Path, None, "PEM private key of tls_cert.", flag="--tls-key"),
    Setting(
        "rate_limit",
        _amount("requests per second", zero="no limit"),
        20.0,
        "Requests per second each authenticated caller may sustain (0: no limit); more get 429.",
    ),
    Setting(
        "rate_burst",
        _count(1),
        200,
        "Requests a caller may make at once before rate_limit applies.",
    ),
    Setting(
        "request_timeout",
        _amount(zero="no limit"),
        120.0,
        "Seconds a request may take before the server answers 503 (0: no limit).",
    ),
    Setting(
        "header_timeout",
        _amount(zero="no limit"),
        60.0,
        "Seconds a client may take to send its request headers before the connection is "
        "closed with 408 (0: no limit); nginx's client_header_timeout.",
    ),
    Setting(
        "max_connections",
        _count(1),
        512,
        "Connections open at once; one more is answered 503 and closed.",
    ),
    Setting(
        "inventory_refresh",
        _amount(zero="search always catches up first"),
        30.0,
        "Seconds the search index may lag states written past this server (by other replicas "
        'or Terraform\'s backend "s3"): older, a search first lists the store to catch up.',
    ),
    Setting(
        "search_time_limit",
        _amount(zero="no limit"),
        1.0,
        "Seconds one search may run over the search index (which it holds meanwhile) before "
        "it is stopped and answered 400 search_too_costly, to be narrowed (0: no limit).",
    ),
    Setting(
        "session_secret",
        _secret,
        None,
        "Key signing the web UI's session cookies; replicas behind one load balancer need the "
        "same. Default: random per process (sessions end at restart). Also _FILE.",
        secret=True,
    ),
    Setting(
        "session_hours",
        _amount("hours"),
        12.0,
        "Hours a web UI sign-in lasts before the browser is sent to the sign-in page again.",
    ),
    Setting(
        "history",
        parse_history,
        HistoryPolicy(),
        "The [history] table: compaction of intermediate snapshots, retention rules per "
        "glob, how long deleted states stay in the trash, the background prune interval.",
        table=True,
    ),
)


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path(".statekeeper")
    store: str | None = None
    locks: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    max_body: int = 512 * 1024**2
    max_lock_info: int = MAX_LOCK_INFO
    lock_wait: float = 1.0
    workspace_key_prefix: str = DEFAULT_WORKSPACE_PREFIX
    log_level: str = "info"
    log_format: str = "auto"
    ready_timeout: float = 2.0
    metrics: bool = True
    metrics_listen: str | None = None
    hooks_allow: str | None = None
    hooks_attempts: int = 10
    hooks_backoff: float = 5.0
    hooks: tuple[HookSetting, ...] = field(default=(), repr=False)
    hooks_stale_after: float = 7200.0
    hooks_deliveries_kept: timedelta | None = timedelta(days=30)
    hooks_worker_nice: int = 10
    metrics_states: str | None = None
    lock_policy: LockPolicy | None = None
    tokens_file: Path | None = None
    oidc_config: Path | None = None
    master_key: str | None = field(default=None, repr=False)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    rate_limit: float = 20.0
    rate_burst: int = 200
    request_timeout: float = 120.0
    header_timeout: float = 60.0
    max_connections: int = 512
    inventory_refresh: float = 30.0
    search_time_limit: float = 1.0
    session_secret: str | None = field(default=None, repr=False)
    session_hours: float = 12.0
    history: HistoryPolicy = field(default_factory=HistoryPolicy)

    @property
    def store_url(self) -> str:
        if self.store:
            return self.store
        return f"sqlite:///{self.data_dir / 'statekeeper.db'}"

    @property
    def locks_url(self) -> str:
        return self.locks or self.store_url

    @property
    def store_given_as(self) -> str:
        """Where the store URL is given (see ``DriverURL.given_as``)."""
        return _SETTING["store"].given_as

    @property
    def locks_given_as(self) -> str:
        """Where the lock URL is given: with no ``locks``, the store's URL is it."""
        return _SETTING["locks" if self.locks else "store"].given_as


assert {s.name for s in SETTINGS} == {f.name for f in fields(Settings)}, "settings table drift"
_SETTING = {s.name: s for s in SETTINGS}


def _parse(setting: Setting, value: Any, source: str) -> Any:
    # A table setting's TOML table is parsed like its text: its errors name the setting.
    if value is None or not isinstance(value, str | dict):
        return value
    try:
        return setting.parse(value)
    except (ValueError, TypeError) as exc:
        given = f" = {value!r}" if setting.shown else ""
        raise ConfigError(f"{source}: {setting.name}{given} is not valid: {exc}") from exc


def _from_toml(setting: Setting, value: object, path: Path) -> object:
    """A TOML value as the text the setting's parser reads (env and flags are text);
    a table setting's table as it is."""
    if setting.tables:
        if not isinstance(value, list):
            raise ConfigError(f"{path}: {setting.name} are tables: [[{setting.name}]]")
        return json.dumps(value, default=str)
    if isinstance(value, list):
        if not setting.multiple:
            raise ConfigError(f"{path}: {setting.name} takes one value, not a list")
        if not value or not all(isinstance(v, str) and v and "," not in v for v in value):
            raise ConfigError(
                f"{path}: {setting.name} must be a list of URLs, e.g. "
                f'{setting.name} = ["dynamodb://TABLE", "s3lock://BUCKET"]'
            )
        return ",".join(value)
    if isinstance(value, dict) and setting.table:
        return value
    if isinstance(value, dict):
        raise ConfigError(f"{path}: {setting.name} is a single value, not a table")
    if setting.table:
        raise ConfigError(
            f"{path}: {setting.name} is a table, not a single value: write it as "
            f"[{setting.name}] with its keys below (see docs/configuration.md)"
        )
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else str(value)


def _secret_file(setting: Setting, path: Path) -> str:
    variable = setting.env + "_FILE"
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"{variable}: cannot read the file {path}: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{variable}: the file {path} is not UTF-8 text") from exc
    if not text:
        # An empty file is most often a secret that was not mounted: refusing beats
        # starting without the secret (encryption at rest off, in silence).
        raise ConfigError(
            f"{variable}: the file {path} is empty; it must hold the {setting.name} "
            f"(or unset {variable} to leave {setting.name} unset)"
        )
    return text


def load_settings(
    flags: Mapping[str, Any] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> Settings:
    """Settings from defaults, then the config file, then the environment, then flags."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {s.name: s.default for s in SETTINGS}
    path = config_file or (
        Path(env["STATEKEEPER_CONFIG"]) if env.get("STATEKEEPER_CONFIG") else None
    )
    if path is not None:
        import tomllib  # here: only a config file needs it, and it costs a CLI's start-up

        try:
            loaded = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read the config file {path}: {exc}") from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"the config file {path} is not UTF-8 text ({exc.reason} at byte {exc.start}); "
                "TOML files must be UTF-8"
            ) from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"the config file {path} is not valid TOML: {exc}") from exc
        known = {s.name: s for s in SETTINGS}
        for key, value in loaded.items():
            name = key.replace("-", "_")
            if name not in known:
                raise ConfigError(
                    f"{path}: unknown setting {key!r}; known: " + ", ".join(sorted(known))
                )
            values[name] = _parse(known[name], _from_toml(known[name], value, path), str(path))
    for s in SETTINGS:
        # A variable set to nothing (VAR=) leaves a setting that is off by default unset,
        # as if it were not there; a setting with a value by default must be given one.
        if env.get(s.env) or (s.env in env and s.default is not None):
            values[s.name] = _parse(s, env[s.env], s.env)
        elif s.secret and env.get(s.env + "_FILE"):
            values[s.name] = _secret_file(s, Path(env[s.env + "_FILE"]))
    known = {s.name: s for s in SETTINGS}
    for name, value in (flags or {}).items():
        if value is not None:
            values[name] = _parse(
                known[name],
                value if not isinstance(value, int | Path) else str(value),
                f"--{name.replace('_', '-')}",
            )
    return Settings(**values)
