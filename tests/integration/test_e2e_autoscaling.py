"""End to end, as shipped: an agent scales out and back in on the tokens per second it
processes, through Prometheus and KEDA, with no failed request and no fight over replicas.

In: a cluster of its own (control plane, kube-controller-manager with its HPA controller, the
process kubelet running the built images, the chart installed with the Prometheus address and
a 10 s rate window), a real Prometheus scraping the agent pods by Kubernetes discovery, and
KEDA's operator and metrics API server registered with the apiserver's aggregation layer
(``tests/support/metrics_stack.py``). The fake LLM answers every request with a fixed usage
(100 tokens) and the system prompt it got, so each answer shows the prompt version that
served it. The scenario is ``tests/support/autoscaling.py``'s, which the benchmark runs too.

Asserted:
- a steady load of about 2.6 x the per-pod target (tokens/s) through the agent's Service
  scales it from 1 pod to 3 (+-1), and every pod, new ones included, serves requests;
- a PromptTemplate change applied during the scale-up reaches every replica, old and new,
  and no request fails at any point;
- when the load stops the agent scales back to 1 pod. The windows: the AgentSpec's
  ``scaleDownStabilizationSeconds: 5`` (KEDA passes it to its HPA's ``behavior``), the
  chart's ``autoscaling.rateWindow=10s``, Prometheus scraping every second and the test
  controller manager's HPA sync every second (its flag);
- over the whole run the Deployment's replica count is changed only by the HPA controller,
  through the ``scale`` subresource (the apiserver's audit log); the operator never owns
  ``spec.replicas`` (the Deployment's managed fields, sampled every half second), and the
  agent's status shows its HPA reading the metric (``ScalingActive``);
- switching provider keda -> hpa -> keda keeps the count the autoscaler set, never below its
  minimum at any moment, and turning autoscaling off gives the count to ``replicas``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.autoscaling import (
    AGENT,
    AutoscalingStack,
    ReplicaAudit,
    agent,
    answer_with_usage,
    prompt,
    run_scale_scenario,
)
from tests.support.fake_llm import FakeLLM
from tests.support.operator_testkit import condition
from tests.support.procs import wait_until

HPA_CONTROLLER = "/horizontal-pod-autoscaler"
"""How the controller manager's HPA controller signs its requests (its user agent's end)."""


# A cluster with Prometheus and KEDA takes a minute to start on 2 cores; its waits say more
# than the default 300 s per-test timeout would.
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def stack() -> Iterator[AutoscalingStack]:
    with AutoscalingStack(rate_window="10s") as stack:
        yield stack


def test_an_agent_scales_out_and_in_on_tokens_per_second(stack: AutoscalingStack) -> None:
    kubectl = stack.cluster.namespace("autoscaling-keda")
    run = run_scale_scenario(stack, kubectl, target=250.0, load_factor=2.6)
    t = run.timings
    print(
        f"\noffered {run.offered_tokens_per_second:.0f} tokens/s, target {run.target:.0f}/pod: "
        f"2nd replica after {t['second_replica']:.1f}s, 3 ready after {t['three_ready']:.1f}s; "
        f"prompt on every replica {t['every_replica_v2']:.1f}s after the change; load stop -> "
        f"1 replica after {t['scaled_down']:.1f}s; {len(run.load.answers)} requests, "
        f"{len(run.load.failures)} failed; replica counts {run.audit.counts}"
    )
    assert run.load.failures == [], run.load.failures[:3]
    assert len(run.load.answers) == run.load.sent
    # 3 +- 1 pods for 2.6 x the target; maxReplicas is 6, so over-counting would show
    assert 2 <= run.steady_replicas <= 4
    assert max(run.audit.counts) <= 4
    # the rate KEDA scaled on is the load offered (Prometheus' rate over the 10 s window)
    assert run.steady_rate is not None
    assert 0.6 <= run.steady_rate / run.offered_tokens_per_second <= 1.4, run.steady_rate
    # the new pods took traffic (every ready pod answered, as Prometheus saw it)
    assert len(run.pods_serving) >= 3
    for text, version in run.load.answers:
        assert text == f"prompt {version} speaking", (text, version)
    assert {v for _, v in run.load.answers} == {"v1", "v2"}, "the load spanned the change"
    # the agent's status shows KEDA's HPA reading the metric (updated as the pods changed)
    wait_until(
        lambda: (
            condition(kubectl.json("get", "agentspec", AGENT), "ScalingActive").get("reason")
            == "ValidMetricFound"
        ),
        timeout=30,
        what="ScalingActive ValidMetricFound in the agent's status",
        interval=0.5,
    )
    assert run.query.startswith(f'sum(rate(agentspec_tokens_total{{namespace="{kubectl.namespace}"')
    counts = run.audit.counts
    assert counts[0] == 1
    assert max(counts) >= 3
    assert counts[-1] == 1
    # who changed replicas, by the apiserver's audit log: the HPA controller through the
    # scale subresource, once per change, and nobody else
    writes = stack.replica_writes(kubectl.namespace, AGENT)
    assert {(w.subresource, HPA_CONTROLLER in w.user_agent) for w in writes} == {("scale", True)}
    written = iter(w.replicas for w in writes)
    assert all(count in written for count in counts[1:]), (counts, writes)  # in this order
    # and the operator never owned the field (its managed fields, sampled all along)
    assert run.audit.operator_owned == []


def test_switching_provider_and_turning_autoscaling_off_keep_the_pods(
    stack: AutoscalingStack,
) -> None:
    """keda -> hpa -> keda -> off: the count stays what the autoscaler last set (2, its
    minimum) through every switch — no fall to the Deployment's default of 1 — and turning
    autoscaling off gives it to the declared ``replicas``. (The plain HPA finds no custom
    metrics adapter here, so it holds the count; see docs/autoscaling.md.)"""
    cluster, kubectl = stack.cluster, stack.cluster.namespace("autoscaling-switch")

    def autoscaled(llm: FakeLLM, provider: str) -> dict[str, Any]:
        doc = agent(llm, target=1000.0, scale_down_window=5)
        doc["spec"]["runtime"]["autoscaling"].update(provider=provider, minReplicas=2)
        return doc

    def names(kind: str) -> set[str]:
        return {i["metadata"]["name"] for i in kubectl.json("get", kind)["items"]}

    def replicas() -> int:
        return int(kubectl.json("get", "deployment", AGENT)["spec"]["replicas"])

    with FakeLLM(responder=answer_with_usage) as llm:
        kubectl.apply(prompt("v1"))
        kubectl.apply(autoscaled(llm, "keda"))
        cluster.wait_agent_ready(kubectl, AGENT)
        wait_until(lambda: replicas() == 2, timeout=60, what="KEDA's minimum of 2", interval=0.5)
        sampler = ReplicaAudit(kubectl).start()
        try:
            kubectl.apply(autoscaled(llm, "hpa"))
            wait_until(
                lambda: names("hpa") == {AGENT} and not names("scaledobject"),
                timeout=60,
                what="the operator's HPA instead of KEDA's",
                interval=0.5,
            )
            time.sleep(3)  # three HPA syncs
            kubectl.apply(autoscaled(llm, "keda"))
            wait_until(
                lambda: names("hpa") == {f"keda-hpa-{AGENT}"} and names("scaledobject") == {AGENT},
                timeout=60,
                what="KEDA's HPA again",
                interval=0.5,
            )
            time.sleep(3)
            doc = autoscaled(llm, "keda")
            doc["spec"]["runtime"] = {"replicas": 3}
            kubectl.apply(doc)
            wait_until(lambda: replicas() == 3, timeout=30, what="the declared 3", interval=0.5)
            wait_until(
                lambda: not names("hpa") and not names("scaledobject"),
                timeout=60,
                what="no autoscaler left",
                interval=0.5,
            )
        finally:
            sampler.stop()
    assert sampler.counts == [2, 3]
    # every write of the count, by the audit log: none below KEDA's minimum of 2 at any
    # moment (KEDA itself raised the new Deployment to it), and the operator's only once
    # autoscaling was off, all of them the declared 3 (it re-applies as the Deployment moves)
    writes = stack.replica_writes(kubectl.namespace, AGENT)
    listing = "\n".join(map(repr, writes))
    assert all(w.replicas is not None and w.replicas >= 2 for w in writes), listing
    by_operator = [w.username.endswith(":agentspec-operator") for w in writes]
    assert True in by_operator, listing
    first = by_operator.index(True)
    assert all(by_operator[first:]), listing
    assert {w.replicas for w in writes[first:]} == {3}, listing
