"""Every setting in one declarative table, loaded once.

Precedence: defaults < config file (TOML) < ``STATEKEEPER_*`` environment <
command-line flags. A secret may also come from ``STATEKEEPER_<NAME>_FILE``.
The README documents every entry of :data:`SETTINGS` (a test checks it).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from statekeeper.errors import ConfigError
from statekeeper.terraform.layout import DEFAULT_WORKSPACE_PREFIX
from statekeeper.terraform.lockinfo import MAX_LOCK_INFO

__all__ = ["SETTINGS", "Setting", "Settings", "load_settings"]


def _size(text: str) -> int:
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    size = int(float(t[:-1]) * units[t[-1]]) if t and t[-1] in units else int(t)
    if size <= 0:
        raise ValueError("a size must be a positive number of bytes (or with K/M/G)")
    return size


def _port(text: str) -> int:
    port = int(text)
    if not 1 <= port <= 65535:
        raise ValueError("a port is a number from 1 to 65535")
    return port


def _bool(text: str) -> bool:
    if text.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if text.strip().lower() in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{text!r} is not a yes/no value")


@dataclass(frozen=True)
class Setting:
    name: str
    parse: Callable[[str], Any]
    default: Any
    help: str
    secret: bool = False

    @property
    def env(self) -> str:
        return "STATEKEEPER_" + self.name.upper()


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "data_dir",
        Path,
        Path(".statekeeper"),
        "Directory of the embedded store (created on first use).",
    ),
    Setting(
        "store",
        str,
        None,
        "Store URL: sqlite:///…, s3://BUCKET[/PREFIX]; default: SQLite in data_dir.",
    ),
    Setting(
        "locks",
        str,
        None,
        "Lock URL(s), comma-separated: sqlite:///…, dynamodb://TABLE, s3lock://BUCKET; "
        "default: the store's own database.",
    ),
    Setting("host", str, "127.0.0.1", "Address the server binds."),
    Setting("port", _port, 8080, "Port the server listens on."),
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
        "workspace_key_prefix",
        str,
        DEFAULT_WORKSPACE_PREFIX,
        'Prefix of workspace states, as Terraform\'s backend "s3" names them.',
    ),
    Setting("log_level", str, "info", "Server log level: debug, info, warning, error."),
    Setting(
        "tokens_file",
        Path,
        None,
        "TOML file of API tokens (names, SHA-256 hashes, scopes, expiry) for stateless "
        "replicas; default: the tokens table of the embedded database.",
    ),
    Setting(
        "oidc_config",
        Path,
        None,
        "TOML file configuring OIDC (issuer, audience, JWKS, claim rules) for CI logins.",
    ),
    Setting(
        "master_key",
        str,
        None,
        "Turns on encryption at rest: 32 bytes in base64 or awskms://KEY; a comma-separated "
        "list also decrypts with the later keys. Also STATEKEEPER_MASTER_KEY_FILE.",
        secret=True,
    ),
    Setting("tls_cert", Path, None, "PEM certificate (chain) to serve HTTPS."),
    Setting("tls_key", Path, None, "PEM private key of tls_cert."),
    Setting(
        "rate_limit",
        float,
        20.0,
        "Requests per second each authenticated caller may sustain (0: no limit); more get 429.",
    ),
    Setting(
        "rate_burst", int, 200, "Requests a caller may make at once before rate_limit applies."
    ),
    Setting(
        "request_timeout",
        float,
        120.0,
        "Seconds a request may take before the server answers 503 (0: no limit).",
    ),
    Setting(
        "inventory_refresh",
        float,
        30.0,
        "Seconds the search index may lag states written past this server (by other replicas "
        'or Terraform\'s backend "s3"): older, a search first lists the store to catch up.',
    ),
    Setting(
        "session_secret",
        str,
        None,
        "Key signing the web UI's session cookies; replicas behind one load balancer need the "
        "same. Default: random per process (sessions end at restart). Also _FILE.",
        secret=True,
    ),
    Setting(
        "session_hours",
        float,
        12.0,
        "Hours a web UI sign-in lasts before the browser is sent to the sign-in page again.",
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
    workspace_key_prefix: str = DEFAULT_WORKSPACE_PREFIX
    log_level: str = "info"
    tokens_file: Path | None = None
    oidc_config: Path | None = None
    master_key: str | None = field(default=None, repr=False)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    rate_limit: float = 20.0
    rate_burst: int = 200
    request_timeout: float = 120.0
    inventory_refresh: float = 30.0
    session_secret: str | None = field(default=None, repr=False)
    session_hours: float = 12.0

    @property
    def store_url(self) -> str:
        if self.store:
            return self.store
        return f"sqlite:///{self.data_dir / 'statekeeper.db'}"

    @property
    def locks_url(self) -> str:
        return self.locks or self.store_url


assert {s.name for s in SETTINGS} == {f.name for f in fields(Settings)}, "settings table drift"


def _parse(setting: Setting, value: Any, source: str) -> Any:
    if value is None or not isinstance(value, str):
        return value
    try:
        return setting.parse(value)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{source}: {setting.name} = {value!r} is not valid: {exc}") from exc


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
        try:
            loaded = tomllib.loads(path.read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read the config file {path}: {exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"the config file {path} is not valid TOML: {exc}") from exc
        known = {s.name: s for s in SETTINGS}
        for key, value in loaded.items():
            name = key.replace("-", "_")
            if name not in known:
                raise ConfigError(
                    f"{path}: unknown setting {key!r}; known: " + ", ".join(sorted(known))
                )
            values[name] = _parse(
                known[name], str(value) if not isinstance(value, str) else value, str(path)
            )
    for s in SETTINGS:
        if s.env in env:
            values[s.name] = _parse(s, env[s.env], s.env)
        elif s.secret and env.get(s.env + "_FILE"):
            try:
                values[s.name] = Path(env[s.env + "_FILE"]).read_text().strip()
            except OSError as exc:
                raise ConfigError(f"{s.env}_FILE: cannot read the file: {exc}") from exc
    known = {s.name: s for s in SETTINGS}
    for name, value in (flags or {}).items():
        if value is not None:
            values[name] = _parse(
                known[name],
                value if not isinstance(value, int | Path) else str(value),
                f"--{name.replace('_', '-')}",
            )
    return Settings(**values)
