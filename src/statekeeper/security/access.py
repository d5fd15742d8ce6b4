"""The access-control files of a server, each read once: the tokens file and the OIDC config.

``serve`` reads them before it binds or prints anything, so that a fault in either
stops the start (exit 2) naming the file and the key, and then builds the server on
what it read. A second read could find another file: one replaced in between, or
one that can be read only once (``--oidc-config <(vault read …)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from statekeeper.security.oidc import OidcConfig
    from statekeeper.security.tokenstores import FileTokenStore
    from statekeeper.settings import Settings

__all__ = ["AccessFiles"]


@dataclass(frozen=True)
class AccessFiles:
    """The tokens file and the OIDC config as read and checked (None: not configured)."""

    tokens: FileTokenStore | None = None
    oidc: OidcConfig | None = None

    @classmethod
    def read(cls, settings: Settings) -> AccessFiles:
        """Read and check each file the settings name (ConfigError naming the fault)."""
        tokens = oidc = None
        if settings.tokens_file is not None:
            from statekeeper.security.tokenstores import FileTokenStore

            tokens = FileTokenStore(settings.tokens_file)
            # The server's own copy, read whole now: a bad edit after this is logged
            # and refuses every token, where a first read's fault would be a 500.
            tokens.check()
        if settings.oidc_config is not None:
            from statekeeper.security.oidc import OidcConfig

            oidc = OidcConfig.load(settings.oidc_config)
        return cls(tokens, oidc)
