"""The operator's exception tree, classified by what the caller does next.

::

    OperatorError
    ├── TemporaryError      retry the reconcile later (apiserver down, conflict, timeout)
    │   └── ConflictError   409: someone wrote the object since it was read
    ├── PermanentError      retrying cannot help until the input changes (invalid manifest,
    │                       forbidden by RBAC); surfaced in status and logs
    └── NamespaceGoingError the namespace is being deleted: nothing left to reconcile

Library errors (lightkube ``ApiError``, httpx transport errors) are translated at one seam,
``kube.py``, with ``raise ... from e``.
"""

from __future__ import annotations


class OperatorError(Exception):
    """Base of every error the operator raises on purpose."""


class TemporaryError(OperatorError):
    """Try again later; ``delay`` is a hint in seconds (None: the queue's backoff)."""

    def __init__(self, message: str, *, delay: float | None = None) -> None:
        super().__init__(message)
        self.delay = delay


class ConflictError(TemporaryError):
    """The object changed since it was read (HTTP 409): read it again and decide again."""


class PermanentError(OperatorError):
    """The request can never succeed as made; wait for the input to change."""


class NamespaceGoingError(OperatorError):
    """The namespace is terminating (the apiserver refuses new objects in it, 403
    ``NamespaceTerminating``): its objects go with it, so the work is dropped, not retried
    and not reported as a failure."""
