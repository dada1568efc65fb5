"""The SyncerError tree: every failure a user can see has a type of its own here. No I/O."""

from __future__ import annotations


class SyncerError(Exception):
    """Base of every error this tool raises on purpose."""


class ConfigError(SyncerError):
    """The tool was configured wrongly (kubeconfig, flags, renderer options); fix the configuration."""


class KubeError(SyncerError):
    """A call to the Kubernetes API failed. `resource` names what was asked for, never credentials."""

    def __init__(self, message: str, *, resource: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.resource = resource
        self.status = status


class KubeUnauthorized(KubeError):
    """401: the credentials were refused even after refreshing them."""


class KubeForbidden(KubeError):
    """403: RBAC denies the verb on the resource; `verb` and `resource` say what to grant."""

    def __init__(self, message: str, *, resource: str = "", verb: str = "", status: int | None = 403) -> None:
        super().__init__(message, resource=resource, status=status)
        self.verb = verb


class KubeNotFound(KubeError):
    """404: the API group, version or object is not served."""


class KubeExpired(KubeError):
    """410: a continue token or resourceVersion is too old; the list must start again."""


class KubeUnavailable(KubeError):
    """The API could not be reached or kept failing (connection errors, timeouts, 429, 5xx) after retries."""


class KubeBadResponse(KubeError):
    """The API answered with something that is not what the list API promises (non-JSON, truncated, wrong shape)."""


class KubeDeadlineExceeded(KubeError):
    """The caller's deadline (the cycle's --cycle-timeout) passed before the API answered; not retried."""


class KubeRequestError(KubeError):
    """Any other refused request (400, 405, 409, 422, ...): retrying will not help."""


class KubeConflict(KubeRequestError):
    """409 on a create or update: `reason` is "AlreadyExists" (create) or "Conflict" (stale resourceVersion).

    Someone else wrote the object first; read it again before deciding anything.
    """

    def __init__(self, message: str, *, resource: str = "", reason: str = "", status: int | None = 409) -> None:
        super().__init__(message, resource=resource, status=status)
        self.reason = reason


class SourceError(SyncerError):
    """A snapshot could not be taken: one of the lists failed or a manifest file is unreadable."""


class RenderError(SyncerError):
    """A renderer could not turn the model into files; nothing is written this cycle."""


class RemovalHeld(SyncerError):
    """The mass-removal guard held the new model back; the last written files stay until it is confirmed."""


class WriteError(SyncerError):
    """The output folder could not be written; the files from the last good cycle stay in place."""


class OutputLocked(WriteError):
    """Another process held the output folder's lock until the deadline; nothing was written."""
