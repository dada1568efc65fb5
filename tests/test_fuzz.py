"""Random Ingress documents through translate() and both renderers: nothing raises, and what comes out is safe.
No network I/O; `envoy --mode validate` runs as a subprocess (it binds nothing and sends nothing).

Hypothesis builds Ingresses that mix valid and invalid shapes and strings at every level (spec, rules, hosts,
paths, pathTypes, backends, ports, TLS entries), beside a few Services, EndpointSlices (made-up addresses,
none on loopback: nothing is routed here) and TLS Secrets. Properties:
- translate() never raises, with any translator option, and its model validates;
- problems stay one short line each;
- the Traefik render parses as YAML, holds no `{{`, no `@` in an object name, only references to objects it
  defines, and every router rule parses with the rule grammar of tests/test_hostile.py, naming only hosts and
  paths of the model;
- the Envoy render is JSON throughout and, for a smaller sample, passes `envoy --mode validate`.

Runs are reproducible (derandomize, no example database). Inputs that trigger bugs already pinned by
tests/test_hostile.py are left out of the alphabets (see "Known bug triggers" below), so that a failure here is news.
"""

from __future__ import annotations

import functools
import json
import string
from collections.abc import Mapping
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from renderers.envoy import EnvoyRenderer
from renderers.envoy.bootstrap import validate_with_envoy
from renderers.traefik import CONFIG_FILE, TraefikRenderer
from syncer.model import RoutingModel
from syncer.snapshot import KubeObject, Snapshot
from syncer.source import DirectorySource
from syncer.translate import TranslateOptions, translate
from tests.envoy_proxy import find_envoy
from tests.test_hostile import CORPUS, NOW, OUTPUT_DIR, traefik_rule_problems

NAMESPACES = ("fa", "fb")
# Known bug triggers, pinned by tests/test_hostile.py and kept out of the alphabets: IPv6 zones in EndpointSlice
# addresses (`fe80::1%25eth0`: Envoy rejects the cluster) and metadata names or namespaces that are not DNS
# names (`a/b`, `{{`: the translator raises, the Traefik render is refused). Snapshots are built directly, so
# the source's own crashes (a TLS Secret whose data is not a mapping) cannot occur here.

# --- alphabets ---------------------------------------------------------------------------------------------

# fmt: off
INJECTIONS = (
    "`", '"', "'", "\\", '{{ env "HOME" }}', "{{", "}}", "{", "}", "&&", "||", "|", "\n", "\r", "\t", "\0",
    ".*", "(", ")", "$", "^", "@", "#", "?", "%", "%00", "%2f", "%41", "%20", "..", "//", " ", "*", "*.",
    ":", ";", "<", ">", "[", "]", "\u212a", "ü", "\U0001f600", "\u202e", "xn--bcher-kva", "-", "_", "~",
)
# fmt: on
GOOD_HOSTS = ("a.fuzz.test", "b.fuzz.test", "A.Fuzz.TEST", "*.w.fuzz.test", "x.w.fuzz.test", "xn--bcher-kva.fuzz.test")
GOOD_PATHS = ("/", "/a", "/a/", "/a/b", "/b", "/.*", "/a;b", "/(x)", "/$", "/a&&b", "/~u", "/a:b@c", "/x+y*")
SERVICES = ("s1", "s2", "ext")
PORT_NAMES = ("http", "admin", "80", "nope")
ADDRESSES = ("10.0.0.1", "10.0.0.2", "10.1.2.3", "fd00::1", "fd00::2", "evil.example.com", "999.0.0.1", "::", "")
TIMESTAMPS = ("2020-01-01T00:00:00Z", "2021-06-01T00:00:00Z", "2021-06-01T00:00:00Z", "not a date", "")

fragments = st.one_of(
    st.sampled_from(INJECTIONS),
    st.text(string.ascii_lowercase + string.digits + "-.", min_size=1, max_size=8),
    st.text(max_size=4),
)
hostile_strings = st.lists(fragments, max_size=5).map("".join)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True), hostile_strings)
junk = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(("host", "http", "paths", "path", "service", "port")), inner, max_size=3),
    ),
    max_leaves=6,
)


def mostly(good: st.SearchStrategy[Any], *bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`good` four times in five, else one of `bad` (anything at all when none is given). A plain one_of
    would not do: it picks among its distinct branches evenly, and nested junk would drown every valid route."""
    worse = st.one_of(*bad) if bad else junk
    return st.sampled_from((True, True, True, True, False)).flatmap(lambda ok: good if ok else worse)


hosts = mostly(
    st.sampled_from(GOOD_HOSTS),
    hostile_strings.map(lambda s: s + ".fuzz.test"),
    hostile_strings,
    st.sampled_from(("", "*", "10.0.0.1", "a.fuzz.test.", "a.fuzz.test\n")),
    st.none(),
    junk,
)
paths = mostly(
    st.sampled_from(GOOD_PATHS),
    hostile_strings.map(lambda s: "/" + s),
    hostile_strings,
    st.sampled_from(("", "/a//b", "/a/../b", "/a%00", "/a b")),
    junk,
)
path_types = mostly(
    st.sampled_from(("Exact", "Prefix", "ImplementationSpecific")), st.sampled_from(("prefix", "")), junk
)
ports = mostly(
    st.one_of(
        st.fixed_dictionaries({"number": st.sampled_from((80, 8080, 443))}),
        st.fixed_dictionaries({"name": st.sampled_from(PORT_NAMES)}),
    ),
    st.fixed_dictionaries({"number": st.sampled_from((0, 65536, -1, "80", 80.0, True))}),
    st.fixed_dictionaries({"name": hostile_strings}),
    st.just({"number": 80, "name": "http"}),
    junk,
)
service_names = mostly(st.sampled_from(SERVICES), st.sampled_from(("ghost", "S1", "fb/s1", "")), hostile_strings, junk)
backends = mostly(
    st.fixed_dictionaries({"service": st.fixed_dictionaries({"name": service_names, "port": ports})}),
    st.just({"resource": {"kind": "Bucket", "name": "b"}}),
    st.fixed_dictionaries({"service": junk}),
    junk,
)
path_rules = mostly(
    st.fixed_dictionaries({"path": paths, "pathType": path_types, "backend": backends}),
    st.fixed_dictionaries({"backend": backends}, optional={"path": paths, "pathType": path_types}),
    junk,
)
rules = mostly(
    st.fixed_dictionaries(
        {"host": hosts, "http": st.fixed_dictionaries({"paths": st.lists(path_rules, min_size=1, max_size=4)})}
    ),
    st.fixed_dictionaries({"http": st.fixed_dictionaries({"paths": st.lists(path_rules, max_size=3)})}),  # host-less
    st.fixed_dictionaries({"host": hosts}),  # host-only
    st.fixed_dictionaries({"host": hosts, "http": junk}),
    st.fixed_dictionaries({"host": hosts, "http": st.fixed_dictionaries({"paths": junk})}),
    junk,
)
tls_entries = mostly(
    st.fixed_dictionaries(
        {"secretName": mostly(st.sampled_from(("tls-a", "tls-b")), st.sampled_from(("tls-bad", "missing")), junk)},
        optional={"hosts": mostly(st.lists(hosts, max_size=3), junk)},
    ),
    st.fixed_dictionaries({}, optional={"hosts": junk, "secretName": junk}),
    junk,
)
specs = mostly(
    st.fixed_dictionaries(
        {"ingressClassName": st.just("syncer"), "rules": st.lists(rules, min_size=1, max_size=4)},
        optional={"tls": mostly(st.lists(tls_entries, max_size=2), junk), "defaultBackend": backends},
    ),
    st.fixed_dictionaries(
        {},
        optional={
            "ingressClassName": st.sampled_from(("syncer", "other", "")),
            "rules": junk,
            "tls": junk,
            "defaultBackend": junk,
        },
    ),
    junk,
)


@st.composite
def ingresses(draw: st.DrawFn) -> list[KubeObject]:
    found: list[KubeObject] = []
    for index in range(draw(st.integers(1, 5))):
        meta: dict[str, Any] = {
            "name": f"i{index}",
            "namespace": draw(st.sampled_from(NAMESPACES)),
            "creationTimestamp": draw(st.one_of(st.sampled_from(TIMESTAMPS), junk)),
        }
        if draw(st.booleans()):  # the legacy class annotation, for specs without ingressClassName
            meta["annotations"] = {"kubernetes.io/ingress.class": draw(mostly(st.just("syncer"), st.just("other")))}
        found.append({"metadata": meta, "spec": draw(specs)})
    return found


@st.composite
def services(draw: st.DrawFn) -> list[KubeObject]:
    port_entries = mostly(
        st.fixed_dictionaries({"name": st.sampled_from(("http", "admin")), "port": st.sampled_from((80, 8080, 443))}),
        st.fixed_dictionaries({"name": st.sampled_from(("80", "", "HTTP")), "port": st.sampled_from(("80", 0, 70000))}),
        junk,
    )
    found: list[KubeObject] = []
    for namespace in NAMESPACES:
        for name in SERVICES:
            spec = draw(
                mostly(st.fixed_dictionaries({"ports": mostly(st.lists(port_entries, min_size=1, max_size=3))}))
            )
            if name == "ext" and isinstance(spec, dict):
                external = draw(st.sampled_from(("db.example.com", "DB.example.com.", "x`y", "")))
                spec = {**spec, "type": "ExternalName", "externalName": external}
            found.append({"metadata": {"name": name, "namespace": namespace}, "spec": spec})
    return found


@st.composite
def endpoint_slices(draw: st.DrawFn) -> list[KubeObject]:
    endpoints = mostly(
        st.fixed_dictionaries(
            {"addresses": mostly(st.lists(st.sampled_from(ADDRESSES), min_size=1, max_size=2))},
            optional={"conditions": st.fixed_dictionaries({"ready": st.sampled_from((True, False, None, "false"))})},
        )
    )
    slice_ports = mostly(
        st.fixed_dictionaries({"name": st.sampled_from(("http", "admin")), "port": st.sampled_from((8080, 9000))}),
        st.fixed_dictionaries({"name": st.sampled_from(("", "x")), "port": st.sampled_from((0, "x", 70000))}),
    )
    found: list[KubeObject] = []
    for index in range(draw(st.integers(0, 4))):
        found.append(
            {
                "metadata": {
                    "name": f"e{index}",
                    "namespace": draw(st.sampled_from(NAMESPACES)),
                    "labels": {"kubernetes.io/service-name": draw(st.sampled_from(SERVICES))},
                },
                "addressType": draw(mostly(st.sampled_from(("IPv4", "IPv6")), st.just("FQDN"))),
                "ports": draw(mostly(st.lists(slice_ports, min_size=1, max_size=2))),
                "endpoints": draw(mostly(st.lists(endpoints, min_size=1, max_size=3))),
            }
        )
    return found


@functools.cache
def tls_secrets() -> tuple[KubeObject, ...]:
    """A valid, an expired and a broken TLS Secret in each namespace, from the hostile corpus's PEM."""
    snapshot = DirectorySource(CORPUS).read_files([CORPUS / "00-backends.yaml"])
    pems = {name: snapshot.get("Secret", "good", name) for name in ("secure-tls", "expired-tls")}
    found: list[KubeObject] = []
    for namespace in NAMESPACES:
        for name, source in (("tls-a", pems["secure-tls"]), ("tls-b", pems["expired-tls"])):
            assert source is not None
            found.append(
                {
                    "metadata": {"name": name, "namespace": namespace},
                    "type": "kubernetes.io/tls",
                    "data": source["data"],
                }
            )
        found.append(
            {
                "metadata": {"name": "tls-bad", "namespace": namespace},
                "type": "kubernetes.io/tls",
                "data": {"tls.crt": "bm90IGEgY2VydA==", "tls.key": ""},
            }
        )
    return tuple(found)


OPTIONS = (
    TranslateOptions(),
    TranslateOptions(upstream="service"),
    TranslateOptions(allow_external_name=True),
    TranslateOptions(watch_ingress_without_class=True),
)


@st.composite
def snapshots(draw: st.DrawFn) -> tuple[Snapshot, TranslateOptions]:
    snapshot = Snapshot.build(
        {
            "Ingress": draw(ingresses()),
            "Service": draw(services()),
            "EndpointSlice": draw(endpoint_slices()),
            "Secret": list(tls_secrets()),
        }
    )
    return snapshot, draw(st.sampled_from(OPTIONS))


# --- checks ---------------------------------------------------------------------------------------------------


def check_traefik(model: RoutingModel, files: Mapping[str, bytes]) -> None:
    templated = [name for name, content in files.items() if b"{{" in content]
    assert templated == [], f"'{{{{' in {templated}: Traefik runs its files through Go templates"
    config = yaml.safe_load(files[CONFIG_FILE])
    http = config["http"]
    names = [name for section in ("routers", "services", "middlewares") for name in http.get(section) or {}]
    assert [name for name in names if "@" in name] == [], "'@' in object names (Traefik's provider separator)"
    services, middlewares = set(http.get("services") or {}), set(http.get("middlewares") or {})
    for name, router in http["routers"].items():
        assert router["service"] in services or router["service"].endswith("@internal"), f"{name}: unknown service"
        assert set(router.get("middlewares", [])) <= middlewares, f"{name}: unknown middleware"
        assert router["priority"] > 0, f"{name}: priority 0 is Traefik's 'use the rule length'"
    assert traefik_rule_problems(config, model) == []
    for entry in (config.get("tls") or {}).get("certificates", []):
        for key in ("certFile", "keyFile"):
            assert entry[key].startswith(f"{OUTPUT_DIR}/certs/")
            assert entry[key].removeprefix(f"{OUTPUT_DIR}/") in files


def check_envoy(files: Mapping[str, bytes]) -> None:
    for name, content in files.items():
        assert isinstance(json.loads(content)["resources"], list), name


def translate_and_render(snapshot: Snapshot, options: TranslateOptions) -> tuple[RoutingModel, dict[str, bytes]]:
    result = translate(snapshot, options, now=NOW)
    result.model.validate()
    for problem in result.problems:
        text = str(problem)
        assert len(text) <= 400 and not any(c in text for c in "\n\r\0"), f"problem text: {text[:200]!r}"
    traefik = TraefikRenderer({}, output_dir=OUTPUT_DIR).render(result.model)
    check_traefik(result.model, traefik)
    envoy = dict(EnvoyRenderer({}, output_dir=OUTPUT_DIR).render(result.model))
    check_envoy(envoy)
    return result.model, envoy


FUZZ = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@FUZZ
@given(case=snapshots())
def test_translate_and_render_are_total_and_safe(case: tuple[Snapshot, TranslateOptions]) -> None:
    translate_and_render(*case)


@settings(FUZZ, max_examples=30)
@given(case=snapshots())
def test_envoy_accepts_what_it_is_given(case: tuple[Snapshot, TranslateOptions]) -> None:
    _, files = translate_and_render(*case)
    validate_with_envoy(find_envoy(), files)
