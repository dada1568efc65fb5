"""A stand-in exec credential plugin for the kubeconfig tests: PLUGIN_* variables pick its answer."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

CERT = "-----BEGIN CERTIFICATE-----\nexec-cert\n-----END CERTIFICATE-----\n"
KEY = "-----BEGIN PRIVATE KEY-----\nexec-key\n-----END PRIVATE KEY-----\n"


def main() -> int:
    state = Path(os.environ["PLUGIN_STATE"])
    runs_file = state / "runs"
    runs = int(runs_file.read_text()) + 1 if runs_file.exists() else 1
    runs_file.write_text(str(runs))
    # What the plugin was given, so tests can check env, args, stdin and KUBERNETES_EXEC_INFO.
    seen = {
        "argv": sys.argv[1:],
        "exec_info": json.loads(os.environ["KUBERNETES_EXEC_INFO"]),
        "env": {k: v for k, v in os.environ.items() if k.startswith(("PLUGIN_", "HOST_"))},
        "stdin": sys.stdin.read() if sys.stdin is not None else None,
    }
    (state / "seen.json").write_text(json.dumps(seen))

    mode = os.environ.get("PLUGIN_MODE", "token")
    api_version = os.environ.get("PLUGIN_API_VERSION", seen["exec_info"]["apiVersion"])
    status: dict[str, str] = {}
    if mode == "token":
        status["token"] = f"exec-secret-{runs}"
    elif mode == "cert":
        status.update(clientCertificateData=CERT, clientKeyData=KEY)
    elif mode == "cert-only":
        status["clientCertificateData"] = CERT
    elif mode == "fail":
        print(json.dumps({"status": {"token": "exec-secret-on-stdout"}}))
        print("error: you must be logged in; run `cloud auth login`", file=sys.stderr)
        return 3
    elif mode == "bad-json":
        print("exec-secret-in-garbage {")
        return 0
    elif mode == "hang":
        time.sleep(60)
    expiry = os.environ.get("PLUGIN_EXPIRY")
    if expiry:
        status["expirationTimestamp"] = expiry
    print(json.dumps({"apiVersion": api_version, "kind": "ExecCredential", "status": status}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
