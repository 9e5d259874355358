"""The one seam where the apiserver's refusals become the operator's errors (kube.py): what
the work queue does next depends on it."""

from __future__ import annotations

from typing import Any

from lightkube.core.exceptions import ApiError
from lightkube.models import meta_v1

from agentspec_operator.errors import NamespaceGoingError, PermanentError, TemporaryError
from agentspec_operator.kube import _translate


def refused(code: int, message: str, causes: list[dict[str, Any]] | None = None) -> ApiError:
    status = {"kind": "Status", "status": "Failure", "code": code, "message": message}
    if causes is not None:
        status["details"] = {"causes": causes}
    parsed = meta_v1.Status.from_dict(status)
    assert isinstance(parsed, meta_v1.Status)
    return ApiError(status=parsed)


def test_a_terminating_namespace_is_nothing_to_reconcile_not_a_forbidden_failure() -> None:
    error = _translate(
        refused(
            403,
            'configmaps "a-config" is forbidden: unable to create new content in namespace t '
            "because it is being terminated",
            [{"reason": "NamespaceTerminating", "field": "metadata.namespace"}],
        ),
        "apply configmap t/a-config",
    )
    assert isinstance(error, NamespaceGoingError)
    assert "forbidden" not in str(error)
    # RBAC's refusal stays what it is: permanent, and said
    rbac = _translate(refused(403, 'configmaps is forbidden: User "x" cannot create'), "apply")
    assert isinstance(rbac, PermanentError)
    assert "forbidden" in str(rbac)
    assert isinstance(_translate(refused(503, "unavailable"), "apply"), TemporaryError)
