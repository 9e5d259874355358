"""JWT verification (``spec.runtime.auth.jwt``): what a token must be to name a consumer.

In: the runtime's ``JwtVerifier`` fetching a JWKS (and OpenID discovery) over HTTP from a
local server the test runs, tokens signed with real RSA and EC keys by PyJWT, and forged
ones built by hand (``alg: none``, HMAC keyed with the public key).
Asserted: a valid token names its ``sub`` (or the configured claim); wrong issuer, wrong
audience, expiry past the leeway, a future ``nbf``, no ``exp``, an algorithm outside the
allow-list, ``none``, HMAC confusion and a key of the wrong family are refused; a rotated
key is fetched once when a token names it, and a flood of unknown key ids does not make the
verifier fetch again within ``REFRESH_MIN_SECONDS``; discovery finds ``jwks_uri`` and a
discovery document naming another issuer is refused (and shown in status).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from agentspec_runtime.adapters.jwt_auth import JwtVerifier
from agentspec_runtime.engine.errors import UnauthorizedError
from agentspec_runtime.spec.agent import JwtAuthSpec
from tests.support.oidc_issuer import Issuer, signing_alg


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    server = Issuer()
    yield server
    server.close()


RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA2 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC = ec.generate_private_key(ec.SECP256R1())


def claims(issuer: Issuer, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": issuer.url, "aud": "agents", "sub": "team-a", "exp": now + 60, **extra}


def token(key: Any, body: dict[str, Any], *, kid: str = "k1", alg: str | None = None) -> str:
    return jwt.encode(body, key, algorithm=alg or signing_alg(key), headers={"kid": kid})


def forged(header: dict[str, Any], body: dict[str, Any], secret: bytes | None) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    signing = f"{part(header)}.{part(body)}"
    if secret is None:
        return f"{signing}."
    mac = hmac.new(secret, signing.encode(), hashlib.sha256).digest()
    return f"{signing}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def verifier(issuer: Issuer, **spec: Any) -> JwtVerifier:
    fields: dict[str, Any] = {"issuer": issuer.url, "audiences": ["agents"]}
    fields["jwks_url"] = f"{issuer.url}/keys"
    fields.update(spec)
    return JwtVerifier(JwtAuthSpec.model_validate(fields))


async def refused(check: JwtVerifier, presented: str, why: str) -> None:
    with pytest.raises(UnauthorizedError, match=why):
        await check.verify(presented)


async def test_a_valid_token_names_its_consumer(issuer: Issuer) -> None:
    issuer.publish(("k1", RSA), ("k2", EC))
    check = verifier(issuer)
    assert await check.verify(token(RSA, claims(issuer))) == "team-a"
    assert await check.verify(token(EC, claims(issuer, sub="b"), kid="k2")) == "b"
    by_email = verifier(issuer, consumer_claim="email")
    assert await by_email.verify(token(RSA, claims(issuer, email="a@x.io"))) == "a@x.io"
    await refused(by_email, token(RSA, claims(issuer)), "claim 'email' is missing")
    assert issuer.fetches == 2  # one per verifier: the keys are cached


async def test_claims_are_checked(issuer: Issuer) -> None:
    issuer.publish(("k1", RSA))
    check = verifier(issuer, leeway_seconds=5)
    now = int(time.time())
    await refused(check, token(RSA, claims(issuer, iss="https://other")), "issuer")
    await refused(check, token(RSA, claims(issuer, aud="someone-else")), "(?i)audience")
    await refused(check, token(RSA, claims(issuer, exp=now - 10)), "expired")
    assert await check.verify(token(RSA, claims(issuer, exp=now - 2))) == "team-a"  # leeway
    await refused(check, token(RSA, claims(issuer, nbf=now + 60)), "not yet valid")
    body = claims(issuer)
    del body["exp"]
    await refused(check, token(RSA, body), "exp")


async def test_algorithms_outside_the_allow_list_and_forgeries_are_refused(
    issuer: Issuer,
) -> None:
    issuer.publish(("k1", RSA), ("k2", EC))
    check = verifier(issuer, algorithms=["RS256"])
    await refused(check, token(EC, claims(issuer), kid="k2"), "'ES256' is not accepted")
    await refused(check, token(RSA, claims(issuer), alg="RS384"), "'RS384' is not accepted")
    await refused(check, forged({"alg": "none", "kid": "k1"}, claims(issuer), None), "'none'")
    public_pem = RSA.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    confused = forged({"alg": "HS256", "kid": "k1"}, claims(issuer), public_pem)
    await refused(check, confused, "'HS256' is not accepted")
    # an RS256 header naming the EC key: the key's family does not fit the algorithm
    both = verifier(issuer, algorithms=["RS256", "ES256"])
    mislabelled = token(RSA, claims(issuer), kid="k2")
    await refused(both, mislabelled, "no published key 'k2' for RS256")
    await refused(both, "not-a-jwt.at.all", "not a JWT")


async def test_rotated_keys_are_fetched_once_and_unknown_kids_do_not_flood_the_issuer(
    issuer: Issuer,
) -> None:
    issuer.publish(("k1", RSA))
    check = verifier(issuer)
    assert await check.verify(token(RSA, claims(issuer))) == "team-a"
    issuer.publish(("k1", RSA), ("k2", RSA2))  # the issuer rotates in a new key
    # the first unknown kid refetches at once (the held keys were fetched > 30 s "ago")
    check._last_attempt -= 60
    assert await check.verify(token(RSA2, claims(issuer, sub="new"), kid="k2")) == "new"
    assert issuer.fetches == 2
    for i in range(20):
        await refused(check, token(RSA2, claims(issuer), kid=f"made-up-{i}"), "no published")
    assert issuer.fetches == 2, "unknown key ids made the verifier fetch again"


async def test_discovery_finds_the_keys_and_must_name_the_same_issuer(issuer: Issuer) -> None:
    issuer.publish(("k1", RSA))
    check = verifier(issuer, jwks_url=None)
    assert await check.verify(token(RSA, claims(issuer))) == "team-a"
    assert check.status()["lastError"] is None
    issuer.discovery_issuer = "https://impostor.example"
    other = verifier(issuer, jwks_url=None)
    await refused(other, token(RSA, claims(issuer)), "no published key")
    assert "names issuer 'https://impostor.example'" in str(other.status()["lastError"])


def test_the_schema_admits_no_symmetric_algorithm_and_needs_an_audience() -> None:
    with pytest.raises(ValueError, match="HS256"):
        JwtAuthSpec.model_validate(
            {"issuer": "https://id.example", "audiences": ["a"], "algorithms": ["HS256"]}
        )
    with pytest.raises(ValueError, match="audiences"):
        JwtAuthSpec.model_validate({"issuer": "https://id.example"})
