"""OIDC for CI: a signed JWT (GitHub Actions, GitLab CI, …) instead of a stored token.

The JWT arrives as the Basic password (Terraform's ``password``, any
username) or as a Bearer token. It must be signed by a key of the issuer's
JWKS, name the configured issuer and audience, and be unexpired. Its claims
are then matched against rules that grant scopes. The configuration is a TOML
file (setting ``oidc_config``)::

    issuer = "https://token.actions.githubusercontent.com"
    audience = "statekeeper"
    jwks_url = "https://token.actions.githubusercontent.com/.well-known/jwks"
    # or: jwks_file = "/etc/statekeeper/jwks.json"
    actor_claim = "sub"                                  # default
    audit_claims = ["repository", "run_id", "ref"]       # kept in the audit trail

    [[rules]]
    claim = { repository = "org/infra", ref = "refs/heads/main" }
    scope = "team/*:write"

    [[rules]]
    claim = { repository_owner = "org" }
    scopes = ["shared/**:outputs"]

Every claim of a rule must match (values are globs: ``refs/heads/*``); the
caller holds the union of the scopes of every matching rule.

Browsers sign in to the web UI with the authorization-code flow and PKCE when
a ``[browser]`` table names the client (its ID tokens are for ``client_id``,
and the same rules map their claims to scopes)::

    [browser]
    client_id = "statekeeper-ui"
    authorization_endpoint = "https://idp.example/authorize"
    token_endpoint = "https://idp.example/token"
    # client_secret = "…"       # a confidential client; PKCE is used either way
    # scope = "openid profile"  # default "openid"
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from statekeeper.errors import BadRequest, ConfigError, MissingDependency, Unauthenticated
from statekeeper.security.caller import Caller
from statekeeper.security.grants import parse_grants

__all__ = ["OidcBrowser", "OidcConfig", "OidcRule", "OidcVerifier", "looks_like_jwt"]

ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"]


def looks_like_jwt(secret: str) -> bool:
    """A compact JWS: three base64url parts, the header starting ``eyJ`` ('{"')."""
    return secret.startswith("eyJ") and secret.count(".") == 2


#: Each table's keys, the required ones first; a key not listed is a typo, refused.
_TOP_KEYS = (
    "issuer",
    "audience",
    "jwks_url",
    "jwks_file",
    "actor_claim",
    "audit_claims",
    "rules",
    "leeway",
    "browser",
)
_TOP_REQUIRED = ("issuer", "audience")
_RULE_KEYS = ("claim", "scope", "scopes")
_BROWSER_KEYS = ("client_id", "authorization_endpoint", "token_endpoint", "client_secret", "scope")
_BROWSER_REQUIRED = ("client_id", "authorization_endpoint", "token_endpoint")


def _check_keys(
    raw: object, where: str, known: tuple[str, ...], required: tuple[str, ...] = ()
) -> None:
    """Raises ValueError for a table with an unknown key or without a required one."""
    if not isinstance(raw, dict):
        raise ValueError(f"{where} must be a table")
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(known)}")
    missing = [key for key in required if key not in raw]
    if missing:
        raise ValueError(f"{where}: {', '.join(missing)} is required")


@dataclass(frozen=True)
class OidcRule:
    claims: dict[str, str]
    scopes: tuple[str, ...]

    def matches(self, payload: dict[str, Any]) -> bool:
        return all(
            k in payload and fnmatchcase(str(payload[k]), pattern)
            for k, pattern in self.claims.items()
        )


@dataclass(frozen=True)
class OidcBrowser:
    """The web UI as an OIDC client (authorization code with PKCE)."""

    client_id: str
    authorization_endpoint: str
    token_endpoint: str
    client_secret: str | None = field(default=None, repr=False)
    scope: str = "openid"

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> OidcBrowser:
        _check_keys(raw, "[browser]", _BROWSER_KEYS, _BROWSER_REQUIRED)
        return cls(
            client_id=str(raw["client_id"]),
            authorization_endpoint=str(raw["authorization_endpoint"]),
            token_endpoint=str(raw["token_endpoint"]),
            client_secret=str(raw["client_secret"]) if raw.get("client_secret") else None,
            scope=str(raw.get("scope", "openid")),
        )


@dataclass(frozen=True)
class OidcConfig:
    issuer: str
    audience: str
    jwks_url: str | None = None
    jwks_file: Path | None = None
    actor_claim: str = "sub"
    audit_claims: tuple[str, ...] = ("repository", "run_id", "workflow", "ref")
    rules: tuple[OidcRule, ...] = field(default_factory=tuple)
    leeway: int = 30
    browser: OidcBrowser | None = None

    @classmethod
    def load(cls, path: Path) -> OidcConfig:
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read the OIDC config {path}: {exc}") from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(f"the OIDC config {path} is not UTF-8 text") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"the OIDC config {path} is not valid TOML: {exc}") from exc
        try:
            _check_keys(raw, "the top level", _TOP_KEYS, _TOP_REQUIRED)
            if not isinstance(raw.get("rules", []), list):
                raise ValueError("rules are [[rules]] tables")
            rules = []
            for i, r in enumerate(raw.get("rules", [])):
                _check_keys(r, f"rules[{i}]", _RULE_KEYS)
                scopes = list(r.get("scopes", [])) + ([r["scope"]] if "scope" in r else [])
                claims = r.get("claim", {})
                if not claims or not scopes or not isinstance(claims, dict):
                    raise ValueError(f"rules[{i}] needs a 'claim' table and a 'scope'")
                grants = parse_grants(scopes)
                rules.append(
                    OidcRule({str(k): str(v) for k, v in claims.items()}, tuple(map(str, grants)))
                )
            jwks_file = raw.get("jwks_file")
            config = cls(
                issuer=str(raw["issuer"]),
                audience=str(raw["audience"]),
                jwks_url=raw.get("jwks_url"),
                jwks_file=(path.parent / jwks_file) if jwks_file else None,
                actor_claim=str(raw.get("actor_claim", "sub")),
                audit_claims=tuple(raw.get("audit_claims", cls.audit_claims)),
                rules=tuple(rules),
                leeway=int(raw.get("leeway", 30)),
                browser=OidcBrowser.parse(raw["browser"]) if "browser" in raw else None,
            )
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"the OIDC config {path} is not valid: {exc} (it needs issuer, audience, "
                "jwks_url or jwks_file, and [[rules]] with claim and scope)"
            ) from exc
        except BadRequest as exc:  # a rule's grant is malformed
            raise ConfigError(f"the OIDC config {path} is not valid: {exc}") from exc
        if bool(config.jwks_url) == bool(config.jwks_file):
            raise ConfigError(f"the OIDC config {path} needs exactly one of jwks_url, jwks_file")
        return config


class OidcVerifier:
    """Verifies JWTs against the configured issuer's keys and maps claims to scopes."""

    def __init__(self, config: OidcConfig) -> None:
        try:
            import jwt
        except ImportError as exc:
            raise MissingDependency(
                "OIDC needs PyJWT with its crypto extra: pip install 'pyjwt[crypto]'"
            ) from exc
        self.config = config
        self._jwt = jwt
        self._client = jwt.PyJWKClient(config.jwks_url, lifespan=300) if config.jwks_url else None
        self._keys: Any = None
        if config.jwks_file:
            try:
                self._keys = jwt.PyJWKSet.from_dict(json.loads(config.jwks_file.read_text()))
            except (OSError, ValueError, jwt.PyJWKSetError) as exc:
                raise ConfigError(f"cannot load the JWKS file {config.jwks_file}: {exc}") from exc

    def _signing_key(self, token: str) -> Any:
        jwt = self._jwt
        if self._client is not None:
            return self._client.get_signing_key_from_jwt(token).key
        kid = jwt.get_unverified_header(token).get("kid")
        for key in self._keys.keys:
            if kid is None or key.key_id == kid:
                return key.key
        raise Unauthenticated("the OIDC token is signed by a key the issuer does not publish")

    def verify(self, token: str, remote_addr: str | None) -> Caller:
        """The caller behind a JWT; Unauthenticated naming the first thing wrong with it."""
        return self._caller(self._decode(token, self.config.audience), remote_addr)

    def verify_browser(self, id_token: str, nonce: str, remote_addr: str | None) -> Caller:
        """The caller behind an ID token from the browser sign-in: for the UI's client
        ID, carrying the nonce that sign-in sent (so it cannot be replayed into another)."""
        if self.config.browser is None:
            raise Unauthenticated("OIDC sign-in for browsers is not configured ([browser])")
        payload = self._decode(id_token, self.config.browser.client_id)
        if payload.get("nonce") != nonce:
            raise Unauthenticated("the OIDC ID token is not the answer to this sign-in (nonce)")
        return self._caller(payload, remote_addr)

    def expiry(self, token: str) -> float:
        """The ``exp`` of a token :meth:`verify_browser` accepted (UNIX time)."""
        payload = self._jwt.decode(token, options={"verify_signature": False})
        return float(payload["exp"])

    def _decode(self, token: str, audience: str) -> dict[str, Any]:
        jwt = self._jwt
        try:
            payload: dict[str, Any] = jwt.decode(
                token,
                self._signing_key(token),
                algorithms=ALGORITHMS,
                audience=audience,
                issuer=self.config.issuer,
                leeway=self.config.leeway,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated("the OIDC token has expired; request a fresh one") from exc
        except jwt.InvalidAudienceError as exc:
            raise Unauthenticated(
                f"the OIDC token is not for this server: its audience must be {audience!r}"
            ) from exc
        except jwt.InvalidIssuerError as exc:
            raise Unauthenticated(
                f"the OIDC token was not issued by {self.config.issuer!r}"
            ) from exc
        except jwt.InvalidSignatureError as exc:
            raise Unauthenticated(
                "the OIDC token's signature does not verify against the issuer's keys"
            ) from exc
        except jwt.PyJWKClientError as exc:
            raise Unauthenticated(f"the OIDC token's signing key cannot be found: {exc}") from exc
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated(f"the OIDC token is not valid: {exc}") from exc
        return payload

    def _caller(self, payload: dict[str, Any], remote_addr: str | None) -> Caller:
        subject = payload.get(self.config.actor_claim)
        if not isinstance(subject, str | int) or subject == "":
            raise Unauthenticated(
                f"the OIDC token has no {self.config.actor_claim!r} claim to name the caller"
            )
        scopes: list[str] = []
        for rule in self.config.rules:
            if rule.matches(payload):
                scopes += [s for s in rule.scopes if s not in scopes]
        claims = {k: str(payload[k]) for k in self.config.audit_claims if k in payload}
        return Caller(
            actor=f"oidc:{subject}",
            remote_addr=remote_addr,
            claims=claims,
            scopes=tuple(scopes),
        )
