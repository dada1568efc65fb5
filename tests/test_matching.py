"""Routing semantics: the reference matcher itself, the golden cases' requests.yaml, and two oracles compared."""

from __future__ import annotations

import random
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncer.model import PathMatch, Route, RoutingModel, SourceRef, VirtualHost
from syncer.snapshot import KubeObject, Snapshot
from syncer.source import DirectorySource
from syncer.translate import TranslateOptions, Translation, translate
from tests.reference_matcher import answer, compile_ingresses, generate_requests, spec_answer

CASES = Path(__file__).resolve().parent.parent / "fixtures" / "cases"
CLASS = {
    "kind": "IngressClass",
    "metadata": {"name": "syncer"},
    "spec": {"controller": "ingress-syncer.dev/controller"},
}

# Problems after which every Ingress rule is still in the model as written, so the raw-manifest oracle
# (which does not re-implement validation) applies: conflicts, TLS, and backends kept to answer 503.
ROUTING_NEUTRAL = (
    "is already served by the older",
    "already has the default backend of the older",
    "the cluster-wide default backend is the older",
    "has no ready endpoints",
    "not found; answering 503",
    "has no port",
    "hosts served without TLS",
    "already uses certificate",
    "no Ingress of this class is served",
    "has no ClusterIP",
    "has neither rules nor a defaultBackend",
)


def backend(index: int) -> str:
    return f"default/s{index}/80"


def ingress_model(paths: Sequence[tuple[str, str]], host: str | None = "example.com") -> RoutingModel:
    """One Ingress, one rule, path `i` -> Service `s<i>`: the model the translator builds from what users write."""
    rule: dict[str, Any] = {
        "http": {
            "paths": [
                {"path": path, "pathType": path_type, "backend": {"service": {"name": f"s{i}", "port": {"number": 80}}}}
                for i, (path_type, path) in enumerate(paths)
            ]
        }
    }
    if host is not None:
        rule["host"] = host
    ingress = {
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"ingressClassName": "syncer", "rules": [rule]},
    }
    services = [
        {"metadata": {"name": f"s{i}", "namespace": "default"}, "spec": {"ports": [{"port": 80}]}}
        for i in range(len(paths))
    ]
    translation = translate(Snapshot.build({"IngressClass": [CLASS], "Ingress": [ingress], "Service": services}))
    assert all("no ready endpoints" in p.message for p in translation.problems), translation.problems
    return translation.model


# The examples table of https://kubernetes.io/docs/concepts/services-networking/ingress/#examples, plus the
# query string. Expected: the index of the path that answers, None for no match (no default backend: 404).
PATH_TABLE: list[tuple[list[tuple[str, str]], str, int | None]] = [
    ([("Prefix", "/")], "/", 0),
    ([("Prefix", "/")], "/foo", 0),
    ([("Prefix", "/")], "/foo/bar/", 0),
    ([("Exact", "/foo")], "/foo", 0),
    ([("Exact", "/foo")], "/bar", None),
    ([("Exact", "/foo")], "/foo/", None),
    ([("Exact", "/foo")], "/FOO", None),
    ([("Exact", "/foo")], "/foo?x=1", 0),
    ([("Exact", "/foo/")], "/foo", None),
    ([("Exact", "/foo/")], "/foo/", 0),
    ([("Prefix", "/foo")], "/foo", 0),
    ([("Prefix", "/foo")], "/foo/", 0),
    ([("Prefix", "/foo")], "/foo/bar", 0),
    ([("Prefix", "/foo")], "/foobar", None),
    ([("Prefix", "/foo/")], "/foo", 0),
    ([("Prefix", "/foo/")], "/foo/", 0),
    ([("Prefix", "/aaa/bb")], "/aaa/bbb", None),
    ([("Prefix", "/aaa/bbb")], "/aaa/bbb", 0),
    ([("Prefix", "/aaa/bbb/")], "/aaa/bbb", 0),
    ([("Prefix", "/aaa/bbb")], "/aaa/bbb/", 0),
    ([("Prefix", "/aaa/bbb")], "/aaa/bbb/ccc", 0),
    ([("Prefix", "/aaa/bbb")], "/aaa/bbbxyz", None),
    ([("Prefix", "/aaa/bbb")], "/aaa/bbb?q=/x", 0),
    ([("Prefix", "/"), ("Prefix", "/aaa")], "/aaa/ccc", 1),
    ([("Prefix", "/"), ("Prefix", "/aaa"), ("Prefix", "/aaa/bbb")], "/aaa/bbb", 2),
    ([("Prefix", "/"), ("Prefix", "/aaa"), ("Prefix", "/aaa/bbb")], "/ccc", 0),
    ([("Prefix", "/aaa")], "/ccc", None),
    ([("Prefix", "/foo"), ("Exact", "/foo")], "/foo", 1),
    ([("Exact", "/foo"), ("Prefix", "/foo")], "/foo", 0),
    ([("Prefix", "/foo"), ("Exact", "/foo")], "/foo/", 0),
    ([("Prefix", "/foo/"), ("Exact", "/foo")], "/foo", 1),  # `/foo/` is no longer than `/foo` as a prefix
    ([("Exact", "/"), ("Prefix", "/")], "/", 0),
    ([("ImplementationSpecific", ""), ("ImplementationSpecific", "/foo")], "/foo/x", 1),
]


@pytest.mark.parametrize(
    ("paths", "request_path", "expected"),
    PATH_TABLE,
    ids=[f"{'+'.join(f'{t}:{p}' for t, p in paths)}-vs-{req}" for paths, req, _ in PATH_TABLE],
)
def test_path_rule(paths: list[tuple[str, str]], request_path: str, expected: int | None) -> None:
    model = ingress_model(paths)
    assert answer(model, "example.com", request_path) == (None if expected is None else backend(expected))
    host_less = ingress_model(paths, host=None)
    assert answer(host_less, "anything.test", request_path) == (None if expected is None else backend(expected))


def catch_all(hostname: str, backend_name: str, path: str = "/", match: PathMatch = PathMatch.PREFIX) -> VirtualHost:
    source = SourceRef("Ingress", "default", backend_name)
    return VirtualHost(hostname, (Route(f"{hostname}/{path}", path, match, backend_name, source),))


def hand_model(*vhosts: VirtualHost, default: str | None = None) -> RoutingModel:
    """Routes point at bare names: `answer` returns them without checking that Backends exist."""
    return RoutingModel(virtual_hosts=vhosts, default_backend=default)


THREE_TIERS = hand_model(
    catch_all("shop.example.com", "exact"),
    catch_all("*.example.com", "wildcard"),
    catch_all("*", "any"),
    default="default",
)
NO_ANY_HOST = hand_model(catch_all("shop.example.com", "exact"), catch_all("*.example.com", "wildcard"), default="dflt")
NARROW_HOSTS = hand_model(
    catch_all("shop.example.com", "exact", "/api", PathMatch.EXACT),
    catch_all("*.example.com", "wildcard", "/api"),
    catch_all("*", "any"),
    default="dflt",
)
HOST_TABLE: list[tuple[str, RoutingModel, str, str, str | None]] = [
    ("exact beats wildcard", THREE_TIERS, "shop.example.com", "/", "exact"),
    ("case and port ignored", THREE_TIERS, "SHOP.Example.COM:8080", "/x", "exact"),
    ("wildcard, one label", THREE_TIERS, "a.example.com", "/", "wildcard"),
    ("wildcard host upper-case with port", THREE_TIERS, "A.EXAMPLE.COM:443", "/", "wildcard"),
    ("wildcard spans one label only", THREE_TIERS, "b.a.example.com", "/", "any"),
    ("wildcard does not match the bare domain", THREE_TIERS, "example.com", "/", "any"),
    ("unknown host goes to any-host", THREE_TIERS, "other.test", "/", "any"),
    ("a suffix is not the host", THREE_TIERS, "shop.example.com.evil.test", "/", "any"),
    ("no any-host: default backend", NO_ANY_HOST, "other.test", "/", "dflt"),
    ("no any-host, no default: 404", hand_model(catch_all("shop.example.com", "exact")), "other.test", "/", None),
    ("exact host, no path: default, not any-host", NARROW_HOSTS, "shop.example.com", "/x", "dflt"),
    ("exact host, no path: not the wildcard", NARROW_HOSTS, "shop.example.com", "/api/x", "dflt"),
    ("exact host, exact path", NARROW_HOSTS, "shop.example.com", "/api", "exact"),
    ("wildcard host, no path: default, not any-host", NARROW_HOSTS, "a.example.com", "/x", "dflt"),
    ("wildcard host, prefix path", NARROW_HOSTS, "a.example.com:80", "/api/v1", "wildcard"),
    (
        "any-host without a matching path, no default: 404",
        hand_model(catch_all("*", "any", "/a")),
        "x.test",
        "/b",
        None,
    ),
    ("empty model: 404", hand_model(), "x.test", "/", None),
    ("empty model with a default", hand_model(default="dflt"), "x.test", "/", "dflt"),
]


@pytest.mark.parametrize(
    ("model", "host", "path", "expected"), [row[1:] for row in HOST_TABLE], ids=[row[0] for row in HOST_TABLE]
)
def test_host_rule(model: RoutingModel, host: str, path: str, expected: str | None) -> None:
    assert answer(model, host, path) == expected


def test_hosts_written_in_upper_case_match_any_case() -> None:
    model = ingress_model([("Prefix", "/")], host="Shop.Example.com")
    assert answer(model, "shop.EXAMPLE.com:80", "/") == backend(0)
    assert answer(model, "other.example.com", "/") is None


# --- the golden cases --------------------------------------------------------------------------------------


def translate_case(case: Path) -> tuple[Snapshot, Translation]:
    """As tests/test_golden.py does: input.yaml through DirectorySource, options.yaml's `translate` section."""
    options_file = case / "options.yaml"
    options = (yaml.safe_load(options_file.read_text()) or {}) if options_file.is_file() else {}
    snapshot = DirectorySource(case).read_files([case / "input.yaml"])
    return snapshot, translate(snapshot, TranslateOptions(**options.get("translate", {})))


def case_names(with_file: str = "input.yaml") -> list[str]:
    return sorted(p.name for p in CASES.iterdir() if (p / "input.yaml").is_file() and (p / with_file).is_file())


@pytest.mark.parametrize("name", case_names("requests.yaml"))
def test_requests_yaml(name: str) -> None:
    _, translation = translate_case(CASES / name)
    expected = yaml.safe_load((CASES / name / "requests.yaml").read_text()) or []
    assert expected, "requests.yaml lists no requests"
    wrong = [
        f"{r['host']} {r['path']}: expected {r['backend']}, reference matcher says {got}"
        for r in expected
        if (got := answer(translation.model, str(r["host"]), str(r["path"]))) != r["backend"]
    ]
    assert not wrong, "\n".join(wrong)


# --- differential: the model against the raw Ingress manifests --------------------------------------------


def served_ingresses(snapshot: Snapshot, translation: Translation) -> list[KubeObject]:
    found = [snapshot.get("Ingress", ref.namespace, ref.name) for ref in translation.ingresses]
    assert all(i is not None for i in found)
    return [i for i in found if i is not None]


def oracle_mismatches(snapshot: Snapshot, translation: Translation, seed: int, count: int) -> list[str]:
    ingresses = served_ingresses(snapshot, translation)
    compiled = compile_ingresses(ingresses, snapshot.of_kind("Service"))
    # Hosts and paths as written, so a rule the model lost still gets requests.
    hosts = sorted({r.host for r in compiled.rules})
    paths = sorted({r.path for r in compiled.rules if r.path})
    requests = generate_requests(translation.model, random.Random(seed), count, hosts, paths)
    mismatches = []
    for host, path in requests:
        expected, got = spec_answer(compiled, host, path), answer(translation.model, host, path)
        if expected != got:
            mismatches.append(f"Host {host!r} path {path!r}: Ingress rules say {expected}, model says {got}")
    return sorted(set(mismatches))


def unmodelled_problems(translation: Translation) -> list[str]:
    return [str(p) for p in translation.problems if not any(m in p.message for m in ROUTING_NEUTRAL)]


def differential_case_names() -> list[str]:
    names = []
    for name in case_names():
        try:
            translation = translate_case(CASES / name)[1]
        except Exception:
            names.append(name)  # the test itself will show the failure; collection must not die of it
            continue
        if not unmodelled_problems(translation):
            names.append(name)
    return names


def test_differential_covers_cases() -> None:
    assert differential_case_names(), "no golden case is simple enough for the raw-manifest oracle"


@pytest.mark.parametrize("name", differential_case_names())
def test_model_answers_like_the_ingress_rules(name: str) -> None:
    snapshot, translation = translate_case(CASES / name)
    mismatches = oracle_mismatches(snapshot, translation, seed=zlib.crc32(name.encode()), count=400)
    assert not mismatches, "\n".join(mismatches[:20])


def translate_objects(ingresses: list[dict[str, Any]], services: list[dict[str, Any]]) -> Translation:
    return translate(Snapshot.build({"IngressClass": [CLASS], "Ingress": ingresses, "Service": services}))


def web_ingress(name: str, created: str, rules: list[dict[str, Any]], default: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"ingressClassName": "syncer", "rules": rules}
    if default is not None:
        spec["defaultBackend"] = {"service": {"name": default, "port": {"number": 80}}}
    return {"metadata": {"name": name, "namespace": "web", "creationTimestamp": created}, "spec": spec}


def prefix_rule(host: str | None, path: str, service: str) -> dict[str, Any]:
    paths = [{"path": path, "pathType": "Prefix", "backend": {"service": {"name": service, "port": {"number": 80}}}}]
    return {**({"host": host} if host else {}), "http": {"paths": paths}}


WEB_SERVICES = [
    {"metadata": {"name": name, "namespace": "web"}, "spec": {"ports": [{"port": 80}]}} for name in ("s", "d", "g")
]


def test_default_backend_serves_every_host_of_its_ingress() -> None:
    shop = web_ingress(
        "shop",
        "2026-01-01T00:00:00Z",
        [
            prefix_rule("a.example.com", "/x", "s"),
            prefix_rule("b.example.com", "/y", "s"),
            prefix_rule(None, "/z", "s"),
        ],
        default="d",
    )
    translation = translate_objects([shop], WEB_SERVICES)
    compiled = compile_ingresses([shop], WEB_SERVICES)
    for host, path, expected in [
        ("a.example.com", "/x", "web/s/80"),
        ("a.example.com", "/other", "web/d/80"),
        ("b.example.com", "/other", "web/d/80"),
        ("other.test", "/z", "web/s/80"),
        ("other.test", "/other", "web/d/80"),
    ]:
        assert spec_answer(compiled, host, path) == expected
        assert answer(translation.model, host, path) == expected


def test_host_only_rule_is_not_answered_by_host_less_rules() -> None:
    """A rule with a host and no `http`: that host's requests get the default backend, as if it had no paths."""
    ingresses = [
        web_ingress("global", "2026-01-01T00:00:00Z", [], default="g"),
        web_ingress("site", "2026-01-02T00:00:00Z", [{"host": "site.example.com"}]),
        web_ingress("catch-all", "2026-01-03T00:00:00Z", [prefix_rule(None, "/", "s")]),
    ]
    translation = translate_objects(ingresses, WEB_SERVICES)
    compiled = compile_ingresses(ingresses, WEB_SERVICES)
    assert spec_answer(compiled, "other.test", "/") == answer(translation.model, "other.test", "/") == "web/s/80"
    assert spec_answer(compiled, "site.example.com", "/") == "web/g/80"
    assert answer(translation.model, "site.example.com", "/") == "web/g/80"


# Random Ingress sets over a small vocabulary, so that hosts, paths, conflicts and defaults collide often.
HOSTS = [None, "a.example.com", "A.Example.com", "*.example.com", "b.a.example.com", "*.a.example.com", "example.com"]
PATHS = ["/", "/foo", "/foo/", "/foo/bar", "/foobar", "/bar", "/FOO"]
PORTS = [{"number": 80}, {"number": 8080}, {"name": "http"}, {"name": "alt"}]
STAMPS = [None, "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"]
SERVICES = [
    {
        "metadata": {"name": "s1", "namespace": ns},
        "spec": {"ports": [{"name": "http", "port": 80}, {"name": "alt", "port": 8080}]},
    }
    for ns in ("a", "b")
] + [{"metadata": {"name": "s2", "namespace": "a"}, "spec": {"ports": [{"name": "http", "port": 8080}]}}]

backends = st.builds(
    lambda name, port: {"service": {"name": name, "port": port}},
    st.sampled_from(["s1", "s2", "ghost"]),
    st.sampled_from(PORTS),
)
path_rules = st.one_of(
    st.builds(
        lambda t, p, b: {"pathType": t, "path": p, "backend": b},
        st.sampled_from(["Exact", "Prefix"]),
        st.sampled_from(PATHS),
        backends,
    ),
    st.builds(
        lambda p, b: {"pathType": "ImplementationSpecific", "path": p, "backend": b},
        st.sampled_from(["", *PATHS]),
        backends,
    ),
)
rules = st.builds(
    lambda host, paths: {
        **({"host": host} if host is not None else {}),
        **({"http": {"paths": paths}} if paths is not None else {}),
    },
    st.sampled_from(HOSTS),
    st.one_of(st.none(), st.lists(path_rules, min_size=1, max_size=3)),
)
ingress_specs = st.fixed_dictionaries(
    {"ingressClassName": st.just("syncer"), "rules": st.lists(rules, max_size=3)},
    optional={"defaultBackend": backends},
)


@st.composite
def ingress_sets(draw: st.DrawFn) -> list[dict[str, Any]]:
    specs = draw(st.lists(ingress_specs, min_size=1, max_size=4))
    ingresses = []
    for i, spec in enumerate(specs):
        meta: dict[str, Any] = {"name": f"i{i}", "namespace": draw(st.sampled_from(["a", "b"]))}
        stamp = draw(st.sampled_from(STAMPS))
        if stamp is not None:
            meta["creationTimestamp"] = stamp
        ingresses.append({"metadata": meta, "spec": spec})
    return ingresses


@settings(
    max_examples=300, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(ingresses=ingress_sets(), seed=st.integers(0, 2**16))
def test_random_ingress_sets_answer_like_the_ingress_rules(ingresses: list[dict[str, Any]], seed: int) -> None:
    snapshot = Snapshot.build({"IngressClass": [CLASS], "Ingress": ingresses, "Service": SERVICES})
    translation = translate(snapshot)
    assert not unmodelled_problems(translation)
    mismatches = oracle_mismatches(snapshot, translation, seed, count=150)
    assert not mismatches, "\n".join(mismatches[:20])
