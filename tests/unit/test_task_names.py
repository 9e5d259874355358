"""Small pure parts of durable tasks: where an agent's tables and channels live, and which
push notification URLs are allowed.

Asserted: an agent's PostgreSQL scope is readable, at most 50 bytes for the longest names
Kubernetes allows (so ``<scope>.<channel>`` fits PostgreSQL's 63), and distinct for distinct
agents, even ones whose names read alike once folded; push URLs pass only for an allowed
host (exact, ``*.`` subdomains, port when given), over http(s), without credentials, and
none when the list is empty.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from agentspec_runtime.adapters.sql import scope_name
from agentspec_runtime.adapters.task_store import JOBS_CHANNEL, NOTIFY_CHANNEL
from agentspec_runtime.api.tasks import PushPolicy
from agentspec_runtime.spec.agent import TasksSpec


def test_scopes_fit_postgres_names_and_stay_distinct() -> None:
    assert scope_name("default", "hr").startswith("agentspec_default_hr_")
    assert scope_name("team-a", "hr.bot").startswith("agentspec_team_a_hr_bot_")
    # the readable part folds '-' and '.': the hash keeps these two agents apart
    assert scope_name("team-a", "bot") != scope_name("team", "a-bot")
    assert scope_name("team-a", "bot") == scope_name("team-a", "bot")
    longest = scope_name("n" * 63, "a" * 253)
    assert len(longest) <= 50
    assert scope_name("n" * 63, "a" * 252 + "b") != longest
    for channel in (NOTIFY_CHANNEL, JOBS_CHANNEL):
        assert len(f"{longest}.{channel}".encode()) <= 63


def policy(*hosts: str) -> PushPolicy:
    config = SimpleNamespace(tasks=TasksSpec(push_allowed_hosts=list(hosts)))
    engine: Any = SimpleNamespace(holder=SimpleNamespace(current=SimpleNamespace(config=config)))
    return PushPolicy(engine)


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://hooks.example.com/a2a", True),
        ("http://hooks.example.com:8443/x", True),
        ("https://deep.svc.cluster.local/x", True),
        ("https://svc.cluster.local/x", False),  # *. is subdomains only
        ("http://127.0.0.1:9000/hook", True),
        ("http://127.0.0.1:9001/hook", False),  # the port is part of the entry
        ("https://evil.example.com/a2a", False),
        ("https://hooks.example.com.evil.net/", False),
        ("ftp://hooks.example.com/", False),
        ("https://user:pw@hooks.example.com/", False),
        ("http://169.254.169.254/latest/meta-data", False),
        ("not a url", False),
    ],
)
def test_push_urls_go_only_to_allowed_hosts(url: str, allowed: bool) -> None:
    rules = policy("hooks.example.com", "*.svc.cluster.local", "127.0.0.1:9000")
    assert rules.allows(url) is allowed


def test_no_allowed_hosts_means_no_push_notifications() -> None:
    rules = policy()
    assert not rules.enabled
    assert not rules.allows("https://hooks.example.com/")
