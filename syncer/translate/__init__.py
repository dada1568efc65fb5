"""Kubernetes semantics, and only here: a Snapshot in, a RoutingModel and its problems out. Pure, no I/O."""

from syncer.translate.ingress import TranslateOptions, Translation, translate

__all__ = ["TranslateOptions", "Translation", "translate"]
