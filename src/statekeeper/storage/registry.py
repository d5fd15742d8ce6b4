"""Driver selection by URL scheme, imported lazily.

A scheme maps to a module that exposes ``open_store(url, create=…)`` and/or
``open_locks(url, store, create=…)``. Modules are imported only when their scheme is
used, so the CLI does not pay for boto3 unless it talks to AWS, and a missing
extra becomes a :class:`~statekeeper.errors.MissingDependency` that says what
to install.

Only the schemes a user may name are here. The in-process reference drivers
(:mod:`statekeeper.storage.memory`) are not: nothing they hold survives the
process, so a ``memory://`` store or lock table given by mistake would take a
push and lose it at exit, or grant a lock nobody else sees. Tests build them
directly.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlsplit

from statekeeper.errors import ConfigError, MissingDependency

if TYPE_CHECKING:
    from statekeeper.storage.base import LockTable, ObjectStore

__all__ = ["LOCK_SCHEMES", "STORE_SCHEMES", "DriverURL", "open_locks", "open_store"]


@dataclass(frozen=True)
class _Entry:
    module: str
    extra: str | None = None


STORE_SCHEMES: dict[str, _Entry] = {
    "sqlite": _Entry("statekeeper.storage.sqlite.store"),
    "s3": _Entry("statekeeper.storage.aws.s3", extra="aws"),
}
LOCK_SCHEMES: dict[str, _Entry] = {
    "sqlite": _Entry("statekeeper.storage.sqlite.locks"),
    "dynamodb": _Entry("statekeeper.storage.aws.dynamodb", extra="aws"),
    "s3lock": _Entry("statekeeper.storage.aws.s3lock", extra="aws"),
    # An s3:// store given no lock URL locks with lock files next to its states,
    # as Terraform's ``use_lockfile`` does.
    "s3": _Entry("statekeeper.storage.aws.s3lock", extra="aws"),
}


@dataclass(frozen=True)
class DriverURL:
    """A parsed store or lock URL: ``scheme://netloc/path?options``.

    ``given_as`` says where the URL was given ("--locks, STATEKEEPER_LOCKS or
    locks in the config file"), for the message that asks to correct it.
    """

    raw: str
    scheme: str
    netloc: str
    path: str
    options: dict[str, str]
    given_as: str = ""

    @classmethod
    def parse(cls, raw: str, given_as: str = "") -> DriverURL:
        parts = urlsplit(raw)
        if not parts.scheme:
            raise ConfigError(
                f"{raw!r} is not a store or lock URL; use for example "
                "'sqlite:///.statekeeper/statekeeper.db', 's3://bucket/prefix', "
                "'dynamodb://table' or 's3lock://bucket'"
            )
        try:
            options = dict(parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False))
        except ValueError as exc:
            raise ConfigError(f"the options of {raw!r} cannot be read: {exc}") from exc
        return cls(
            raw=raw,
            scheme=parts.scheme.lower(),
            netloc=parts.netloc,
            path=parts.path,
            options=options,
            given_as=given_as,
        )

    def correct(self) -> str:
        """The advice to correct this URL, naming it and where it was given."""
        where = f" ({self.given_as})" if self.given_as else ""
        return f"correct {self.raw!r}{where}"

    def reject_unknown_options(self, allowed: set[str]) -> None:
        unknown = sorted(set(self.options) - allowed)
        if unknown:
            known = ", ".join(sorted(allowed)) or "none"
            raise ConfigError(
                f"{self.raw!r}: unknown option(s) {', '.join(unknown)}; known options: {known}"
            )


def _load(table: dict[str, _Entry], url: DriverURL, kind: str) -> ModuleType:
    entry = table.get(url.scheme)
    if entry is None:
        raise ConfigError(
            f"{url.raw!r}: no {kind} driver for the scheme {url.scheme!r}; "
            f"known schemes: {', '.join(sorted(table))}"
        )
    try:
        return importlib.import_module(entry.module)
    except ImportError as exc:
        if entry.extra is None:
            raise
        raise MissingDependency(
            f"the {url.scheme}:// driver needs the '{entry.extra}' extra ({exc.name} is "
            f"missing): pip install 'statekeeper[{entry.extra}]'"
        ) from exc


def open_store(url: str, *, create: bool = True, given_as: str = "") -> ObjectStore:
    """Open the object store named by ``url``. ``create=False``: a store that a driver
    would make on opening (a SQLite file) must exist already, else StoreNotFound.
    ``given_as``: where ``url`` was given (see :class:`DriverURL`)."""
    parsed = DriverURL.parse(url, given_as)
    store: ObjectStore = _load(STORE_SCHEMES, parsed, "store").open_store(parsed, create=create)
    return store


def open_locks(
    urls: str | list[str], store: ObjectStore, *, create: bool = True, given_as: str = ""
) -> LockTable:
    """Open the lock table(s) for ``store``; two URLs mean both kinds at once;
    ``create`` and ``given_as`` as for :func:`open_store`.

    Terraform's transition mode (``use_lockfile`` plus ``dynamodb_table``)
    takes the lock file first, then the DynamoDB item.
    """
    if isinstance(urls, str):
        urls = [u.strip() for u in urls.split(",") if u.strip()]
    if not urls:
        raise ConfigError("no lock URL given")
    tables: list[LockTable] = []
    for url in urls:
        parsed = DriverURL.parse(url, given_as)
        module = _load(LOCK_SCHEMES, parsed, "lock")
        tables.append(module.open_locks(parsed, store, create=create))
    if len(tables) == 1:
        return tables[0]
    from statekeeper.storage.dual import DualLocks

    return DualLocks(tables)
