"""Workload identity between agents, against the real kube-apiserver: the tokens a calling
agent requests for its partner, and the partner's verification against the cluster's issuer.

In: the control plane; ServiceAccounts ``router`` and ``intruder`` with the Role the
operator renders for an agent with partners (``create`` on ``serviceaccounts/token`` for its
own name); each "pod" is the adapter given the API server, the cluster CA and that
ServiceAccount's own token (what the kubelet mounts), with no other credential. The partner
side fetches the issuer and keys with its own ServiceAccount token (default RBAC).
Asserted: the router gets a token for HR's audience naming it; HR's verifier accepts it as
``system:serviceaccount:<ns>:router`` and refuses a token for another agent's audience and
the API server's own kind of token; without the Role rule no token is had; the operator's
allow-list says who of the verified callers gets in.
"""

from __future__ import annotations

from pathlib import Path

import jwt
import pytest

from agentspec_runtime.adapters.workload_identity import (
    InCluster,
    ServiceAccountTokens,
    cluster_verifier,
)
from agentspec_runtime.engine.errors import UnauthorizedError
from agentspec_runtime.spec.resolved import AgentConfig, agent_audience, allowed_callers
from tests.support.agent_files import agent_docs, write_docs
from tests.support.control_plane import ControlPlane, NamespacedKubectl
from tests.support.runtime_proc import RuntimeProcess

pytestmark = pytest.mark.timeout(120)


def pod_of(
    account: str, kubectl: NamespacedKubectl, control_plane: ControlPlane, tmp_path: Path
) -> InCluster:
    """What a pod of ``account`` has: the API server, its CA, its own (API) token."""
    kubectl("create", "serviceaccount", account)
    token = tmp_path / f"{account}.token"
    token.write_text(kubectl("create", "token", account).stdout.strip())
    return InCluster(api=control_plane.server, token_file=token, ca_file=control_plane.ca_cert)


def may_request_tokens(kubectl: NamespacedKubectl, account: str) -> None:
    """The rule the operator renders for an agent with partners."""
    kubectl.apply(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": account},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["serviceaccounts/token"],
                    "resourceNames": [account],
                    "verbs": ["create"],
                }
            ],
        }
    )
    kubectl(
        "create", "rolebinding", account, f"--role={account}",
        f"--serviceaccount={kubectl.namespace}:{account}",
    )  # fmt: skip


async def test_an_agent_proves_who_it_is_to_its_partner_and_to_no_one_else(
    tmp_path: Path, control_plane: ControlPlane, kubectl: NamespacedKubectl, namespace: str
) -> None:
    router = pod_of("router", kubectl, control_plane, tmp_path)
    hr = pod_of("hr", kubectl, control_plane, tmp_path)
    intruder = pod_of("intruder", kubectl, control_plane, tmp_path)
    for account in ("router", "intruder"):
        may_request_tokens(kubectl, account)
    to_hr, to_finance = agent_audience(namespace, "hr"), agent_audience(namespace, "finance")

    tokens = ServiceAccountTokens(router)
    verifier = await cluster_verifier(hr, to_hr)
    try:
        token = await tokens.token(to_hr)
        assert token is not None, tokens.last_error
        claims = jwt.decode(token, options={"verify_signature": False})
        assert claims["aud"] == [to_hr]
        assert claims["sub"] == f"system:serviceaccount:{namespace}:router"
        assert await tokens.token(to_hr) == token  # cached until 80 % of its life
        assert await verifier.verify(token) == f"system:serviceaccount:{namespace}:router"

        elsewhere = await tokens.token(to_finance)
        assert elsewhere is not None
        with pytest.raises(UnauthorizedError, match="Audience"):
            await verifier.verify(elsewhere)  # HR cannot replay it either: not HR's audience
        with pytest.raises(UnauthorizedError):
            await verifier.verify(router.token_file.read_text().strip())  # the API's token
        assert verifier.status()["lastError"] is None

        intruding = ServiceAccountTokens(intruder)
        theirs = await intruding.token(to_hr)
        assert theirs is not None
        caller = await verifier.verify(theirs)  # a valid identity...
        await intruding.aclose()
    finally:
        await tokens.aclose()
        await verifier.aclose()

    # ...that only the allow-list lets in
    config = AgentConfig.model_validate(
        {
            "name": "hr",
            "namespace": namespace,
            "model": {"model": "m"},
            "prompt": {
                "promptKey": "k",
                "stable": "v1",
                "versions": [{"version": "v1", "template": "t"}],
            },
            "maxIterations": 3,
            "memory": {"type": "none"},
            "auth": {"agents": {"allowed": [{"name": "router"}, {"name": "x", "namespace": "o"}]}},
        }
    )
    assert allowed_callers(config) == {
        f"system:serviceaccount:{namespace}:router",
        "system:serviceaccount:o:x",
    }
    assert caller not in allowed_callers(config)

    # without the Role rule, no token (the call goes without; the partner refuses it)
    stranger = ServiceAccountTokens(pod_of("stranger", kubectl, control_plane, tmp_path))
    try:
        assert await stranger.token(to_hr) is None
        assert "403" in (stranger.last_error or "")
    finally:
        await stranger.aclose()


def test_outside_a_cluster_an_agent_allow_list_is_refused_not_ignored(tmp_path: Path) -> None:
    """Local mode has no ServiceAccounts: the field cannot be honoured, so it is refused."""
    allowed = {"auth": {"agents": {"allowed": [{"name": "router"}]}}}
    path = write_docs(
        tmp_path / "agent.yaml", agent_docs(llm_url="http://127.0.0.1:9/v1", runtime=allowed)
    )
    refused = RuntimeProcess(config=path).start(wait_ready=False)
    assert refused.process is not None
    assert refused.process.popen.wait(20) == 2
    assert "spec.runtime.auth.agents: agents' identities are ServiceAccounts" in refused.log()
    refused.stop()
