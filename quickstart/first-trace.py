#!/usr/bin/env python3
"""Send a first trace to a CognObserve server, the way a new user does.

    python3 first-trace.py [--email E --password P] WEB_URL INGEST_URL
    e.g. python3 first-trace.py http://localhost:3000 http://localhost:8080

Registers a user (POST /api/auth/register), logs in with NextAuth's
credentials flow (GET /api/auth/csrf, POST /api/auth/callback/credentials),
creates a workspace, a project and an API key through tRPC
(workspaces.create, projects.create, apiKeys.create), then posts a trace
with the key to the ingest service (POST /v1/traces with X-API-Key) and
expects 202. Prints what it made as one JSON object on stdout (the API key
included: it is shown only once); the steps go to stderr. Python 3 standard
library only; works against the real CognObserve app and the quick-start
image's stand-in alike. Exit status 0 on success, 1 with the failing step.
"""
import argparse
import json
import secrets
import sys
import time
import urllib.error
import urllib.parse
import urllib.request


class Fail(Exception):
    pass


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


class Session:
    """HTTP with a cookie store of its own (the session and CSRF cookies)."""

    def __init__(self):
        self.cookies = {}
        self.opener = urllib.request.build_opener(NoRedirect)

    def request(self, method, url, body=None, headers=None, form=False):
        headers = dict(headers or {})
        data = None
        if body is not None:
            if form:
                data = urllib.parse.urlencode(body).encode()
                headers["Content-Type"] = "application/x-www-form-urlencoded"
            else:
                data = json.dumps(body).encode()
                headers["Content-Type"] = "application/json"
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        req = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            resp = self.opener.open(req, timeout=30)
        except urllib.error.HTTPError as err:
            resp = err
        except OSError as err:
            raise Fail(f"{method} {url}: {err}") from err
        for value in resp.headers.get_all("Set-Cookie") or []:
            name, _, rest = value.partition("=")
            val = rest.split(";", 1)[0]
            if "max-age=0" in value.lower() or not val:
                self.cookies.pop(name.strip(), None)
            else:
                self.cookies[name.strip()] = val
        text = resp.read().decode("utf-8", "replace")
        try:
            parsed = json.loads(text) if text.strip() else None
        except ValueError:
            parsed = None
        return resp.status, parsed, text


def step(msg):
    print(f"first-trace: {msg}", file=sys.stderr, flush=True)


def expect(what, status, want, parsed, text):
    if status not in want:
        raise Fail(f"{what}: HTTP {status}: {text.strip()[:500]}")
    return parsed


def trpc(s, web, proc, data):
    status, parsed, text = s.request("POST", f"{web}/api/trpc/{proc}", {"json": data})
    expect(f"tRPC {proc}", status, (200,), parsed, text)
    try:
        return parsed["result"]["data"]["json"]
    except (KeyError, TypeError) as err:
        raise Fail(f"tRPC {proc}: unexpected answer: {text[:500]}") from err


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("web_url")
    ap.add_argument("ingest_url")
    ap.add_argument("--email", help="log in as this user (registered if new); default: a new one")
    ap.add_argument("--password", help="its password; default: a random one")
    args = ap.parse_args()
    web = args.web_url.rstrip("/")
    ingest = args.ingest_url.rstrip("/")
    tag = f"{int(time.time())}-{secrets.token_hex(3)}"
    email = args.email or f"first-trace-{tag}@example.com"
    password = args.password or secrets.token_urlsafe(18)
    s = Session()

    status, parsed, text = s.request("POST", f"{web}/api/auth/register",
                                     {"name": "First Trace", "email": email, "password": password})
    if status == 409 and args.email:
        step(f"user {email} exists; logging in")
    else:
        user = expect("register", status, (201,), parsed, text)
        step(f"registered {user['email']} (id {user['id']})")

    status, parsed, text = s.request("GET", f"{web}/api/auth/csrf")
    csrf = expect("csrf", status, (200,), parsed, text)["csrfToken"]
    status, parsed, text = s.request("POST", f"{web}/api/auth/callback/credentials", {
        "csrfToken": csrf, "email": email, "password": password, "callbackUrl": f"{web}/", "json": "true",
    }, form=True)
    url = (expect("login", status, (200, 302), parsed, text) or {}).get("url", "")
    if "error=" in url or "csrf=true" in url:
        raise Fail(f"login refused: {url}")
    status, parsed, text = s.request("GET", f"{web}/api/auth/session")
    session = expect("session", status, (200,), parsed, text) or {}
    if not session.get("user"):
        raise Fail(f"no session after logging in (cookies: {sorted(s.cookies)})")
    step(f"logged in as {session['user'].get('email')}")

    health_code, health, text = s.request("GET", f"{web}/api/health")
    step(f"/api/health with the session: HTTP {health_code} {(health or {}).get('status')}")

    slug = f"first-trace-{tag}"
    ws = trpc(s, web, "workspaces.create", {"name": "First Trace", "slug": slug})
    step(f"workspace {ws['slug']} (id {ws['id']})")
    project = trpc(s, web, "projects.create", {"workspaceSlug": slug, "name": "first-project"})
    step(f"project {project['name']} (id {project['id']})")
    key = trpc(s, web, "apiKeys.create", {"workspaceSlug": slug, "projectId": project["id"], "name": "first-key"})
    step(f"API key {key['displayKey']} (id {key['id']})")

    now = time.time()
    iso = lambda t: time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + "Z"  # noqa: E731
    trace = {
        "name": "first-trace",
        "metadata": {"source": "quickstart/first-trace.py"},
        "spans": [{
            "name": "llm-call", "start_time": iso(now - 1), "end_time": iso(now),
            "input": {"prompt": "Hello"}, "output": {"text": "Hi!"}, "model": "gpt-4o-mini",
            "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
        }],
    }
    status, parsed, text = Session().request("POST", f"{ingest}/v1/traces", trace, headers={"X-API-Key": key["key"]})
    accepted = expect("POST /v1/traces", status, (202,), parsed, text)
    step(f"trace {accepted['trace_id']} accepted (workflow {accepted.get('workflow_id')})")

    print(json.dumps({
        "email": email, "password": password if not args.password else None,
        "workspace_slug": slug, "project_id": project["id"],
        "api_key": key["key"], "api_key_id": key["id"],
        "health": {"http_status": health_code, "status": (health or {}).get("status")},
        "trace_id": accepted["trace_id"], "span_ids": accepted["span_ids"],
        "workflow_id": accepted.get("workflow_id"), "success": accepted.get("success"),
    }))


if __name__ == "__main__":
    try:
        main()
    except Fail as err:
        print(f"first-trace: FAILED: {err}", file=sys.stderr)
        sys.exit(1)
