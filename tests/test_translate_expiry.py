"""An expired certificate is still served, with a problem, once the cycle knows what time it is."""

from __future__ import annotations

import base64
import datetime

import trustme

from syncer.snapshot import Snapshot
from syncer.translate import translate


def snapshot_with_cert(not_after: datetime.datetime) -> Snapshot:
    ca = trustme.CA()
    leaf = ca.issue_cert("old.example.com", not_after=not_after)
    data = {
        "tls.crt": base64.b64encode(leaf.cert_chain_pems[0].bytes()).decode(),
        "tls.key": base64.b64encode(leaf.private_key_pem.bytes()).decode(),
    }
    return Snapshot.build(
        {
            "Secret": [{"metadata": {"name": "old", "namespace": "d"}, "type": "kubernetes.io/tls", "data": data}],
            "Service": [{"metadata": {"name": "s", "namespace": "d"}, "spec": {"ports": [{"port": 80}]}}],
            "Ingress": [
                {
                    "metadata": {"name": "i", "namespace": "d"},
                    "spec": {
                        "ingressClassName": "syncer",
                        "tls": [{"secretName": "old"}],
                        "rules": [
                            {
                                "host": "old.example.com",
                                "http": {
                                    "paths": [
                                        {
                                            "path": "/",
                                            "pathType": "Prefix",
                                            "backend": {"service": {"name": "s", "port": {"number": 80}}},
                                        }
                                    ]
                                },
                            }
                        ],
                    },
                }
            ],
        }
    )


def test_expired_certificate_is_served_with_a_problem() -> None:
    snapshot = snapshot_with_cert(datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc))
    translation = translate(snapshot, now="2026-11-25T00:00:00Z")
    assert [c.name for c in translation.model.certificates] == ["d/old"]
    assert translation.model.virtual_hosts[0].tls_cert == "d/old"
    expired = [str(p) for p in translation.problems if "expired" in str(p)]
    assert expired == [
        "Ingress d/i: spec.tls[0].secretName: Secret d/old: "
        "the certificate expired at 2020-01-01T00:00:00Z; served anyway"
    ]


def test_valid_certificate_and_no_clock_give_no_problem() -> None:
    future = snapshot_with_cert(datetime.datetime(2046, 1, 1, tzinfo=datetime.timezone.utc))
    assert not [p for p in translate(future, now="2026-11-25T00:00:00Z").problems if "expired" in str(p)]
    past = snapshot_with_cert(datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc))
    assert not [p for p in translate(past).problems if "expired" in str(p)]
