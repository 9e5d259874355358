"""Engine pieces without I/O: prompt choice and rendering, snapshot leases and the pool.

In: resolved prompts (stable + canary) and hand-built snapshots over counting resources.
Asserted: canary share and stickiness per conversation, variable precedence and the
missing-variable error, that a retired snapshot keeps serving its leases and frees its
resources only when drained, and that the pool shares and closes resources by key.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agentspec_runtime.engine.errors import (
    MissingVariableError,
    NotReadyError,
    VariableNotSettableError,
)
from agentspec_runtime.engine.prompts import PromptSelector, bucket
from agentspec_runtime.engine.snapshot import ResourcePool, Snapshot, SnapshotHolder
from agentspec_runtime.spec.prompt import CanaryRelease, PromptVariable
from agentspec_runtime.spec.resolved import ResolvedPrompt, ResolvedPromptVersion


def prompt(weight: int = 20) -> ResolvedPrompt:
    return ResolvedPrompt(
        prompt_key="k",
        stable="v1",
        canary=CanaryRelease(version="v2", weight=weight),
        versions=[
            ResolvedPromptVersion(
                version="v1",
                template="Hi {{ who }} from {{ org }}",
                variables=[
                    PromptVariable(name="who", caller_settable=True),
                    PromptVariable(name="org", default="ACME"),
                ],
            ),
            ResolvedPromptVersion(
                version="v2", template="Hello {{ who }}", variables=[PromptVariable(name="who")]
            ),
        ],
        variables={"who": "spec-user"},
    )


def test_canary_gets_its_share_and_each_conversation_sticks() -> None:
    selector = PromptSelector(prompt(weight=20))
    picks = [selector.choose(f"conversation-{i}")[1] for i in range(5000)]
    share = picks.count("canary") / len(picks)
    assert 0.17 < share < 0.23, share
    for i in range(50):
        first = selector.choose(f"c{i}")
        assert all(selector.choose(f"c{i}") == first for _ in range(5))
    assert selector.versions == {"v1": 80, "v2": 20}
    assert 0 <= bucket("x") < 100


def test_weight_zero_and_hundred() -> None:
    assert {PromptSelector(prompt(0)).choose(f"c{i}")[1] for i in range(200)} == {"stable"}
    assert {PromptSelector(prompt(100)).choose(f"c{i}")[1] for i in range(200)} == {"canary"}


def test_render_uses_request_then_spec_then_default_values() -> None:
    selector = PromptSelector(prompt(0))
    assert selector.render(context_id="a", variables={}).text == "Hi spec-user from ACME"
    rendered = selector.render(context_id="a", variables={"who": "Ann"})
    assert (rendered.text, rendered.version, rendered.variant) == (
        "Hi Ann from ACME",
        "v1",
        "stable",
    )


def test_a_request_cannot_set_a_variable_not_declared_caller_settable() -> None:
    selector = PromptSelector(prompt(0))
    with pytest.raises(
        VariableNotSettableError,
        match="prompt variable 'org', 'secret' cannot be set by a request: prompt version 'v1'",
    ):
        selector.render(context_id="a", variables={"who": "Ann", "org": "Evil", "secret": "x"})


def test_missing_required_variable_names_it() -> None:
    bare = prompt(0).model_copy(update={"variables": {}})
    with pytest.raises(MissingVariableError, match="'who' is required by prompt version 'v1'"):
        PromptSelector(bare).render(context_id="a", variables={})


class Counting:
    def __init__(self) -> None:
        self.closed = 0

    async def aclose(self) -> None:
        self.closed += 1


def snapshot(revision: str, keys: list[str]) -> Snapshot:
    # Leases and draining never look at the config or the model.
    nothing: Any = None
    return Snapshot(
        config=nothing,
        revision=revision,
        prompts=PromptSelector(prompt()),
        model=nothing,
        sources=[],
        resource_keys=keys,
    )


async def test_pool_builds_once_shares_and_closes_when_unused() -> None:
    pool = ResourcePool()
    built: list[Counting] = []

    async def build() -> tuple[Any, Any]:
        await asyncio.sleep(0.01)
        resource = Counting()
        built.append(resource)
        return resource, resource.aclose

    first, second = await asyncio.gather(pool.acquire("k", build), pool.acquire("k", build))
    assert first is second
    assert len(built) == 1
    pool.release("k")
    await pool.drain()
    assert built[0].closed == 0, "still referenced once"
    pool.release("k")
    await pool.drain()
    assert built[0].closed == 1
    assert pool.keys() == set()


async def test_retired_snapshot_serves_its_leases_then_frees_resources() -> None:
    pool = ResourcePool()
    resource = Counting()

    async def build() -> tuple[Any, Any]:
        return resource, resource.aclose

    holder = SnapshotHolder(pool)
    with pytest.raises(NotReadyError), holder.lease():
        pass
    await pool.acquire("model", build)
    holder.swap(snapshot("r1", ["model"]))
    with holder.lease() as in_flight:
        holder.swap(snapshot("r2", []))  # r2 no longer uses "model"
        assert holder.current is not None
        assert holder.current.revision == "r2"
        assert in_flight.revision == "r1"
        assert holder.retiring() == 1
        await pool.drain()
        assert resource.closed == 0, "closed while a request still used it"
    await pool.drain()
    assert resource.closed == 1
    assert holder.retiring() == 0


def test_a_resumed_task_gets_its_revision_while_a_retired_snapshot_still_serves() -> None:
    holder = SnapshotHolder(ResourcePool())
    holder.swap(snapshot("r1", []))
    with holder.lease() as in_flight:
        holder.swap(snapshot("r2", []))
        with holder.lease("r1") as resumed:
            assert resumed is in_flight, "r1 is still alive: the resumed task runs on it"
        with holder.lease("r2") as current:
            assert current.revision == "r2"
    with holder.lease("r1") as later:  # r1 drained: nothing left of it here
        assert later.revision == "r2"
    with holder.lease("never-seen") as other:
        assert other.revision == "r2"
