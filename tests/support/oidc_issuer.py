"""A small OpenID issuer for tests and benches: a discovery document and a JWKS over HTTP.

It publishes public keys the caller generated (``publish``) and counts the JWKS fetches;
tokens are signed by the caller with PyJWT. The kube-apiserver is the real issuer of the
integration tests; this one serves the unit tests of the verifier (forged tokens, rotation,
discovery faults) and the auth bench.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec


class Issuer:
    """Serves a discovery document and a JWKS; counts the JWKS fetches."""

    def __init__(self) -> None:
        self.jwks: dict[str, Any] = {"keys": []}
        self.discovery_issuer: str | None = None
        self.fetches = 0
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/.well-known/openid-configuration":
                    body = {
                        "issuer": issuer.discovery_issuer or issuer.url,
                        "jwks_uri": f"{issuer.url}/keys",
                    }
                elif self.path == "/keys":
                    issuer.fetches += 1
                    body = issuer.jwks
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def publish(self, *keys: tuple[str, Any]) -> None:
        self.jwks = {
            "keys": [
                {**json.loads(jwt.algorithms.get_default_algorithms()[alg].to_jwk(key)), "kid": k}
                for k, key, alg in ((kid, key.public_key(), signing_alg(key)) for kid, key in keys)
            ]
        }

    def close(self) -> None:
        self.server.shutdown()


def signing_alg(key: Any) -> str:
    return "ES256" if isinstance(key, ec.EllipticCurvePrivateKey) else "RS256"
