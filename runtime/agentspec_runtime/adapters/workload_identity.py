"""Workload identity between agents in a cluster: ServiceAccount tokens, no shared secret.

Calling: a partner call carries a token of the calling pod's ServiceAccount minted for the
partner's audience (``spec.resolved.agent_audience``) through the TokenRequest API, bound to the pod
(the API server stops accepting it with the pod; a partner verifying offline accepts it
until it expires, ten minutes at most), cached until 80 % of its life. A token for one agent
is refused by every other (its audience), and by the kube-apiserver itself, so a partner
cannot replay it elsewhere.

Called: an agent with ``spec.runtime.auth.agents`` verifies such tokens against the
cluster's own issuer — the kube-apiserver's OpenID discovery gives the issuer, its
``/openid/v1/jwks`` the keys (fetched with the pod's own token: the default RBAC lets every
ServiceAccount read them) — with the JWT verifier the user-facing JWTs use. The consumer is
the ``sub`` claim, ``system:serviceaccount:<namespace>:<agent>``; which agents may call is
the engine's check (the allow-list is config, hot-reloaded).

Everything here talks to the API server the pod was given (``KUBERNETES_SERVICE_HOST``,
the ServiceAccount mount), re-reading the pod's own token for each request (the kubelet
rotates it).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import ssl
import time
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt

from agentspec_runtime.engine.errors import ConfigError
from agentspec_runtime.spec.agent import JwtAuthSpec

from .jwt_auth import JwtVerifier

log = logging.getLogger("agentspec.runtime.identity")

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TOKEN_SECONDS = 600
"""The shortest life the TokenRequest API grants: a token that leaks is good for 10 minutes
at most (the partner verifies it offline, so deleting the pod does not revoke it there)."""
RETRY_AFTER_FAILURE = 10.0
"""After a failed TokenRequest, calls go without a token this long before the next try (an
API server that is down must not hold every partner call for its timeout)."""
TIMEOUT = 5.0


@dataclass(frozen=True)
class InCluster:
    """How this pod reaches its API server, and who it is there."""

    api: str
    token_file: Path
    ca_file: Path
    pod_name: str | None = None
    pod_uid: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> InCluster | None:
        host, port = environ.get("KUBERNETES_SERVICE_HOST"), environ.get("KUBERNETES_SERVICE_PORT")
        token = SERVICE_ACCOUNT / "token"
        if not host or not port or not token.is_file():
            return None
        host = f"[{host}]" if ":" in host else host
        return cls(
            api=f"https://{host}:{port}",
            token_file=token,
            ca_file=SERVICE_ACCOUNT / "ca.crt",
            pod_name=environ.get("POD_NAME") or None,
            pod_uid=environ.get("POD_UID") or None,
        )

    def client(self) -> httpx.AsyncClient:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        return httpx.AsyncClient(
            base_url=self.api,
            verify=context,
            auth=_OwnToken(self.token_file),
            timeout=TIMEOUT,
            follow_redirects=False,
        )


class _OwnToken(httpx.Auth):
    """The pod's own ServiceAccount token, re-read for every request (it is rotated)."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._path.read_text().strip()}"
        yield request


class ServiceAccountTokens:
    """Tokens of this pod's ServiceAccount for other agents (module doc)."""

    def __init__(self, cluster: InCluster) -> None:
        self._cluster = cluster
        self._http = cluster.client()
        self._tokens: dict[str, tuple[str, float, float]] = {}
        """audience -> (token, renew at, expires at), monotonic"""
        self._locks: dict[str, asyncio.Lock] = {}
        self._failed_at: dict[str, float] = {}
        self.last_error: str | None = None

    def _account(self) -> tuple[str, str]:
        """(namespace, name) of this pod's ServiceAccount, from its own token's subject."""
        claims = jwt.decode(
            self._cluster.token_file.read_text().strip(), options={"verify_signature": False}
        )
        _, _, namespace, name = str(claims.get("sub", "")).split(":", 3)
        return namespace, name

    async def token(self, audience: str) -> str | None:
        """A token for ``audience``, or None when none can be had (the call goes without:
        the partner decides; why is logged and in ``last_error``)."""
        held = self._tokens.get(audience)
        if held is not None and time.monotonic() < held[1]:
            return held[0]
        usable = held[0] if held is not None and time.monotonic() < held[2] else None
        if time.monotonic() - self._failed_at.get(audience, -RETRY_AFTER_FAILURE) < (
            RETRY_AFTER_FAILURE
        ):
            return usable
        async with self._locks.setdefault(audience, asyncio.Lock()):  # one request a partner
            held = self._tokens.get(audience)
            if held is not None and time.monotonic() < held[1]:
                return held[0]
            try:
                token, lifetime = await self._request(audience)
            except (httpx.HTTPError, ValueError, KeyError, OSError) as e:
                self.last_error = f"{type(e).__name__}: {e}"
                self._failed_at[audience] = time.monotonic()
                log.warning("identity: no token for %s: %s", audience, self.last_error)
                return usable
            now = time.monotonic()
            self._tokens[audience] = (token, now + 0.8 * lifetime, now + lifetime - 5)
            self._failed_at.pop(audience, None)
            self.last_error = None
            return token

    async def _request(self, audience: str) -> tuple[str, float]:
        namespace, name = self._account()
        spec: dict[str, Any] = {"audiences": [audience], "expirationSeconds": TOKEN_SECONDS}
        if self._cluster.pod_name and self._cluster.pod_uid:
            spec["boundObjectRef"] = {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": self._cluster.pod_name,
                "uid": self._cluster.pod_uid,
            }
        response = await self._http.post(
            f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
            json={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec},
        )
        response.raise_for_status()
        status = response.json()["status"]
        expires = datetime.datetime.fromisoformat(
            str(status["expirationTimestamp"]).replace("Z", "+00:00")
        )
        lifetime = (expires - datetime.datetime.now(datetime.UTC)).total_seconds()
        return str(status["token"]), max(lifetime, 60.0)

    async def aclose(self) -> None:
        await self._http.aclose()


async def cluster_verifier(cluster: InCluster, audience: str) -> JwtVerifier:
    """A verifier of agents' tokens for ``audience`` against the cluster's issuer; raises
    ``ConfigError`` when the API server does not say who its issuer is."""
    http = cluster.client()
    try:
        response = await http.get("/.well-known/openid-configuration")
        response.raise_for_status()
        issuer = str(response.json()["issuer"])
        spec = JwtAuthSpec(
            issuer=issuer, audiences=[audience], jwks_url=f"{cluster.api}/openid/v1/jwks"
        )
    except (httpx.HTTPError, ValueError, KeyError) as e:
        await http.aclose()
        raise ConfigError(
            f"spec.runtime.auth.agents: the cluster's token issuer cannot be discovered at "
            f"{cluster.api} ({type(e).__name__})"
        ) from e
    return JwtVerifier(spec, http=http)
