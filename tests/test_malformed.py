"""Objects whose top-level fields have the wrong type: skipped with one problem line each, everything else served.
Process, socket and disk I/O.

Every case runs `syncer once` twice: on a folder of manifests (the demo plus one bad document) and against the
fake API (the demo plus the same object, served as is in the list). Both must exit 0 without a traceback,
write the demo's routes, and log exactly one problem more than the demo alone, naming the bad object.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import logging
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from syncer.kube.resources import KINDS_BY_NAME
from syncer.output.writer import FileWriter
from syncer.run.cycle import Syncer
from syncer.source import DirectorySource
from syncer.translate import translate
from tests.fakeapi import TEST_TOKEN, FakeKubeAPI
from tests.test_api_source import DEMO, load_demo, syncer, write_kubeconfig
from tests.test_loop import CountingRenderer

MISSING = object()  # the field is deleted
BAD_HOST = "broken.example.com"
STOREFRONT_ROUTER = '"shop__storefront__0-0-web"'

BASES: dict[str, dict[str, Any]] = {
    "IngressClass": {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IngressClass",
        "metadata": {"name": "broken"},
        "spec": {"controller": "example.com/other"},
    },
    "Ingress": {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": "broken", "namespace": "shop", "creationTimestamp": "2020-01-01T00:00:00Z"},
        "spec": {
            "ingressClassName": "syncer",
            "rules": [
                {
                    "host": BAD_HOST,
                    "http": {
                        "paths": [
                            {
                                "path": "/",
                                "pathType": "Prefix",
                                "backend": {"service": {"name": "web", "port": {"number": 80}}},
                            }
                        ]
                    },
                }
            ],
        },
    },
    "Service": {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "broken", "namespace": "shop"},
        "spec": {"ports": [{"name": "http", "port": 80}]},
    },
    "EndpointSlice": {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": "broken", "namespace": "shop", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 18081}],
        "endpoints": [{"addresses": ["127.0.0.99"]}],
    },
    "Secret": {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "broken", "namespace": "shop"},
        "type": "kubernetes.io/tls",
        "data": {"tls.crt": "", "tls.key": ""},
    },
}
NAMESPACED = [kind for kind in BASES if KINDS_BY_NAME[kind].namespaced]


@dataclasses.dataclass(frozen=True)
class Case:
    kind: str
    field: str  # dotted path below the object
    value: Any  # MISSING: deleted
    sources: tuple[str, ...] = ("source", "api")

    @property
    def named(self) -> bool:
        """Whether the object's name can still be read (then the problem names it)."""
        return self.field not in ("metadata", "metadata.name")

    def __str__(self) -> str:
        shown = "missing" if self.value is MISSING else type(self.value).__name__
        return f"{self.kind}-{self.field}-{shown}"

    def object(self) -> dict[str, Any]:
        obj = copy.deepcopy(BASES[self.kind])
        *parents, last = self.field.split(".")
        target = obj
        for part in parents:
            target = target[part]
        if self.value is MISSING:
            target.pop(last, None)
        else:
            target[last] = self.value
        return obj


CASES: list[Case] = [
    *(Case(kind, "metadata", "x") for kind in BASES),
    *(Case(kind, "metadata", ["x"]) for kind in ("Ingress", "Service")),
    *(Case(kind, "metadata.name", 5) for kind in BASES),
    *(Case(kind, "metadata.name", MISSING) for kind in BASES),
    Case("Ingress", "metadata.name", {"a": 1}),
    *(Case(kind, "metadata.namespace", ["shop"]) for kind in NAMESPACED),
    # A manifest without a namespace goes to `default`, as kubectl would put it; the API always sends one.
    *(Case(kind, "metadata.namespace", MISSING, ("api",)) for kind in NAMESPACED),
    *(Case(kind, "metadata.labels", "app=web") for kind in ("Ingress", "EndpointSlice")),
    *(Case(kind, "metadata.annotations", ["a"]) for kind in ("IngressClass", "Ingress")),
    *(Case(kind, "status", "ready") for kind in ("Ingress", "Service")),
    Case("IngressClass", "spec", "x"),
    Case("Ingress", "spec", ["x"]),
    Case("Service", "spec", "x"),
    Case("EndpointSlice", "endpoints", {"addresses": ["127.0.0.99"]}),
    Case("EndpointSlice", "ports", "http"),
    Case("EndpointSlice", "addressType", 4),
    Case("Secret", "data", ["tls.crt"]),
    Case("Secret", "stringData", "x"),
]


def demo_problems() -> set[str]:
    return {str(p) for p in translate(DirectorySource(DEMO).fetch()).problems}


def logged_problems(stderr: str) -> list[str]:
    return [line.split("problem: ", 1)[1] for line in stderr.splitlines() if " problem: " in line]


def check_run(case: Case, stderr: str, returncode: int, out: Path, locator: str) -> None:
    assert returncode == 0, stderr
    assert "Traceback" not in stderr, stderr
    config = (out / "ingress-syncer.yaml").read_text()
    assert STOREFRONT_ROUTER in config, "the demo's routes were not written"
    assert BAD_HOST not in config, "the bad Ingress was served"
    problems = logged_problems(stderr)
    baseline = demo_problems()
    assert baseline <= set(problems), stderr
    new = [p for p in problems if p not in baseline]
    assert len(new) == 1, f"want exactly one problem for the bad object, got {new}"
    line = new[0]
    assert line.startswith(f"{case.kind} "), line
    assert case.field in line, line
    if case.named:
        assert "broken" in line, line
    if not case.named or case.field == "metadata.namespace":
        assert locator in line, f"the problem does not say where to find the object ({locator!r}): {line}"
    wrote = re.search(r"\((\d+) routes, (\d+) backends, (\d+) problems", stderr)
    assert wrote is not None, stderr
    assert int(wrote[3]) == len(baseline) + 1


@pytest.mark.parametrize("case", [c for c in CASES if "source" in c.sources], ids=str)
def test_malformed_manifest_is_skipped_with_one_problem(case: Case, tmp_path: Path) -> None:
    manifests = tmp_path / "manifests"
    shutil.copytree(DEMO, manifests)
    # The bad object is the second document: the problem must say which one when it cannot name it.
    (manifests / "zz-broken.yaml").write_text(
        yaml.safe_dump_all([{"kind": "ConfigMap", "metadata": {"name": "unrelated"}}, case.object()])
    )
    out = tmp_path / "out"
    out.mkdir()
    result = syncer("once", "--source", str(manifests), "--output-dir", str(out))
    check_run(case, result.stderr, result.returncode, out, "zz-broken.yaml, document 2")


@pytest.mark.parametrize("case", [c for c in CASES if "api" in c.sources], ids=str)
def test_malformed_api_object_is_skipped_with_one_problem(case: Case, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with FakeKubeAPI(tls=True, tokens=[TEST_TOKEN]) as api:
        load_demo(api)
        api.add_malformed(case.kind, case.object())
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", api)
        result = syncer("once", "--kubeconfig", str(kubeconfig), "--output-dir", str(out))
    check_run(case, result.stderr, result.returncode, out, KINDS_BY_NAME[case.kind].plural)
    assert TEST_TOKEN not in result.stderr


def test_keys_that_are_not_strings_do_not_stop_a_cycle(tmp_path: Path) -> None:
    """YAML allows any key (`1:`, a date); JSON and Kubernetes do not. The object is still served (keys are
    never looked up by anything but a string), and nothing on the way to the files raises."""
    manifests = tmp_path / "manifests"
    shutil.copytree(DEMO, manifests)
    service = copy.deepcopy(BASES["Service"])
    service["spec"][1] = "number key"
    service["spec"][datetime.date(2026, 1, 1)] = "date key"
    service["metadata"]["annotations"] = {2: "x", "note": "y"}
    (manifests / "zz-keys.yaml").write_text(yaml.safe_dump(service))
    out = tmp_path / "out"
    out.mkdir()
    result = syncer("once", "--source", str(manifests), "--output-dir", str(out))
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert set(logged_problems(result.stderr)) == demo_problems()
    assert STOREFRONT_ROUTER in (out / "ingress-syncer.yaml").read_text()


def test_a_malformed_object_is_reported_once_and_resolved_when_gone(
    manifests: Path, out: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """What `run` does: the problem is logged when it appears, not again while it stays, and resolved when the
    object is fixed or deleted (which is a change of input even though no served object changed)."""
    bad = manifests / "zz-broken.yaml"
    bad.write_text('kind: Ingress\nmetadata: "x"\n')
    renderer = CountingRenderer()
    runner = Syncer(DirectorySource(manifests), renderer, FileWriter(out))
    expected = f"Ingress at {bad}, document 1: metadata: is a string, not an object; Ingress skipped"
    with caplog.at_level(logging.INFO, logger="syncer.run.cycle"):
        assert runner.cycle().changed_input
        assert not runner.cycle().changed_input
        bad.unlink()
        assert runner.cycle().changed_input
    assert [r.getMessage() for r in caplog.records if expected in r.getMessage()] == [
        f"problem: {expected}",
        f"resolved: {expected}",
    ]
    assert renderer.calls == 2 and "shop.example.com" in (out / "hosts.txt").read_text()


def test_status_is_published_for_the_served_ingresses_beside_malformed_ones(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with FakeKubeAPI(tls=True, tokens=[TEST_TOKEN]) as api:
        load_demo(api)
        for case in (Case("Ingress", "metadata", "x"), Case("Ingress", "status", "ready")):
            api.add_malformed("Ingress", case.object())
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", api)
        result = syncer(
            "once", "--kubeconfig", str(kubeconfig), "--output-dir", str(out), "--publish-address", "10.0.0.1"
        )
        patched = sorted(r.path.rsplit("/", 2)[-2] for r in api.requests if r.method == "PATCH")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert patched == ["catalog", "fallback", "mistakes", "storefront"]
    assert len([p for p in logged_problems(result.stderr) if p not in demo_problems()]) == 2
