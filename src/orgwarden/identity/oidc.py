"""The OpenID Connect relying party: discovery, the authorization request, the code exchange and the
ID token's checks. No JOSE or OAuth is written here: Authlib builds the authorization URL (PKCE S256)
and exchanges the code; joserfc (Authlib's JOSE library) verifies the ID token's signature against
the issuer's JWKS and its claims (``iss``, ``aud``, ``exp``, ``iat``, ``nonce``, ``azp``).

Every failure is an ``OidcRefused`` with a machine reason (recorded in the audit event) and a message
a person can act on.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import httpx2
from authlib.common.security import generate_token
from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuthError
from joserfc import jwt
from joserfc.errors import ExpiredTokenError, InvalidClaimError, InvalidKeyIdError, JoseError, MissingClaimError
from joserfc.jwk import KeySet

from orgwarden.identity.recheck import IdpRecheck, keepable

_METADATA_TTL_SECONDS = 3600.0
_JWKS_REFRESH_MIN_SECONDS = 30.0  # an unknown ``kid`` refetches the JWKS at most this often (key rotation)
_LEEWAY_SECONDS = 60  # clock skew allowed between us and the identity provider
_SAFE_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"})
_MAX_GROUPS = 500
_MAX_GROUP_CHARS = 255
# Authlib's OAuth client runs on httpx2 (httpx without it): a transport failure is either one's.
_HTTP_ERRORS = (httpx.HTTPError, httpx2.HTTPError)


class OidcRefused(Exception):
    """The identity provider's answer cannot be accepted (or it could not be reached)."""

    def __init__(self, reason: str, message: str, *, unavailable: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.unavailable = unavailable


@dataclass(frozen=True, slots=True)
class LoginRequest:
    url: str
    state: str
    nonce: str
    code_verifier: str


@dataclass(frozen=True, slots=True)
class Identity:
    """Who the identity provider says signed in."""

    subject: str
    email: str | None
    email_verified: bool | None
    name: str | None
    groups: list[str] | None  # None: the provider sent no groups claim
    claims: dict[str, Any] = field(repr=False)
    refresh_token: str | None = field(default=None, repr=False)  # the IdP's, when it issued one (bounded)


class OidcClient:
    def __init__(
        self,
        *,
        issuer: str,
        client_id: str,
        client_secret: str | None,
        scopes: str,
        groups_claim: str,
        timeout_seconds: float = 10.0,
        offline_access: bool = False,
    ) -> None:
        self.issuer = issuer
        self.client_id = client_id
        self._secret = client_secret
        self.scopes = scopes
        self.groups_claim = groups_claim
        self._timeout = timeout_seconds
        self.offline_access = offline_access  # ask for offline_access when the IdP lists it
        self._metadata: dict[str, Any] | None = None
        self._metadata_at = 0.0
        self._keys: KeySet | None = None
        self._keys_at = 0.0
        self._lock = asyncio.Lock()

    def _oauth(self, redirect_uri: str | None, scope: str | None = None) -> AsyncOAuth2Client:
        return AsyncOAuth2Client(
            client_id=self.client_id,
            client_secret=self._secret,
            scope=scope,
            redirect_uri=redirect_uri,
            code_challenge_method="S256",
            token_endpoint_auth_method="client_secret_basic" if self._secret else "none",
            timeout=self._timeout,
        )

    async def _get_json(self, url: str, what: str) -> dict[str, Any]:
        try:
            async with httpx.AsyncClient(timeout=self._timeout) as http:
                response = await http.get(url, headers={"accept": "application/json"})
            response.raise_for_status()
            body = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise OidcRefused(
                "idp_unreachable", f"the identity provider's {what} could not be read ({exc})", unavailable=True
            ) from None
        if not isinstance(body, dict):
            raise OidcRefused(
                "idp_unreachable", f"the identity provider's {what} is not a JSON object", unavailable=True
            )
        return body

    async def metadata(self) -> dict[str, Any]:
        """The issuer's discovery document (OpenID Connect Discovery 1.0 §4), cached for an hour."""
        async with self._lock:
            if self._metadata is None or time.monotonic() - self._metadata_at > _METADATA_TTL_SECONDS:
                found = await self._get_json(f"{self.issuer}/.well-known/openid-configuration", "discovery document")
                if found.get("issuer") != self.issuer:  # Discovery §4.3: must match exactly
                    raise OidcRefused(
                        "discovery_issuer_mismatch",
                        f"the discovery document names issuer {found.get('issuer')!r}, not {self.issuer!r}",
                        unavailable=True,
                    )
                for needed in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
                    if not isinstance(found.get(needed), str):
                        raise OidcRefused("discovery_incomplete", f"the discovery document has no {needed}")
                self._metadata, self._metadata_at = found, time.monotonic()
            return self._metadata

    async def _keyset(self, *, refresh: bool) -> KeySet:
        meta = await self.metadata()
        async with self._lock:
            stale = refresh and time.monotonic() - self._keys_at > _JWKS_REFRESH_MIN_SECONDS
            if self._keys is None or stale:
                body = await self._get_json(meta["jwks_uri"], "JWKS")
                try:
                    self._keys = KeySet.import_key_set(body)  # type: ignore[arg-type]
                except (JoseError, ValueError, TypeError, KeyError) as exc:
                    raise OidcRefused("jwks_invalid", f"the identity provider's JWKS is unusable ({exc})") from None
                self._keys_at = time.monotonic()
            return self._keys

    async def start(self, redirect_uri: str) -> LoginRequest:
        """A fresh authorization request: ``state``, ``nonce`` and a PKCE verifier (S256)."""
        meta = await self.metadata()
        state, nonce, verifier = generate_token(32), generate_token(32), generate_token(64)
        async with self._oauth(redirect_uri, self._scope(meta)) as client:
            url, _ = client.create_authorization_url(
                meta["authorization_endpoint"], state=state, code_verifier=verifier, nonce=nonce
            )
        return LoginRequest(url=url, state=state, nonce=nonce, code_verifier=verifier)

    def _scope(self, meta: dict[str, Any]) -> str:
        """The scopes asked for: the setting's, plus ``offline_access`` (a refresh token to re-check the
        person with) when re-checking is on and the IdP's discovery document lists that scope."""
        scopes = self.scopes.split()
        supported = meta.get("scopes_supported")
        if self.offline_access and isinstance(supported, list) and "offline_access" in supported:
            scopes += [] if "offline_access" in scopes else ["offline_access"]
        return " ".join(scopes)

    async def finish(self, *, code: str, redirect_uri: str, code_verifier: str, nonce: str) -> Identity:
        """Exchange the code (with the PKCE verifier), verify the ID token, and say who signed in."""
        meta = await self.metadata()
        try:
            async with self._oauth(redirect_uri, self._scope(meta)) as client:
                token = await client.fetch_token(
                    meta["token_endpoint"], grant_type="authorization_code", code=code, code_verifier=code_verifier
                )
        except OAuthError as exc:
            description = f": {exc.description}" if exc.description else ""
            raise OidcRefused(
                f"token_{exc.error}"[:64], f"the identity provider refused the code ({exc.error}{description})"
            ) from None
        except _HTTP_ERRORS as exc:
            raise OidcRefused(
                "idp_unreachable", f"the identity provider's token endpoint failed ({exc})", unavailable=True
            ) from None
        id_token = token.get("id_token")
        if not isinstance(id_token, str):
            raise OidcRefused("no_id_token", "the identity provider answered without an ID token (is openid a scope?)")
        claims = await self.verify_id_token(id_token, nonce=nonce, meta=meta)
        if claims.get("email") is None and isinstance(meta.get("userinfo_endpoint"), str):
            claims = {**(await self._userinfo(meta["userinfo_endpoint"], token.get("access_token"), claims)), **claims}
        identity = self._identity(claims)
        if self.offline_access and (refresh_token := keepable(token.get("refresh_token"))) is not None:
            return replace(identity, refresh_token=refresh_token)
        return identity

    async def recheck(self, refresh_token: str) -> IdpRecheck:
        """A refresh grant at the IdP (Authlib's client): does it still accept this person? ``refused``
        only for ``invalid_grant`` (the person or the grant is gone); anything else that goes wrong
        (unreachable, 5xx, our client refused) is ``unavailable``: nothing is decided about the person."""
        try:
            meta = await self.metadata()
            async with self._oauth(None) as client:  # no scope: the grant's own (RFC 6749 §6)
                token = await client.refresh_token(meta["token_endpoint"], refresh_token=refresh_token)
        except OidcRefused as exc:
            return IdpRecheck("unavailable", detail=exc.message[:300])
        except OAuthError as exc:
            said = f"{exc.error}: {exc.description}" if exc.description else str(exc.error)
            return IdpRecheck("refused" if exc.error == "invalid_grant" else "unavailable", detail=said[:300])
        except (*_HTTP_ERRORS, ValueError) as exc:
            return IdpRecheck("unavailable", detail=f"{type(exc).__name__}: {exc}"[:300])
        return IdpRecheck("ok", refresh_token=keepable(token.get("refresh_token")))

    async def verify_id_token(self, id_token: str, *, nonce: str, meta: dict[str, Any]) -> dict[str, Any]:
        offered = meta.get("id_token_signing_alg_values_supported") or ["RS256"]
        algorithms = [alg for alg in offered if alg in _SAFE_ALGORITHMS] or ["RS256"]
        decoded = None
        for refresh in (False, True):  # a key we do not know yet may be a rotation: fetch the JWKS once more
            keys = await self._keyset(refresh=refresh)
            try:
                decoded = jwt.decode(id_token, keys, algorithms=algorithms)
                break
            except InvalidKeyIdError as exc:
                if refresh:
                    raise OidcRefused(
                        "id_token_signature", f"the ID token is signed by an unknown key ({exc})"
                    ) from None
            except (JoseError, ValueError) as exc:
                raise OidcRefused("id_token_signature", f"the ID token's signature is not valid ({exc})") from None
        if decoded is None:  # pragma: no cover - the loop either decodes or raises
            raise OidcRefused("id_token_signature", "the ID token could not be verified")
        registry = jwt.JWTClaimsRegistry(
            leeway=_LEEWAY_SECONDS,
            iss={"essential": True, "value": self.issuer},
            aud={"essential": True, "value": self.client_id},
            sub={"essential": True},
            exp={"essential": True},
            iat={"essential": True},
            nonce={"essential": True, "value": nonce},
        )
        claims = decoded.claims
        try:
            registry.validate(claims)
        except ExpiredTokenError:
            raise OidcRefused("id_token_expired", "the ID token has expired") from None
        except MissingClaimError as exc:
            raise OidcRefused("id_token_claims", f"the ID token lacks a required claim ({exc})") from None
        except InvalidClaimError as exc:
            claim = str(exc.claim) if hasattr(exc, "claim") else str(exc)
            reason = {
                "aud": "id_token_audience",
                "iss": "id_token_issuer",
                "nonce": "id_token_nonce",
            }.get(claim, "id_token_claims")
            raise OidcRefused(reason, f"the ID token's {claim!r} claim is not acceptable ({exc})") from None
        audience = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if len(audience) > 1 and claims.get("azp") != self.client_id:  # OIDC Core §3.1.3.7 (4, 5)
            raise OidcRefused("id_token_audience", "the ID token has several audiences and azp is not this client")
        return dict(claims)

    async def _userinfo(self, url: str, access_token: Any, claims: dict[str, Any]) -> dict[str, Any]:
        """Claims from the userinfo endpoint, for providers that keep email out of the ID token."""
        if not isinstance(access_token, str):
            return {}
        try:
            async with httpx.AsyncClient(timeout=self._timeout) as http:
                response = await http.get(url, headers={"authorization": f"Bearer {access_token}"})
            response.raise_for_status()
            info = response.json()
        except (httpx.HTTPError, ValueError):
            return {}
        if not isinstance(info, dict) or info.get("sub") != claims.get("sub"):  # OIDC Core §5.3.2
            return {}
        return info

    def _identity(self, claims: dict[str, Any]) -> Identity:
        email = claims.get("email")
        verified = claims.get("email_verified")
        name = claims.get("name")
        raw_groups = claims.get(self.groups_claim)
        groups: list[str] | None = None
        if isinstance(raw_groups, list):
            groups = [str(g)[:_MAX_GROUP_CHARS] for g in raw_groups[:_MAX_GROUPS] if isinstance(g, (str, int))]
        elif isinstance(raw_groups, str):
            groups = [raw_groups[:_MAX_GROUP_CHARS]]
        return Identity(
            subject=str(claims["sub"])[:255],
            email=email.strip().lower()[:320] if isinstance(email, str) else None,
            email_verified=verified if isinstance(verified, bool) else None,
            name=name[:255] if isinstance(name, str) else None,
            groups=groups,
            claims=claims,
        )
