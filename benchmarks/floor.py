"""The floor: the least any syncer must do, i.e. list the same resources and parse them. Loopback I/O.

`python benchmarks/floor.py --server URL --token-file FILE` lists IngressClasses, Ingresses, Services,
EndpointSlices and TLS Secrets with `requests` (500 per page, following `continue`) and parses each page with
the standard `json` module, then prints how many objects of each kind it read (one JSON line).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import requests

PAGE_SIZE = 500
MAX_PAGES = 10_000
LISTS = (
    ("/apis/networking.k8s.io/v1/ingressclasses", ""),
    ("/apis/networking.k8s.io/v1/ingresses", ""),
    ("/api/v1/services", ""),
    ("/apis/discovery.k8s.io/v1/endpointslices", ""),
    ("/api/v1/secrets", "type=kubernetes.io/tls"),
)


def list_all(session: requests.Session, server: str, path: str, field_selector: str) -> list[object]:
    items: list[object] = []
    params = {"limit": str(PAGE_SIZE)}
    if field_selector:
        params["fieldSelector"] = field_selector
    for _ in range(MAX_PAGES):
        response = session.get(server + path, params=params, timeout=(5, 60))
        response.raise_for_status()
        page = json.loads(response.content)
        items.extend(page["items"])
        token = page["metadata"].get("continue")
        if not token:
            return items
        params = {**params, "continue": token}
    raise RuntimeError(f"{path}: more than {MAX_PAGES} pages")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="List and parse what syncer lists; nothing else.")
    parser.add_argument("--server", required=True)
    parser.add_argument("--token-file", required=True)
    args = parser.parse_args(argv)
    with requests.Session() as session:
        session.trust_env = False
        session.headers["Authorization"] = "Bearer " + Path(args.token_file).read_text().strip()
        session.headers["Accept"] = "application/json"
        counts = {path.rsplit("/", 1)[1]: len(list_all(session, args.server, path, fs)) for path, fs in LISTS}
    print(json.dumps(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
