"""Suite-wide pytest fixtures: the real control plane, per-test namespaces, and Redis.

Owns the fixture wiring only; the components themselves live in ``tests/support`` (usable
without pytest). Session fixtures are per process, so under pytest-xdist every worker gets its
own apiserver and Redis, and per-test isolation comes from a fresh namespace / Redis db.

No test reaches a real model: ``OPENAI_*`` variables are removed from this process for the
session (the openai SDK and an in-process engine read them), and
:func:`tests.support.procs.start_process` removes them from every child.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support.cluster import ShippedCluster
from tests.support.control_plane import REPO_ROOT, ControlPlane, NamespacedKubectl, namespace_name
from tests.support.operator_proc import OperatorProcess
from tests.support.postgres_server import PostgresServer
from tests.support.procs import MODEL_ENV_PREFIX
from tests.support.redis_server import RedisServer

pytest_plugins = ["tests.support.fixtures_doubles"]

CRD_DIR = REPO_ROOT / "crds"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # tryfirst: the marker must be on the items before `-m "not controlplane"` selects.
    for item in items:
        if {"control_plane", "cluster"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.controlplane)


@pytest.fixture(scope="session", autouse=True)
def _no_real_model() -> Iterator[None]:
    """Remove ``OPENAI_*`` from the environment for the whole session."""
    with pytest.MonkeyPatch.context() as patch:
        for name in [n for n in os.environ if n.startswith(MODEL_ENV_PREFIX)]:
            patch.delenv(name)
        yield


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    """etcd + kube-apiserver for this process, with the repo's CRDs applied if there are any."""
    plane = ControlPlane().start()
    try:
        if any(CRD_DIR.glob("*.yaml")):
            plane.apply_crds(CRD_DIR)
        yield plane
    finally:
        plane.stop()


@pytest.fixture
def namespace(control_plane: ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test; deleted afterwards without waiting.

    Without kube-controller-manager a deleted namespace stays Terminating forever; that is
    harmless, since names are never reused.
    """
    name = namespace_name(request.node.name)
    control_plane.kubectl("create", "namespace", name)
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found")


@pytest.fixture
def kubectl(control_plane: ControlPlane, namespace: str) -> NamespacedKubectl:
    """``kubectl`` bound to the session control plane and this test's namespace."""
    return control_plane.bound(namespace)


@pytest.fixture(scope="session")
def operator(control_plane: ControlPlane) -> Iterator[OperatorProcess]:
    """The operator watching the session control plane; each test has its own namespace."""
    process = OperatorProcess(control_plane).start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="session")
def cluster() -> Iterator[ShippedCluster]:
    """The shipped system: control plane, controller manager, a process kubelet running pods
    from the built images, and the chart installed (the operator runs as its pods)."""
    with ShippedCluster() as shipped:
        yield shipped


@pytest.fixture
def cluster_ns(
    cluster: ShippedCluster, request: pytest.FixtureRequest
) -> Iterator[NamespacedKubectl]:
    """A fresh namespace of the shipped cluster for one test (deleted afterwards: the
    controller manager runs there, so its pods are stopped and its addresses freed)."""
    kubectl = cluster.namespace(request.node.name)
    yield kubectl
    cluster.plane.kubectl("delete", "namespace", kubectl.namespace, "--wait=false")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A private ``redis-server`` for this process (no persistence, 64 databases)."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """``redis://127.0.0.1:<port>/<db>`` with a db of its own, flushed before the test."""
    return redis_server.url_for_db(redis_server.fresh_db())


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A private PostgreSQL server for this process (durability off: the data is thrown away)."""
    with PostgresServer() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """``postgresql://postgres@127.0.0.1:<port>/<db>``: a new, empty database of its own."""
    return postgres_server.fresh_database()
