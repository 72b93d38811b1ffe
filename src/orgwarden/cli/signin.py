"""``orgwarden login`` / ``token`` / ``logout``: a developer's machine signs in with the device flow.

``login`` asks the server for a code (RFC 8628), prints where to confirm it, polls until the person
has, and keeps the tokens in ``$XDG_CONFIG_HOME/orgwarden/credentials.json`` (mode 0600). ``token``
prints a valid access token, refreshing it when it is about to end: Claude Code's ``apiKeyHelper``.
``logout`` revokes the tokens (RFC 7009) and deletes the file. These commands talk to a server over
HTTP only; they never open a database.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from orgwarden.cli.runtime import err, fail

if TYPE_CHECKING:
    import httpx

CLIENT_ID = "orgwarden-cli"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
REFRESH_MARGIN_SECONDS = 30  # refresh an access token with less than this left
_TIMEOUT = 30.0


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "orgwarden"


def credentials_path() -> Path:
    return config_dir() / "credentials.json"


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """One ``token``/``login``/``logout`` at a time per user: two refreshes of one refresh token would
    look like a stolen token to the server (it revokes the family on reuse)."""
    directory = config_dir()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(directory / "credentials.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _save(credentials: dict[str, Any]) -> Path:
    path = credentials_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_suffix(".tmp")
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump(credentials, handle, indent=2)
    os.replace(temporary, path)
    return path


def _load() -> dict[str, Any]:
    try:
        loaded = json.loads(credentials_path().read_text())
    except FileNotFoundError:
        fail("not signed in: run `orgwarden login --url https://your-orgwarden`")
    except (OSError, ValueError) as exc:
        fail(f"cannot read {credentials_path()}: {exc}")
    if not isinstance(loaded, dict) or not isinstance(loaded.get("token_endpoint"), str):
        fail(f"{credentials_path()} is not an orgwarden credentials file; run `orgwarden login` again")
    return loaded


def _endpoints(http: httpx.Client, url: str) -> dict[str, str]:
    """The server's RFC 8414 metadata (falling back to orgwarden's own paths)."""
    import httpx

    found: dict[str, str] = {
        "device_authorization_endpoint": f"{url}/oauth/device_authorization",
        "token_endpoint": f"{url}/oauth/token",
        "revocation_endpoint": f"{url}/oauth/revoke",
    }
    try:
        response = http.get(f"{url}/.well-known/oauth-authorization-server")
        if response.status_code == 200:
            body = response.json()
            found.update({k: body[k] for k in found if isinstance(body.get(k), str)})
    except (httpx.HTTPError, ValueError):
        pass
    return found


def _oauth_error(response: httpx.Response) -> tuple[str, str]:
    try:
        body = response.json()
        return str(body.get("error", "")), str(body.get("error_description", ""))
    except ValueError:
        return "", f"HTTP {response.status_code}"


def login(
    url: Annotated[str, typer.Option("--url", help="The orgwarden server, e.g. https://orgwarden.example.com")],
    workspace: Annotated[
        str | None, typer.Option("--workspace", help="The workspace to call the API in (default: your default).")
    ] = None,
) -> None:
    """Sign in from this terminal: confirm a code in your browser, then tokens are kept for `orgwarden token`."""
    import httpx

    base = url.rstrip("/")
    if not base.startswith(("http://", "https://")):
        fail("--url must start with https:// (or http://)")
    with _locked(), httpx.Client(timeout=_TIMEOUT) as http:
        endpoints = _endpoints(http, base)
        form = {"client_id": CLIENT_ID, "scope": "user"}
        if workspace:
            form["workspace_id"] = workspace
        try:
            response = http.post(endpoints["device_authorization_endpoint"], data=form)
        except httpx.HTTPError as exc:
            fail(f"cannot reach {base}: {exc}")
        if response.status_code != 200:
            error, description = _oauth_error(response)
            fail(f"the server refused to start a sign-in: {error} {description}".strip())
        started = response.json()
        print(f"To sign in, open {started['verification_uri']} and enter the code {started['user_code']}")
        if started.get("verification_uri_complete"):
            print(f"(or open {started['verification_uri_complete']})")
        sys.stdout.flush()
        interval = float(started.get("interval", 5))
        deadline = time.monotonic() + float(started.get("expires_in", 600))
        while True:
            time.sleep(interval)
            if time.monotonic() > deadline:
                fail("the code expired before it was confirmed; run `orgwarden login` again")
            try:
                polled = http.post(
                    endpoints["token_endpoint"],
                    data={"grant_type": DEVICE_GRANT, "device_code": started["device_code"], "client_id": CLIENT_ID},
                )
            except httpx.HTTPError as exc:
                err.print(f"warning: polling {base} failed ({exc}); retrying", highlight=False)
                continue
            if polled.status_code == 200:
                tokens = polled.json()
                break
            error, description = _oauth_error(polled)
            if error == "authorization_pending":
                continue
            if error == "slow_down":
                interval += 5
                continue
            fail(f"sign-in failed: {error}: {description}" if error else f"sign-in failed: {description}")
        path = _save(_credentials(base, endpoints, tokens))
    print(f"Signed in to {base}. Credentials saved to {path}")


def _credentials(base: str, endpoints: dict[str, str], tokens: dict[str, Any]) -> dict[str, Any]:
    return {
        "url": base,
        "client_id": CLIENT_ID,
        "token_endpoint": endpoints["token_endpoint"],
        "revocation_endpoint": endpoints["revocation_endpoint"],
        "access_token": tokens["access_token"],
        "refresh_token": tokens["refresh_token"],
        "expires_at": int(time.time()) + int(tokens.get("expires_in", 3600)),
    }


def token() -> None:
    """Print a valid access token (refreshing it when needed): use as Claude Code's apiKeyHelper."""
    import httpx

    with _locked():
        credentials = _load()
        if int(credentials.get("expires_at", 0)) - time.time() <= REFRESH_MARGIN_SECONDS:
            try:
                with httpx.Client(timeout=_TIMEOUT) as http:
                    response = http.post(
                        credentials["token_endpoint"],
                        data={
                            "grant_type": "refresh_token",
                            "refresh_token": credentials["refresh_token"],
                            "client_id": credentials.get("client_id", CLIENT_ID),
                        },
                    )
            except httpx.HTTPError as exc:
                fail(f"cannot reach {credentials.get('url')}: {exc}")
            if response.status_code != 200:
                error, description = _oauth_error(response)
                fail(f"cannot refresh the sign-in ({error}: {description}); run `orgwarden login` again")
            endpoints = {k: credentials[k] for k in ("token_endpoint", "revocation_endpoint")}
            credentials = _credentials(credentials["url"], endpoints, response.json())
            _save(credentials)
    print(credentials["access_token"])


def logout() -> None:
    """Revoke this machine's tokens at the server and delete them."""
    import httpx

    with _locked():
        path = credentials_path()
        if not path.exists():
            print("Not signed in.")
            return
        credentials = _load()
        try:
            with httpx.Client(timeout=_TIMEOUT) as http:
                response = http.post(
                    credentials["revocation_endpoint"],
                    data={
                        "token": credentials["refresh_token"],
                        "token_type_hint": "refresh_token",
                        "client_id": credentials.get("client_id", CLIENT_ID),
                    },
                )
            if response.status_code != 200:
                err.print(f"warning: the server did not revoke the tokens (HTTP {response.status_code})")
        except httpx.HTTPError as exc:
            err.print(f"warning: cannot reach {credentials.get('url')} to revoke the tokens ({exc})", highlight=False)
        path.unlink()
    print(f"Signed out of {credentials.get('url')}.")


def register(app: typer.Typer) -> None:
    app.command("login")(login)
    app.command("token")(token)
    app.command("logout")(logout)
