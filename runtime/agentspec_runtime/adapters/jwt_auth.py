"""Inbound JWTs (``spec.runtime.auth.jwt``): verified against the issuer's published keys.

PyJWT (with ``cryptography``) checks the signature and the registered claims; it is already
in the runtime image (the MCP SDK depends on it), well kept, and requires the caller to name
the accepted algorithms. Around it, this module does what PyJWT's own ``PyJWKClient`` does
not do for an async server: fetch without blocking the event loop, discover ``jwks_uri``
through OpenID Connect discovery, cache the keys, and refetch them when a token names a key
id the cache lacks — at most once per ``REFRESH_MIN_SECONDS``, so a stream of tokens with
invented key ids cannot make the agent hammer the issuer.

Checked for every token: the header's ``alg`` is in the spec's allow-list (asymmetric only:
the schema admits no ``none`` and no HMAC, so a public key can never serve as an HMAC
secret), the key id names a published key of that algorithm's family, the signature, ``iss``
exactly, ``aud`` one of the spec's audiences, ``exp`` (required) and ``nbf``/``iat`` with the
spec's leeway. The consumer is the configured claim (``sub`` by default), a non-empty string.

TLS: the issuer is reached with the system's CA bundle (``SSL_CERT_FILE`` honoured) plus, in
a pod, the cluster's CA (the ServiceAccount mount), so the cluster's own issuer — the
kube-apiserver — can be named directly.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt

from agentspec_runtime.engine.errors import UnauthorizedError
from agentspec_runtime.spec.agent import JwtAuthSpec

log = logging.getLogger("agentspec.runtime.jwt")

REFRESH_MIN_SECONDS = 30.0
"""Least time between two fetches of the keys triggered by unknown key ids."""
KEYS_MAX_AGE_SECONDS = 3600.0
"""Keys older than this are fetched again on the next token (kept if the fetch fails)."""
FETCH_TIMEOUT = 5.0
MAX_DOCUMENT_BYTES = 1 << 20
CLUSTER_CA = Path("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt")
MAX_CONSUMER_LENGTH = 256


def _tls_context() -> ssl.SSLContext:
    cafile = os.environ.get("SSL_CERT_FILE") or None
    context = ssl.create_default_context(cafile=cafile)
    if CLUSTER_CA.is_file():
        context.load_verify_locations(cafile=str(CLUSTER_CA))
    return context


class JwtVerifier:
    """One ``spec.runtime.auth.jwt`` setting: its cached keys and its checks."""

    def __init__(self, spec: JwtAuthSpec, *, http: httpx.AsyncClient | None = None) -> None:
        self.spec = spec
        self.issuer = str(spec.issuer)
        self._http = http or httpx.AsyncClient(
            timeout=FETCH_TIMEOUT, verify=_tls_context(), follow_redirects=False
        )
        self._keys: dict[str, _Key] = {}
        self._unnamed: list[_Key] = []  # keys published without a kid
        self._fetched_at = 0.0  # monotonic; 0: never
        self._last_attempt = -REFRESH_MIN_SECONDS
        self._lock = asyncio.Lock()
        self.fetches = 0
        self.last_error: str | None = None

    # -- the port -------------------------------------------------------------------------

    async def verify(self, token: str) -> str:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as e:
            raise UnauthorizedError(f"not a JWT: {e}") from e
        alg = header.get("alg")
        if alg not in self.spec.algorithms:
            raise UnauthorizedError(f"algorithm {alg!r} is not accepted")
        kid = header.get("kid")
        key = await self._key(kid if isinstance(kid, str) else None, str(alg))
        try:
            claims = jwt.decode(
                token,
                key=key.jwk.key,
                algorithms=[str(alg)],
                audience=list(self.spec.audiences),
                issuer=self.issuer,
                leeway=self.spec.leeway_seconds,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.PyJWTError as e:
            raise UnauthorizedError(f"token refused: {e}") from e
        consumer = claims.get(self.spec.consumer_claim)
        if not isinstance(consumer, str) or not consumer or len(consumer) > MAX_CONSUMER_LENGTH:
            raise UnauthorizedError(
                f"claim {self.spec.consumer_claim!r} is missing or not a usable consumer name"
            )
        return consumer

    def status(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "keys": len(self._keys) + len(self._unnamed),
            "fetchedAgoSeconds": (
                None if not self._fetched_at else round(time.monotonic() - self._fetched_at, 1)
            ),
            "lastError": self.last_error,
        }

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- keys -----------------------------------------------------------------------------

    def _find(self, kid: str | None, alg: str) -> _Key | None:
        if kid is not None:
            found = self._keys.get(kid)
            return found if found is not None and found.fits(alg) else None
        fitting = [k for k in (*self._keys.values(), *self._unnamed) if k.fits(alg)]
        return fitting[0] if len(fitting) == 1 else None  # no kid: only an unambiguous key

    def _stale(self) -> bool:
        return time.monotonic() - self._fetched_at > KEYS_MAX_AGE_SECONDS

    async def _key(self, kid: str | None, alg: str) -> _Key:
        found = None if self._stale() else self._find(kid, alg)
        if found is not None:
            return found
        async with self._lock:  # one fetch at a time; the others use its result
            wanted = self._stale() or self._find(kid, alg) is None
            if wanted and time.monotonic() - self._last_attempt >= REFRESH_MIN_SECONDS:
                await self._refresh()
            # fetched now, or the keys held (still used when stale and the fetch failed)
            found = self._find(kid, alg)
        if found is None:
            raise UnauthorizedError(f"no published key {kid!r} for {alg}")
        return found

    async def _refresh(self) -> None:
        """Fetch the keys; on failure keep the ones held (a brief outage of the issuer does
        not lock everyone out) and say why in /status."""
        self._last_attempt = time.monotonic()
        self.fetches += 1
        try:
            url = str(self.spec.jwks_url) if self.spec.jwks_url else await self._discover()
            keys = _parse_keys(await self._get_json(url))
        except (httpx.HTTPError, ValueError, UnauthorizedError) as e:
            self.last_error = f"{type(e).__name__}: {e}"
            log.warning("jwt: fetching the keys of %s failed: %s", self.issuer, self.last_error)
            return
        self._keys = {k.jwk.key_id: k for k in keys if k.jwk.key_id}
        self._unnamed = [k for k in keys if not k.jwk.key_id]
        self._fetched_at = time.monotonic()
        self.last_error = None

    async def _discover(self) -> str:
        url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
        document = await self._get_json(url)
        if document.get("issuer") != self.issuer:
            raise UnauthorizedError(
                f"discovery at {url} names issuer {document.get('issuer')!r}, not {self.issuer!r}"
            )
        jwks_uri = document.get("jwks_uri")
        scheme = self.issuer.split("://", 1)[0]
        if not isinstance(jwks_uri, str) or not jwks_uri.startswith(f"{scheme}://"):
            # never downgraded: an https issuer's keys come over https
            raise UnauthorizedError(f"discovery at {url} gives no {scheme} jwks_uri")
        return jwks_uri

    async def _get_json(self, url: str) -> dict[str, Any]:
        async with self._http.stream(
            "GET", url, headers={"accept": "application/json, application/jwk-set+json"}
        ) as r:
            r.raise_for_status()
            body = b""
            async for chunk in r.aiter_bytes():
                body += chunk
                if len(body) > MAX_DOCUMENT_BYTES:
                    raise ValueError(f"{url} answered more than {MAX_DOCUMENT_BYTES} bytes")
        document = json.loads(body)
        if not isinstance(document, dict):
            raise ValueError(f"{url} did not answer a JSON object")
        return document


_FAMILIES = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}


@dataclass(frozen=True)
class _Key:
    jwk: jwt.PyJWK
    kty: str
    alg: str | None
    """The algorithm the key names for itself, if it does."""

    def fits(self, alg: str) -> bool:
        """The key can verify ``alg``: its type is the algorithm's family (never ``oct``),
        and when the key names its own algorithm, it is that one."""
        return self.kty == _FAMILIES.get(alg[:2]) and self.alg in (None, alg)


def _parse_keys(document: dict[str, Any]) -> list[_Key]:
    """The signing keys of a JWKS; keys for encryption or of unusable types are skipped."""
    entries = document.get("keys")
    if not isinstance(entries, list):
        raise ValueError("the JWKS has no keys list")
    keys = []
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        try:
            jwk = jwt.PyJWK(entry)
        except jwt.PyJWTError:
            continue  # a key type this runtime cannot use (or a symmetric one): not ours
        alg = entry.get("alg")
        keys.append(_Key(jwk, str(entry.get("kty")), alg if isinstance(alg, str) else None))
    if not keys:
        raise ValueError("the JWKS has no usable signing key")
    return keys
