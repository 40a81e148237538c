"""A stateful fake of the GitHub REST endpoints EdgeGate uses, served over real HTTP on loopback.

PyGithub reaches it through ``base_url``; the Action's container reaches it with ``--network
host``. State lives in memory; ``GET /_fake/state`` returns it as JSON and ``POST /_fake/setup``
and ``POST /_fake/faults`` seed it (so a test can drive a server in another process).

Endpoints: GET /user; GET /repos/{o}/{r}; issues and their comments (list, create, edit); pulls
(list with state/head filters, one PR, its files, paginated); commit statuses (create, list);
commits/{sha}/pulls; releases (list, by tag, create, edit) and their assets (list, upload,
delete). Behaviour copied from GitHub: tokens starting ``ghs_`` are installation tokens (GET
/user answers 403), a read-only token gets 403 "Resource not accessible by integration" on
writes, pagination through Link headers, 422 on a duplicate asset name.

Faults: a list of {method, path (regex), status, headers, body, times} answered instead of the
real response while ``times`` lasts (5xx, 429 with Retry-After, 403 rate limits).

Run standalone: ``python tests/fakegithub.py --port 0`` prints ``port N`` and serves until killed.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

FORBIDDEN = {"message": "Resource not accessible by integration",
             "documentation_url": "https://docs.github.com/rest"}


@dataclass
class State:
    repo: str = "octo/models"
    users: dict[str, dict] = field(default_factory=dict)          # token -> {login, type, write}
    pulls: dict[int, dict] = field(default_factory=dict)
    pull_files: dict[int, list[dict]] = field(default_factory=dict)
    comments: dict[int, dict] = field(default_factory=dict)       # id -> comment (+ "issue")
    statuses: list[dict] = field(default_factory=list)
    releases: dict[int, dict] = field(default_factory=dict)
    assets: dict[int, dict] = field(default_factory=dict)         # id -> asset (+ "release_id", "data")
    faults: list[dict] = field(default_factory=list)
    requests: list[dict] = field(default_factory=list)            # method, path, status, auth
    next_id: int = 1000

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def dump(self) -> dict:
        assets = [{k: v for k, v in a.items() if k != "data"} | {"sha256": a["sha256"]}
                  for a in self.assets.values()]
        return {"repo": self.repo, "comments": list(self.comments.values()),
                "statuses": self.statuses, "releases": list(self.releases.values()),
                "assets": assets, "requests": self.requests, "faults": self.faults}


class FakeGitHub:
    """The fake server; ``url`` is the base_url for PyGithub."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.state = State()
        self.lock = threading.RLock()
        handler = type("Handler", (_Handler,), {"fake": self})
        self.server = ThreadingHTTPServer((host, port), handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://{host}:{self.port}"
        self._thread: threading.Thread | None = None

    # --------------------------------------------------------------- setup, used by tests
    def add_token(self, token: str, login: str, write: bool = True, kind: str = "User") -> None:
        with self.lock:
            self.state.users[token] = {"login": login, "type": kind, "write": write}

    def add_pull(self, number: int, head_sha: str, base_sha: str, files: list[dict],
                 head_repo: str | None = None, head_ref: str = "feature", state: str = "open") -> None:
        owner = self.state.repo.split("/")[0]
        head_repo = head_repo or self.state.repo
        with self.lock:
            self.state.pulls[number] = {
                "number": number, "state": state, "title": f"PR {number}",
                "url": f"{self.url}/repos/{self.state.repo}/pulls/{number}",
                "html_url": f"https://github.example/{self.state.repo}/pull/{number}",
                "head": {"sha": head_sha, "ref": head_ref, "label": f"{head_repo.split('/')[0]}:{head_ref}",
                         "repo": {"full_name": head_repo, "owner": {"login": head_repo.split("/")[0]}}},
                "base": {"sha": base_sha, "ref": "main", "label": f"{owner}:main",
                         "repo": {"full_name": self.state.repo, "owner": {"login": owner}}},
                "changed_files": len(files),
            }
            self.state.pull_files[number] = files

    def fail(self, method: str, path: str, status: int, times: int = 1,
             headers: dict | None = None, body: dict | None = None) -> None:
        with self.lock:
            self.state.faults.append({"method": method, "path": path, "status": status,
                                      "times": times, "headers": headers or {},
                                      "body": body or {"message": f"fake fault {status}"}})

    def setup(self, data: dict) -> None:
        for t in data.get("tokens", []):
            self.add_token(t["token"], t["login"], t.get("write", True), t.get("type", "User"))
        for p in data.get("pulls", []):
            self.add_pull(p["number"], p["head_sha"], p["base_sha"], p.get("files", []),
                          p.get("head_repo"), p.get("head_ref", "feature"))
        for f in data.get("faults", []):
            self.fail(f["method"], f["path"], f["status"], f.get("times", 1), f.get("headers"),
                      f.get("body"))

    # --------------------------------------------------------------- lifecycle
    def start(self) -> "FakeGitHub":
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> "FakeGitHub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --------------------------------------------------------------- views for assertions
    def comments_on(self, number: int) -> list[dict]:
        return [c for c in self.state.comments.values() if c["issue"] == number]

    def statuses_for(self, sha: str) -> dict[str, dict]:
        latest: dict[str, dict] = {}
        for s in self.state.statuses:
            if s["sha"] == sha:
                latest[s["context"]] = s
        return latest


def _json_body(handler: BaseHTTPRequestHandler) -> Any:
    length = int(handler.headers.get("Content-Length") or 0)
    raw = handler.rfile.read(length) if length else b""
    return raw


class _Handler(BaseHTTPRequestHandler):
    fake: FakeGitHub
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:   # quiet
        pass

    # one entry point for every verb
    def do_GET(self): self._dispatch("GET")        # noqa: E704
    def do_POST(self): self._dispatch("POST")      # noqa: E704
    def do_PATCH(self): self._dispatch("PATCH")    # noqa: E704
    def do_DELETE(self): self._dispatch("DELETE")  # noqa: E704

    def _send(self, status: int, body: Any = None, headers: dict | None = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, str(v))
        self.end_headers()
        self.wfile.write(data)

    def _dispatch(self, method: str) -> None:
        fake = self.fake
        url = urlparse(self.path)
        path = re.sub(r"^/api/v3", "", url.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        raw = _json_body(self)
        auth = self.headers.get("Authorization", "")
        token = auth.split(" ", 1)[1] if " " in auth else ""
        with fake.lock:
            st = fake.state
            entry = {"method": method, "path": path, "status": None}
            st.requests.append(entry)
            for fault in st.faults:
                if fault["times"] > 0 and fault["method"] == method and re.fullmatch(fault["path"], path):
                    fault["times"] -= 1
                    entry["status"] = fault["status"]
                    return self._send(fault["status"], fault["body"], fault["headers"])
            if path.startswith("/_fake/"):
                return self._control(method, path, raw)
            user = st.users.get(token)
            if user is None:
                entry["status"] = 401
                return self._send(401, {"message": "Bad credentials"})
            if method != "GET" and not user["write"]:
                entry["status"] = 403
                return self._send(403, FORBIDDEN)
            try:
                body = json.loads(raw) if raw and not _is_upload(path) else {}
            except json.JSONDecodeError:
                entry["status"] = 400
                return self._send(400, {"message": "Problems parsing JSON"})
            status, out, headers = self._route(method, path, query, body, raw, user)
            entry["status"] = status
            self._send(status, out, headers)

    def _control(self, method: str, path: str, raw: bytes) -> None:
        if method == "GET" and path == "/_fake/state":
            return self._send(200, self.fake.state.dump())
        if method == "POST" and path == "/_fake/setup":
            self.fake.setup(json.loads(raw or b"{}"))
            return self._send(200, {"ok": True})
        return self._send(404, {"message": "Not Found"})

    # ------------------------------------------------------------------ routing
    def _route(self, method, path, query, body, raw, user):  # noqa: C901 - a routing table
        fake, st = self.fake, self.fake.state
        repo = st.repo
        base = f"/repos/{repo}"
        if path == "/user" and method == "GET":
            if user["type"] == "Bot":
                return 403, FORBIDDEN, {}
            return 200, _user(user["login"]), {}
        if not path.startswith(base):
            return 404, {"message": "Not Found"}, {}
        rest = path[len(base):]
        if rest == "" and method == "GET":
            return 200, _repo(fake), {}
        m = re.fullmatch(r"/(issues|pulls)/(\d+)", rest)
        if m and method == "GET":
            pr = st.pulls.get(int(m.group(2)))
            if pr is None:
                return 404, {"message": "Not Found"}, {}
            return 200, pr if m.group(1) == "pulls" else _issue(fake, pr), {}
        m = re.fullmatch(r"/issues/(\d+)/comments", rest)
        if m:
            number = int(m.group(1))
            if number not in st.pulls:
                return 404, {"message": "Not Found"}, {}
            if method == "GET":
                items = sorted((c for c in st.comments.values() if c["issue"] == number),
                               key=lambda c: c["id"])
                return self._page(items, query, path)
            if method == "POST":
                cid = st.new_id()
                st.comments[cid] = {
                    "id": cid, "issue": number, "body": body["body"], "user": _user(user["login"], user["type"]),
                    "url": f"{fake.url}{base}/issues/comments/{cid}",
                    "html_url": f"https://github.example/{repo}/pull/{number}#issuecomment-{cid}",
                    "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
                    "edits": 0}
                return 201, st.comments[cid], {}
        m = re.fullmatch(r"/issues/comments/(\d+)", rest)
        if m:
            c = st.comments.get(int(m.group(1)))
            if c is None:
                return 404, {"message": "Not Found"}, {}
            if method == "GET":
                return 200, c, {}
            if method == "PATCH":
                if c["user"]["login"] != user["login"]:
                    return 403, {"message": "You can only edit your own comments"}, {}
                c["body"] = body["body"]
                c["edits"] += 1
                c["updated_at"] = "2026-01-02T00:00:00Z"
                return 200, c, {}
        if rest == "/pulls" and method == "GET":
            items = [p for p in st.pulls.values()
                     if query.get("state", "open") in ("all", p["state"])
                     and (not query.get("head") or query["head"] == p["head"]["label"])]
            return self._page(sorted(items, key=lambda p: -p["number"]), query, path)
        m = re.fullmatch(r"/pulls/(\d+)/files", rest)
        if m and method == "GET":
            files = st.pull_files.get(int(m.group(1)))
            if files is None:
                return 404, {"message": "Not Found"}, {}
            return self._page(files, query, path)
        m = re.fullmatch(r"/commits/([0-9a-f]{40})/pulls", rest)
        if m and method == "GET":
            items = [p for p in st.pulls.values() if p["head"]["sha"] == m.group(1)
                     and p["head"]["repo"]["full_name"] == repo]
            return self._page(items, query, path)
        m = re.fullmatch(r"/statuses/([0-9a-f]{40})", rest)
        if m and method == "POST":
            if body.get("state") not in ("error", "failure", "pending", "success"):
                return 422, {"message": "Validation Failed", "errors": [{"field": "state"}]}, {}
            if len(body.get("description") or "") > 140:
                return 422, {"message": "Validation Failed",
                             "errors": [{"field": "description", "code": "custom",
                                         "message": "description is too long (maximum is 140 characters)"}]}, {}
            status = {"id": st.new_id(), "sha": m.group(1), "state": body["state"],
                      "context": body.get("context", "default"),
                      "description": body.get("description"), "target_url": body.get("target_url"),
                      "url": f"{fake.url}{base}/statuses/{m.group(1)}",
                      "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
                      "creator": _user(user["login"], user["type"])}
            st.statuses.append(status)
            return 201, status, {}
        m = re.fullmatch(r"/commits/([0-9a-f]{40})/statuses", rest)
        if m and method == "GET":
            return self._page([s for s in reversed(st.statuses) if s["sha"] == m.group(1)], query, path)
        return self._releases(method, rest, query, body, raw)

    def _releases(self, method, rest, query, body, raw):
        fake, st = self.fake, self.fake.state
        base = f"/repos/{st.repo}"
        if rest == "/releases":
            if method == "GET":
                return self._page(sorted(st.releases.values(), key=lambda r: -r["id"]), query,
                                  base + rest)
            if method == "POST":
                if any(r["tag_name"] == body["tag_name"] for r in st.releases.values()):
                    return 422, {"message": "Validation Failed",
                                 "errors": [{"code": "already_exists", "field": "tag_name"}]}, {}
                rid = st.new_id()
                st.releases[rid] = _release(fake, rid, body)
                return 201, self._release_view(rid), {}
        m = re.fullmatch(r"/releases/tags/(.+)", rest)
        if m and method == "GET":
            for r in st.releases.values():
                if r["tag_name"] == m.group(1) and not r["draft"]:   # GitHub hides drafts here
                    return 200, self._release_view(r["id"]), {}
            return 404, {"message": "Not Found"}, {}
        m = re.fullmatch(r"/releases/(\d+)", rest)
        if m:
            r = st.releases.get(int(m.group(1)))
            if r is None:
                return 404, {"message": "Not Found"}, {}
            if method == "GET":
                return 200, self._release_view(r["id"]), {}
            if method == "PATCH":
                for key in ("name", "body", "draft", "prerelease", "tag_name"):
                    if key in body:
                        r[key] = body[key]
                return 200, self._release_view(r["id"]), {}
        m = re.fullmatch(r"/releases/(\d+)/assets", rest)
        if m:
            rid = int(m.group(1))
            if rid not in st.releases:
                return 404, {"message": "Not Found"}, {}
            if method == "GET":
                items = [_asset_view(a) for a in st.assets.values() if a["release_id"] == rid]
                return self._page(sorted(items, key=lambda a: a["id"]), query, base + rest)
            if method == "POST":        # the upload endpoint (uploads.github.com on github.com)
                name = query.get("name", "")
                if any(a["name"] == name and a["release_id"] == rid for a in st.assets.values()):
                    return 422, {"message": "Validation Failed",
                                 "errors": [{"resource": "ReleaseAsset", "code": "already_exists",
                                             "field": "name"}]}, {}
                import hashlib

                aid = st.new_id()
                st.assets[aid] = {"id": aid, "release_id": rid, "name": name,
                                  "label": query.get("label") or None,
                                  "content_type": self.headers.get("Content-Type"),
                                  "size": len(raw), "state": "uploaded", "download_count": 0,
                                  "sha256": hashlib.sha256(raw).hexdigest(), "data": raw,
                                  "url": f"{fake.url}{base}/releases/assets/{aid}",
                                  "browser_download_url": f"https://github.example/{st.repo}/releases/download/{st.releases[rid]['tag_name']}/{name}",
                                  "created_at": "2026-01-01T00:00:00Z",
                                  "updated_at": "2026-01-01T00:00:00Z",
                                  "uploader": None}
                return 201, _asset_view(st.assets[aid]), {}
        m = re.fullmatch(r"/releases/assets/(\d+)", rest)
        if m and method == "DELETE":
            if st.assets.pop(int(m.group(1)), None) is None:
                return 404, {"message": "Not Found"}, {}
            return 204, None, {}
        return 404, {"message": "Not Found", "path": rest}, {}

    def _release_view(self, rid: int) -> dict:
        st = self.fake.state
        r = dict(st.releases[rid])
        r["assets"] = [_asset_view(a) for a in st.assets.values() if a["release_id"] == rid]
        return r

    def _page(self, items: list, query: dict, path: str):
        per_page = max(1, min(100, int(query.get("per_page", 30))))
        page = max(1, int(query.get("page", 1)))
        chunk = items[(page - 1) * per_page: page * per_page]
        links = []
        extra = "".join(f"&{k}={v}" for k, v in query.items() if k not in ("page", "per_page"))
        last = max(1, -(-len(items) // per_page))
        if page < last:
            links.append(f'<{self.fake.url}{path}?per_page={per_page}&page={page + 1}{extra}>; rel="next"')
            links.append(f'<{self.fake.url}{path}?per_page={per_page}&page={last}{extra}>; rel="last"')
        return 200, chunk, ({"Link": ", ".join(links)} if links else {})


def _is_upload(path: str) -> bool:
    return bool(re.search(r"/releases/\d+/assets$", path))


def _user(login: str, kind: str = "User") -> dict:
    return {"login": login, "id": abs(hash(login)) % 10_000_000, "type": kind,
            "url": f"https://api.github.example/users/{login}"}


def _repo(fake: FakeGitHub) -> dict:
    owner, name = fake.state.repo.split("/")
    return {"id": 1, "name": name, "full_name": fake.state.repo, "owner": _user(owner),
            "url": f"{fake.url}/repos/{fake.state.repo}", "default_branch": "main",
            "html_url": f"https://github.example/{fake.state.repo}", "private": False}


def _issue(fake: FakeGitHub, pr: dict) -> dict:
    return {"number": pr["number"], "title": pr["title"], "state": pr["state"],
            "url": f"{fake.url}/repos/{fake.state.repo}/issues/{pr['number']}",
            "html_url": pr["html_url"], "pull_request": {"url": pr["url"]}}


def _release(fake: FakeGitHub, rid: int, body: dict) -> dict:
    repo = fake.state.repo
    return {"id": rid, "tag_name": body["tag_name"], "name": body.get("name") or body["tag_name"],
            "body": body.get("body", ""), "draft": bool(body.get("draft", False)),
            "prerelease": bool(body.get("prerelease", False)),
            "target_commitish": body.get("target_commitish", "main"),
            "url": f"{fake.url}/repos/{repo}/releases/{rid}",
            "html_url": f"https://github.example/{repo}/releases/tag/{body['tag_name']}",
            "upload_url": f"{fake.url}/repos/{repo}/releases/{rid}/assets{{?name,label}}",
            "created_at": "2026-01-01T00:00:00Z", "published_at": None, "author": None}


def _asset_view(a: dict) -> dict:
    return {k: v for k, v in a.items() if k not in ("data", "release_id", "sha256")}


def main() -> int:
    parser = argparse.ArgumentParser(description="serve the fake GitHub on loopback")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    fake = FakeGitHub(args.host, args.port)
    print(f"port {fake.port}", flush=True)
    try:
        fake.server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
