"""The states page: filter, group workspaces under their key, sort, paginate.

The listing itself is the operator's (one listing of objects and one of
locks, filtered by the caller's grants); this module only arranges it for the
page and fills in what a listing does not carry (serial, Terraform version,
last writer, resource count) for the rows on the page shown. Only those rows
become the API's view of a state: at 10,000 states filtering, grouping and
sorting the listing's own rows is most of what the page costs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from statekeeper.errors import BadRequest, StatekeeperError
from statekeeper.inventory.index import StateFacts
from statekeeper.security.caller import Caller
from statekeeper.server.ui.reading import plain
from statekeeper.state.globs import parse_glob
from statekeeper.state.listing import StateSummary
from statekeeper.state.operator import Operator
from statekeeper.terraform.names import StateName

__all__ = ["SORTS", "STALE_AFTER_SECONDS", "Group", "Page", "arrange", "fill_details", "matcher"]

PAGE_SIZE = 50
#: A lock held longer than this is marked stale (an apply rarely runs an hour).
STALE_AFTER_SECONDS = 3600.0


Row = TypeVar("Row")
Shown = dict[str, Any]


@dataclass
class Group(Generic[Row]):
    """A backend key with its default-workspace state (if any) and its workspaces."""

    key: str
    state: Row | None = None
    workspaces: list[tuple[str, Row]] = field(default_factory=list)

    @property
    def rows(self) -> list[Row]:
        head = [self.state] if self.state is not None else []
        return head + [row for _, row in self.workspaces]

    @property
    def entries(self) -> list[tuple[str | None, Row]]:
        """(workspace, row) pairs; None for the key's own (default workspace) state."""
        head: list[tuple[str | None, Row]] = [(None, self.state)] if self.state is not None else []
        return head + [(w, row) for w, row in self.workspaces]

    @property
    def lead(self) -> Row:
        """The row the group sorts by: the key's own state, else its first workspace."""
        return self.state if self.state is not None else self.workspaces[0][1]


def _shown(group: Group[StateSummary]) -> Group[Shown]:
    """The group with each row as the API shows a state (a JSON document)."""
    state = group.state
    return Group(
        group.key,
        None if state is None else plain(state.view()),
        [(w, plain(row.view())) for w, row in group.workspaces],
    )


SORTS: dict[str, Callable[[Group[StateSummary]], Any]] = {
    "name": lambda g: g.key,
    "size": lambda g: g.lead.size,
    "modified": lambda g: g.lead.last_modified,
    "locked": lambda g: (not any(row.lock is not None for row in g.rows), g.key),
}


@dataclass(frozen=True)
class Page:
    groups: list[Group[Shown]]
    number: int
    pages: int
    total: int


def matcher(query: str) -> Callable[[str], bool]:
    """A name filter: a state glob when ``query`` holds ``*`` or ``?`` (``**`` across
    segments), else a prefix."""
    query = query.strip()
    if not query:
        return lambda name: True
    if "*" in query or "?" in query:
        glob = parse_glob(query)  # a malformed one is a 400 that says how to write one
        return lambda name: glob.covers(StateName(name))
    return lambda name: name.startswith(query)


def _workspace(name: str, prefix: str) -> tuple[str, str] | None:
    """(workspace, key) when ``name`` is ``<prefix>/W/K``."""
    if not prefix or not name.startswith(prefix + "/"):
        return None
    workspace, sep, key = name[len(prefix) + 1 :].partition("/")
    return (workspace, key) if sep and workspace and key else None


def _groups(rows: Iterable[StateSummary], prefix: str) -> list[Group[StateSummary]]:
    groups: dict[str, Group[StateSummary]] = {}
    for row in rows:
        split = _workspace(row.name, prefix)
        key = split[1] if split else row.name
        group = groups.setdefault(key, Group(key))
        if split:
            group.workspaces.append((split[0], row))
        else:
            group.state = row
    for group in groups.values():
        group.workspaces.sort(key=lambda entry: entry[0])
    return list(groups.values())


def arrange(
    rows: list[StateSummary],
    *,
    query: str,
    sort: str,
    descending: bool,
    page: int,
    workspace_prefix: str,
) -> Page:
    """Filter by name, group workspaces, sort the groups, cut out one page (whose rows
    alone become the API's view of a state)."""
    if sort not in SORTS:
        raise BadRequest(f"sort by one of {', '.join(SORTS)}, not {sort!r}")
    keep = matcher(query)

    # A workspace state is shown under its key, so a filter naming the key keeps it
    # (``team/`` keeps ``env:/dev/team/app.tfstate``), as ``statekeeper states team/``
    # and the API list it; its full name still matches too.
    def kept(name: str) -> bool:
        split = _workspace(name, workspace_prefix)
        return keep(name) or (split is not None and keep(split[1]))

    groups = _groups((r for r in rows if kept(r.name)), workspace_prefix)
    groups.sort(key=SORTS[sort], reverse=descending)
    pages = max(1, -(-len(groups) // PAGE_SIZE))
    number = min(max(1, page), pages)
    start = (number - 1) * PAGE_SIZE
    cut = [_shown(group) for group in groups[start : start + PAGE_SIZE]]
    return Page(cut, number, pages, len(groups))


def fill_details(
    operator: Operator, caller: Caller, rows: list[dict[str, Any]], facts: dict[str, StateFacts]
) -> None:
    """Add the current version's serial, writer, Terraform version and resource count:
    from the inventory index where it holds that version (a listing without version IDs,
    S3's, takes the index as it is), else by reading the state."""
    for row in rows:
        known = facts.get(row["name"])
        if known is not None and (not row["version_id"] or known.version_id == row["version_id"]):
            if row.get("serial") is None:
                row["serial"] = known.serial
            row["actor"] = known.actor
            row["terraform_version"] = known.terraform_version
            row["encrypted"] = known.encrypted
            row["resource_count"] = None if known.encrypted else known.resources
            continue
        try:
            shown = plain(operator.show(caller, StateName(row["name"])))
        except StatekeeperError as exc:
            row["detail_error"] = exc.message
            continue
        version = shown["version"]
        row["serial"] = version.get("serial") if row.get("serial") is None else row["serial"]
        row["actor"] = version.get("actor")
        row["terraform_version"] = shown.get("terraform_version")
        row["encrypted"] = shown.get("encrypted", False)
        resources = shown.get("resources")
        row["resource_count"] = None if resources is None else len(resources)
