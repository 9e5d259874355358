"""JWT auth with the cluster's own issuer: the kube-apiserver signs ServiceAccount tokens.

In: the real kube-apiserver (its ServiceAccount issuer and its ``/openid/v1/jwks``, readable
without credentials through the ``system:service-account-issuer-discovery`` role, as a
platform team grants it), tokens minted by its TokenRequest API (``kubectl create token``),
an ``agentspec runtime`` process whose spec sets ``runtime.auth.jwt`` (and API keys
alongside), the fake LLM.
Asserted: a token for the agent's audience is served on both APIs and names its
ServiceAccount as the consumer (another ServiceAccount cannot see its task; the API key's
consumer cannot either); a token for another audience, a tampered token and no token get a
bare 401; API keys keep working; /status shows the fetched keys.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.support.a2a_client import rpc, send
from tests.support.agent_files import agent_docs, write_docs
from tests.support.control_plane import SERVICE_ACCOUNT_ISSUER, ControlPlane, NamespacedKubectl
from tests.support.fake_llm import FakeLLM, Turn
from tests.support.runtime_proc import RuntimeProcess

pytestmark = pytest.mark.timeout(120)


def open_discovery(kubectl: NamespacedKubectl) -> None:
    """Let anyone read the issuer's public keys (what ``kubectl create clusterrolebinding
    … --group=system:unauthenticated`` does; idempotent)."""
    kubectl.apply(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "agentspec-test-oidc-discovery"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "system:service-account-issuer-discovery",
            },
            "subjects": [
                {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Group",
                    "name": "system:unauthenticated",
                }
            ],
        }
    )


def mint(kubectl: NamespacedKubectl, account: str, audience: str) -> str:
    return kubectl("create", "token", account, "--audience", audience).stdout.strip()


def test_service_account_tokens_from_the_kube_apiserver_name_the_consumer(
    tmp_path: Path, control_plane: ControlPlane, kubectl: NamespacedKubectl, namespace: str
) -> None:
    open_discovery(kubectl)
    for account in ("caller", "other"):
        kubectl("create", "serviceaccount", account)
    caller, other = mint(kubectl, "caller", "agents"), mint(kubectl, "other", "agents")
    elsewhere = mint(kubectl, "caller", "some-other-service")
    jwt = {
        "issuer": SERVICE_ACCOUNT_ISSUER,
        "jwksUrl": f"{control_plane.server}/openid/v1/jwks",
        "audiences": ["agents"],
    }
    with FakeLLM() as llm:
        llm.script(Turn.text("hello from the agent"), Turn.text("task answer"))
        docs = agent_docs(
            llm_url=llm.base_url,
            memory={"type": "none"},
            runtime={"auth": {"jwt": jwt, "apiKeysSecretRef": "agent-keys"}},
        )
        env = {
            "SSL_CERT_FILE": str(control_plane.ca_cert),  # the cluster's CA signs its TLS
            "AGENTSPEC_SECRET_AGENT_KEYS_TEAM_A": "key-a",
        }
        with RuntimeProcess(config=write_docs(tmp_path / "agent.yaml", docs), env=env) as agent:
            chat = {"model": "assistant", "messages": [{"role": "user", "content": "hi"}]}

            def post(token: str | None) -> httpx.Response:
                auth = {"authorization": f"Bearer {token}"} if token else {}
                return httpx.post(
                    f"{agent.base_url}/v1/chat/completions", json=chat, headers=auth, timeout=30
                )

            answered = post(caller)
            assert answered.status_code == 200, answered.text
            assert answered.json()["choices"][0]["message"]["content"] == "hello from the agent"
            header, body, signature = caller.split(".")
            tampered = f"{header}.{body}.{signature[:-4]}AAAA"
            for token in (elsewhere, tampered, None, "key-b"):
                refused = post(token)
                assert refused.status_code == 401, token
                assert refused.json()["error"]["code"] == "unauthorized"

            task = send(agent.base_url, "do it", message_id="m1", key=caller)
            assert task["status"]["state"] == "TASK_STATE_COMPLETED"
            mine = rpc(agent.base_url, "GetTask", {"id": task["id"]}, key=caller)
            assert mine["result"]["id"] == task["id"]
            for stranger in (other, "key-a"):  # another ServiceAccount, the API key's consumer
                theirs = rpc(agent.base_url, "GetTask", {"id": task["id"]}, key=stranger)
                assert "error" in theirs, theirs
            listed = rpc(agent.base_url, "ListTasks", {}, key=caller)["result"]["tasks"]
            assert [t["id"] for t in listed] == [task["id"]]

            status = httpx.get(
                f"{agent.base_url}/status", headers={"x-api-key": "key-a"}, timeout=10
            ).json()
            assert status["auth"]["apiKeys"] == 1
            assert status["auth"]["jwt"]["issuer"] == SERVICE_ACCOUNT_ISSUER
            assert status["auth"]["jwt"]["keys"] >= 1
            assert status["auth"]["jwt"]["lastError"] is None
            card = httpx.get(f"{agent.base_url}/.well-known/agent-card.json").json()
            assert card["securitySchemes"]["bearer"]["httpAuthSecurityScheme"] == {
                "scheme": "bearer",
                "bearerFormat": "JWT",
            }
    claims = json.loads(_b64(caller.split(".")[1]))
    assert claims["sub"] == f"system:serviceaccount:{namespace}:caller"
    llm.assert_traffic_as_scripted()


def _b64(part: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
