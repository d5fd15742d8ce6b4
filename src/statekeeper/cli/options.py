"""The global options, declared once, and where a command may use them.

Global options may stand before or after the command name:
``statekeeper --store URL pull NAME`` and ``statekeeper pull NAME --store URL``
are the same command. :func:`hoist` moves them in front of the command before
click parses, so every command sees them through one
:class:`~statekeeper.cli.context.CliContext`. Each command says which of them it
uses (its ``accepts`` set); one it does not use, given on the command line, is
refused with exit 2 rather than silently ignored.

Nothing beyond the standard library is imported here: this module is on every
command's start-up path, ``statekeeper --help`` included.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ACCESS",
    "CREATES_STORE",
    "GLOBAL_FLAGS",
    "GLOBAL_OPTIONS",
    "GLOBAL_PANEL",
    "JSON_HELP",
    "OPERATOR",
    "PANEL_AWS",
    "PANEL_LOCKS",
    "PANEL_SECURITY",
    "PANEL_SERVER",
    "PANEL_STATES",
    "REMOTE",
    "STORE",
    "GlobalOption",
    "hoist",
]

# Help panels: ``statekeeper --help`` groups the commands under these titles.
PANEL_SERVER = "Server"
PANEL_STATES = "States"
PANEL_LOCKS = "Locks"
PANEL_AWS = "AWS setup"
PANEL_SECURITY = "Security"
GLOBAL_PANEL = "Global options (before or after the command)"

JSON_HELP = "Print JSON (stable keys) for scripts"


@dataclass(frozen=True)
class GlobalOption:
    """One global option: its flag, the CliContext field it sets, and its help."""

    flag: str
    field: str
    help: str
    kind: str = "str"  # str, path or list (the flag given more than once)
    # Read by the option itself (the others go through settings); every help names its
    # variable in one wording, "(env: VAR)", so click does not add its own.
    envvar: str | None = None


GLOBAL_OPTIONS: tuple[GlobalOption, ...] = (
    GlobalOption(
        "--store",
        "store",
        "Store URL: sqlite:///…, s3://BUCKET/PREFIX (env: STATEKEEPER_STORE; "
        "default: SQLite in ./.statekeeper)",
    ),
    GlobalOption(
        "--locks",
        "locks",
        "Lock URL: dynamodb://TABLE, s3lock://BUCKET/PREFIX; give twice for both "
        "(env: STATEKEEPER_LOCKS, comma-separated; default: the store's own)",
        kind="list",
    ),
    GlobalOption(
        "--server",
        "server",
        "Go through a running statekeeper server's API (http://HOST:PORT) "
        "instead of opening a store (env: STATEKEEPER_SERVER)",
        envvar="STATEKEEPER_SERVER",
    ),
    GlobalOption(
        "--token",
        "token",
        "Bearer token for --server (env: STATEKEEPER_TOKEN)",
        envvar="STATEKEEPER_TOKEN",
    ),
    GlobalOption(
        "--data-dir",
        "data_dir",
        "Directory of the embedded store (env: STATEKEEPER_DATA_DIR; default: ./.statekeeper)",
        kind="path",
    ),
    GlobalOption("--config", "config", "TOML config file (env: STATEKEEPER_CONFIG)", kind="path"),
    GlobalOption(
        "--tokens-file",
        "tokens_file",
        "TOML file of API tokens, for stateless replicas (env: STATEKEEPER_TOKENS_FILE)",
        kind="path",
    ),
)

# Every global option takes a value; the flag and the CliContext field it sets.
GLOBAL_FLAGS: dict[str, str] = {o.flag: o.field for o in GLOBAL_OPTIONS}

# What commands accept, by what they open.
STORE = frozenset({"store", "locks", "data_dir", "config"})
REMOTE = frozenset({"server", "token"})
OPERATOR = STORE | REMOTE
ACCESS = frozenset({"store", "data_dir", "config", "tokens_file"}) | REMOTE

# The commands (as typed after ``statekeeper``) that may make a new embedded store
# where there is none: they write, and a first write is how a store begins. Every
# other command opens an existing one only, so that a mistyped path is an error
# naming it, not a new empty database answering "no states". (migrate's source is
# opened by migrate itself, never created.)
CREATES_STORE = frozenset(
    {"serve", "push", "migrate", "token create", "hooks add", "bootstrap", "doctor"}
)


def hoist(args: list[str]) -> list[str]:
    """``args`` with every global option (and its value) moved to the front.

    Stops at ``--``: what follows is positional, whatever it looks like.
    """
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest.extend(args[i:])
            break
        flag = arg.split("=", 1)[0]
        if flag in GLOBAL_FLAGS and "=" in arg:
            front.append(arg)
        elif flag in GLOBAL_FLAGS and i + 1 < len(args):
            front.extend(args[i : i + 2])
            i += 1
        else:
            rest.append(arg)
        i += 1
    return front + rest
