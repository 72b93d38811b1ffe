"""mitmproxy addon: a corporate proxy that injects ``anthropic-allowed-org-ids`` (tenant restrictions).

Runs inside mitmproxy's own Python (>= 3.12), not in the test process. Load it with
``mitmdump -s inject_header.py --set inject_control=<file>``. The control file is JSON, re-read on every
request so the test can switch modes without restarting the proxy:

* ``{"mode": "overwrite", "value": "<uuid>,<uuid>"}``: what a correctly configured proxy does. Every
  client-sent ``anthropic-allowed-org-ids*`` header (any letter case, split slots included) is removed
  and the proxy's list is set, so a client can neither widen nor narrow the policy.
* ``{"mode": "append", "value": "<uuid>"}``: a misconfigured proxy that adds a copy next to whatever the
  client sent (nginx ``add_header``-style); a client copy plus this one is two headers.
* ``{"mode": "off"}``: pass requests through untouched.

Every response gets ``x-tenant-proxy: <mode>`` so the test can see the request went through here.
"""

from __future__ import annotations

import json
from pathlib import Path

from mitmproxy import ctx, http
from mitmproxy.addonmanager import Loader

HEADER = "anthropic-allowed-org-ids"


class InjectAllowedOrgIds:
    def load(self, loader: Loader) -> None:
        loader.add_option("inject_control", str, "", "JSON file with the injection mode and value, read per request")

    def _control(self) -> dict[str, str]:
        path = ctx.options.inject_control
        if not path:
            return {"mode": "off"}
        return dict(json.loads(Path(path).read_text()))

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        # Not ``request``: with ``stream_large_bodies`` the headers are already upstream when that hook runs.
        control = self._control()
        mode = control["mode"]
        flow.metadata["tenant_proxy_mode"] = mode
        headers = flow.request.headers
        if mode == "overwrite":
            for name in {name for name in headers if name.lower().startswith(HEADER)}:
                del headers[name]  # case-insensitive: removes every copy
            headers[HEADER] = control["value"]
        elif mode == "append":
            headers.add(HEADER, control["value"])
        elif mode != "off":
            raise ValueError(f"unknown inject mode {mode!r}")

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            flow.response.headers["x-tenant-proxy"] = flow.metadata.get("tenant_proxy_mode", "unknown")


addons = [InjectAllowedOrgIds()]
