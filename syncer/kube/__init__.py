"""The fetch edge: everything that talks to the Kubernetes API (the only package importing `requests`).

`client` (KubeClient: lists, status PATCH, Leases) over `transport` (TLS, auth, retries), `kubeconfig` and
`exec_credential` (cluster access), `resources` (the kinds read and written). Import the module you need:
this file stays empty so that reading the resource table does not load the HTTP stack.
"""
