"""A small in-memory, Hugging Face Hub-compatible HTTP server for tests.

`LocalHub` speaks just enough of the Hub protocol for the *real* ``huggingface_hub`` client (pointed at it
through ``HF_ENDPOINT``) to create repos, commit files and download them again, without any network access
and without mocks. Only the standard library is used.

Implemented routes (``{type}`` is ``models``, ``datasets`` or ``spaces``; repo ids are always
``namespace/name``; revisions are branch names or (prefixes of) commit shas):

* ``POST   /api/repos/create``                          create a repo (409 + ``url`` if it already exists)
* ``DELETE /api/repos/delete``                          delete a repo
* ``GET    /api/whoami-v2``                             a fixed local user
* ``POST   /api/validate-yaml``                         README metadata check (always accepts)
* ``GET    /api/agent-harnesses``                       empty agent registry (used for the user agent)
* ``GET    /api/{type}/{repo_id}``                      repo info at ``main`` (``?blobs=true`` adds sizes)
* ``GET    /api/{type}/{repo_id}/revision/{rev}``       repo info at a revision
* ``GET    /api/{type}/{repo_id}/tree/{rev}[/{path}]``  tree listing (``?recursive=true``, ``?expand=true``)
* ``POST   /api/{type}/{repo_id}/paths-info/{rev}``     info for selected paths
* ``POST   /api/{type}/{repo_id}/preupload/{rev}``      upload modes: always ``regular``
* ``POST   /api/{type}/{repo_id}/commit/{rev}``         ndjson commit (inline base64 files and deletions)
* ``GET|HEAD /[{type}/]{repo_id}/resolve/{rev}/{path}`` file content (``Range`` supported)

Everything else answers ``501 Not Implemented`` so that a missing route is obvious in a failing test.

Notes on the client:

* The preupload endpoint decides how each file is uploaded. Answering ``"regular"`` for every file makes
  the client send all content inline (base64) in the commit payload, so neither the Git LFS batch API nor
  Xet storage is ever involved, even though ``hf_xet`` is installed and the client would otherwise prefer
  Xet for LFS files. Downloads use Xet only when a resolve response carries an ``X-Xet-Hash`` header, which
  this server never sends.
* Errors carry the ``X-Error-Code`` header (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``) that
  ``huggingface_hub.utils.hf_raise_for_status`` maps to the matching exception classes. A missing file on
  ``resolve`` also carries ``X-Repo-Commit``, which the client uses to cache the file's absence.
* Like the real Hub, a new repo starts with an initial commit that contains a ``.gitattributes`` file.
* Authentication is not checked; any (or no) token is accepted.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, quote, unquote, urlsplit

__all__ = ["LocalHub", "git_blob_oid"]

logger = logging.getLogger(__name__)

DEFAULT_USER = "local-user"
DEFAULT_BRANCH = "main"

#: Plural path segment used by the ``/api`` routes -> repo type.
API_REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
#: Repo type -> prefix of the repo's web/resolve URL.
URL_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}

INITIAL_GITATTRIBUTES = b"".join(
    f"*.{ext} filter=lfs diff=lfs merge=lfs -text\n".encode()
    for ext in ("bin", "h5", "msgpack", "onnx", "pt", "pth", "safetensors", "zip")
)


def git_blob_oid(content: bytes) -> str:
    """Return the git blob sha1 of ``content`` (what ``git hash-object`` prints and the Hub uses as ETag)."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def _format_date(date: datetime) -> str:
    """Format a datetime the way the Hub does (``2024-01-31T12:00:00.000Z``)."""
    return date.strftime("%Y-%m-%dT%H:%M:%S.") + f"{date.microsecond // 1000:03d}Z"


def _is_true(values: list[str] | None) -> bool:
    """Interpret a query-string flag (``true``/``1``) as a boolean."""
    return bool(values) and values[-1].lower() in {"1", "true", "yes"}


class HubError(Exception):
    """An error answered to the client as a JSON body plus the Hub's ``X-Error-*`` headers."""

    def __init__(
        self,
        status: HTTPStatus,
        message: str,
        error_code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_code = error_code
        self.headers = dict(headers or {})


@dataclass(frozen=True)
class Commit:
    """An immutable snapshot of a repo: the full file tree at this commit."""

    oid: str
    title: str
    description: str
    parent: str | None
    files: Mapping[str, bytes]
    date: datetime


@dataclass
class Repo:
    """A repo: its commits (by oid) and branches (name -> head commit oid)."""

    repo_type: str
    repo_id: str
    private: bool
    created_at: datetime
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)

    def resolve(self, revision: str) -> Commit:
        """Return the commit a branch name, a commit sha or a unique sha prefix (>= 7 chars) points to."""
        if revision in self.branches:
            return self.commits[self.branches[revision]]
        if revision in self.commits:
            return self.commits[revision]
        if len(revision) >= 7:
            matches = [oid for oid in self.commits if oid.startswith(revision)]
            if len(matches) == 1:
                return self.commits[matches[0]]
        raise HubError(HTTPStatus.NOT_FOUND, f"Invalid rev id: {revision} for repo {self.repo_id}", "RevisionNotFound")

    def last_commit_touching(self, commit: Commit, path: str) -> Commit:
        """Return the most recent ancestor of ``commit`` (itself included) that changed ``path``."""
        content = commit.files.get(path)
        while commit.parent is not None:
            parent = self.commits[commit.parent]
            if parent.files.get(path) != content:
                break
            commit = parent
        return commit


class HubState:
    """Thread-safe in-memory store of all repos, plus a log of the requests received."""

    def __init__(self, user: str = DEFAULT_USER) -> None:
        self.user = user
        self._lock = threading.RLock()
        self._repos: dict[tuple[str, str], Repo] = {}
        self._counter = itertools.count()
        self.requests: list[tuple[str, str]] = []

    def log_request(self, method: str, path: str) -> None:
        with self._lock:
            self.requests.append((method, path))

    def reset(self) -> None:
        """Forget every repo and every logged request."""
        with self._lock:
            self._repos.clear()
            self.requests.clear()

    def repo_ids(self, repo_type: str = "model") -> list[str]:
        with self._lock:
            return sorted(repo_id for kind, repo_id in self._repos if kind == repo_type)

    def get_repo(self, repo_type: str, repo_id: str) -> Repo:
        with self._lock:
            repo = self._repos.get((repo_type, repo_id))
        if repo is None:
            raise HubError(HTTPStatus.NOT_FOUND, f"Repository not found: {repo_id}", "RepoNotFound")
        return repo

    def create_repo(self, repo_type: str, repo_id: str, private: bool = False) -> tuple[Repo, bool]:
        """Create a repo with an initial ``.gitattributes`` commit. Return ``(repo, created)``."""
        with self._lock:
            existing = self._repos.get((repo_type, repo_id))
            if existing is not None:
                return existing, False
            repo = Repo(repo_type=repo_type, repo_id=repo_id, private=private, created_at=datetime.now(UTC))
            self._repos[(repo_type, repo_id)] = repo
            self._add_commit(
                repo, DEFAULT_BRANCH, "initial commit", "", None, {".gitattributes": INITIAL_GITATTRIBUTES}
            )
            return repo, True

    def delete_repo(self, repo_type: str, repo_id: str) -> None:
        with self._lock:
            if self._repos.pop((repo_type, repo_id), None) is None:
                raise HubError(HTTPStatus.NOT_FOUND, f"Repository not found: {repo_id}", "RepoNotFound")

    def commit(
        self,
        repo: Repo,
        branch: str,
        header: Mapping[str, Any],
        operations: list[tuple[str, Mapping[str, Any]]],
    ) -> Commit:
        """Apply ndjson commit ``operations`` on top of ``branch`` and move the branch to the new commit."""
        with self._lock:
            if branch not in repo.branches:
                raise HubError(HTTPStatus.NOT_FOUND, f"Invalid rev id: {branch} (not a branch)", "RevisionNotFound")
            head = repo.commits[repo.branches[branch]]
            parent_commit = header.get("parentCommit")
            if parent_commit and not head.oid.startswith(parent_commit):
                raise HubError(
                    HTTPStatus.PRECONDITION_FAILED,
                    f"Parent commit {parent_commit} is not the head of '{branch}' ({head.oid})",
                )
            files = dict(head.files)
            for key, value in operations:
                self._apply_operation(files, key, value)
            summary = header.get("summary") or "Upload files"
            return self._add_commit(repo, branch, summary, header.get("description") or "", head.oid, files)

    @staticmethod
    def _apply_operation(files: dict[str, bytes], key: str, value: Mapping[str, Any]) -> None:
        path = str(value.get("path", "")).strip("/")
        if not path:
            raise HubError(HTTPStatus.BAD_REQUEST, f"Commit operation '{key}' has no path")
        if key == "file":
            content = str(value.get("content", ""))
            if value.get("encoding") == "base64":
                files[path] = base64.b64decode(content)
            else:
                files[path] = content.encode()
        elif key == "deletedFile":
            if files.pop(path, None) is None:
                raise HubError(HTTPStatus.NOT_FOUND, f"A file with this name doesn't exist: {path}", "EntryNotFound")
        elif key == "deletedFolder":
            doomed = [name for name in files if name.startswith(f"{path}/")]
            if not doomed:
                raise HubError(HTTPStatus.NOT_FOUND, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
            for name in doomed:
                del files[name]
        elif key == "lfsFile":
            raise HubError(
                HTTPStatus.BAD_REQUEST,
                f"LocalHub stores every file inline and does not support LFS pointers ({path}); "
                "the preupload endpoint answers uploadMode='regular' for all files.",
            )
        else:
            raise HubError(HTTPStatus.BAD_REQUEST, f"Unknown commit operation '{key}'")

    def _add_commit(
        self,
        repo: Repo,
        branch: str,
        title: str,
        description: str,
        parent: str | None,
        files: Mapping[str, bytes],
    ) -> Commit:
        date = datetime.now(UTC)
        digest = hashlib.sha1()
        digest.update(f"{repo.repo_type}\0{repo.repo_id}\0{parent}\0{title}\0{next(self._counter)}".encode())
        for path in sorted(files):
            digest.update(f"\0{path}\0{git_blob_oid(files[path])}".encode())
        commit = Commit(
            oid=digest.hexdigest(),
            title=title,
            description=description,
            parent=parent,
            files=files,
            date=date,
        )
        repo.commits[commit.oid] = commit
        repo.branches[branch] = commit.oid
        return commit


@dataclass
class _Response:
    status: HTTPStatus
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


def _json_response(payload: Any, status: HTTPStatus = HTTPStatus.OK) -> _Response:
    return _Response(status=status, body=json.dumps(payload).encode())


def _file_entry(path: str, content: bytes) -> dict[str, Any]:
    return {"type": "file", "oid": git_blob_oid(content), "size": len(content), "path": path}


def _folder_entry(path: str, files: Mapping[str, bytes]) -> dict[str, Any]:
    prefix = f"{path}/"
    digest = hashlib.sha1(b"tree")
    for name in sorted(name for name in files if name.startswith(prefix)):
        digest.update(f"\0{name}\0{git_blob_oid(files[name])}".encode())
    return {"type": "directory", "oid": digest.hexdigest(), "size": 0, "path": path}


def _tree_entries(files: Mapping[str, bytes], base: str, recursive: bool) -> list[dict[str, Any]]:
    """List the folders and files under ``base`` (folders first), like ``/api/.../tree``."""
    prefix = f"{base}/" if base else ""
    folders: set[str] = set()
    entries: list[dict[str, Any]] = []
    for path in sorted(files):
        if not path.startswith(prefix):
            continue
        parts = path[len(prefix) :].split("/")
        if len(parts) == 1:
            entries.append(_file_entry(path, files[path]))
        elif recursive:
            folders.update(prefix + "/".join(parts[:depth]) for depth in range(1, len(parts)))
            entries.append(_file_entry(path, files[path]))
        else:
            folders.add(prefix + parts[0])
    return [_folder_entry(folder, files) for folder in sorted(folders)] + entries


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """Parse one ``bytes=start-end`` range into an inclusive ``(start, end)``; ``None`` if unsatisfiable."""
    unit, _, spec = header.partition("=")
    if unit.strip() != "bytes" or "," in spec:
        return None
    start_text, _, end_text = spec.strip().partition("-")
    try:
        if not start_text:  # suffix range: the last N bytes
            length = int(end_text)
            return (max(size - length, 0), size - 1) if length > 0 and size > 0 else None
        start = int(start_text)
        end = min(int(end_text), size - 1) if end_text else size - 1
    except ValueError:
        return None
    return (start, end) if start <= end else None


class _HubHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], state: HubState) -> None:
        super().__init__(address, _HubRequestHandler)
        self.state = state


class _HubRequestHandler(BaseHTTPRequestHandler):
    """Routes one HTTP request to the matching Hub endpoint."""

    protocol_version = "HTTP/1.1"  # keep-alive: every response carries a Content-Length
    server: _HubHTTPServer

    # -- plumbing -------------------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._handle()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("LocalHub: " + format, *args)

    def _handle(self) -> None:
        # Always consume the request body first so that an early error never desynchronises keep-alive.
        self._body = self._read_body()
        split = urlsplit(self.path)
        self.server.state.log_request(self.command, split.path)
        try:
            response = self._dispatch([s for s in split.path.split("/") if s], parse_qs(split.query))
        except HubError as err:
            response = _json_response({"error": err.message}, err.status)
            response.headers.update(err.headers)
            response.headers["X-Error-Message"] = err.message
            if err.error_code is not None:
                response.headers["X-Error-Code"] = err.error_code
        except Exception as err:  # a bug in LocalHub: report it to the client instead of dropping the socket
            logger.exception("LocalHub failed on %s %s", self.command, self.path)
            response = _json_response({"error": f"LocalHub internal error: {err!r}"}, HTTPStatus.INTERNAL_SERVER_ERROR)
        self._send(response)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                pass
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, response: _Response) -> None:
        self.send_response(response.status)
        headers = {"Content-Type": response.content_type, "Content-Length": str(len(response.body))}
        headers.update(response.headers)
        for name, value in headers.items():
            # http.server encodes header values as latin-1: escape anything else (e.g. non-ASCII paths).
            self.send_header(name, value.encode("ascii", "backslashreplace").decode("ascii"))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    def _json_body(self) -> Any:
        try:
            return json.loads(self._body or b"{}")
        except ValueError as err:
            raise HubError(HTTPStatus.BAD_REQUEST, f"Invalid JSON body: {err}") from err

    @property
    def _base_url(self) -> str:
        """The server's URL as the client addressed it (so that returned URLs match its ``HF_ENDPOINT``)."""
        host, port = self.server.server_address[:2]
        return f"http://{self.headers.get('Host') or f'{host}:{port}'}"

    def _repo_url(self, repo: Repo) -> str:
        return f"{self._base_url}/{URL_PREFIXES[repo.repo_type]}{repo.repo_id}"

    # -- routing --------------------------------------------------------------------------------------

    def _dispatch(self, segments: list[str], query: dict[str, list[str]]) -> _Response:
        if segments[:1] == ["api"]:
            return self._dispatch_api(segments[1:], query)
        if segments[:1] and segments[0] in API_REPO_TYPES and segments[0] != "models":
            repo_type, segments = API_REPO_TYPES[segments[0]], segments[1:]
        else:
            repo_type = "model"
        match (self.command, segments):
            case ("GET" | "HEAD", [namespace, name, "resolve", revision, *path]) if path:
                repo = self.server.state.get_repo(repo_type, f"{unquote(namespace)}/{unquote(name)}")
                return self._resolve(repo, unquote(revision), unquote("/".join(path)))
        return self._not_implemented()

    def _dispatch_api(self, segments: list[str], query: dict[str, list[str]]) -> _Response:
        state = self.server.state
        match (self.command, segments):
            case ("GET", ["whoami-v2"]):
                return _json_response(
                    {
                        "type": "user",
                        "id": state.user,
                        "name": state.user,
                        "fullname": state.user,
                        "orgs": [],
                        "auth": {
                            "type": "access_token",
                            "accessToken": {"displayName": "local", "role": "write"},
                        },
                    }
                )
            case ("GET", ["agent-harnesses"]):
                return _json_response({"standardEnvVars": [], "harnesses": {}})
            case ("POST", ["validate-yaml"]):
                return _json_response({"errors": [], "warnings": []})
            case ("POST", ["repos", "create"]):
                return self._create_repo()
            case ("DELETE", ["repos", "delete"]):
                payload = self._json_body()
                repo_id = f"{payload.get('organization') or state.user}/{payload.get('name')}"
                state.delete_repo(payload.get("type") or "model", repo_id)
                return _json_response({})
            case (_, [kind, namespace, name, *rest]) if kind in API_REPO_TYPES:
                repo = state.get_repo(API_REPO_TYPES[kind], f"{unquote(namespace)}/{unquote(name)}")
                return self._dispatch_repo_api(repo, rest, query)
            case (_, [kind, _]) if kind in API_REPO_TYPES:  # ids without a namespace never exist here
                raise HubError(HTTPStatus.NOT_FOUND, f"Repository not found: {segments[1]}", "RepoNotFound")
        return self._not_implemented()

    def _dispatch_repo_api(self, repo: Repo, segments: list[str], query: dict[str, list[str]]) -> _Response:
        match (self.command, segments):
            case ("GET", []):
                return self._repo_info(repo, DEFAULT_BRANCH, query)
            case ("GET", ["revision", revision]):
                return self._repo_info(repo, unquote(revision), query)
            case ("GET", ["tree", revision, *path]):
                return self._tree(repo, unquote(revision), unquote("/".join(path)).strip("/"), query)
            case ("POST", ["paths-info", revision]):
                return self._paths_info(repo, unquote(revision))
            case ("POST", ["preupload", revision]):
                return self._preupload(repo, unquote(revision))
            case ("POST", ["commit", revision]):
                if _is_true(query.get("create_pr")):
                    raise HubError(HTTPStatus.NOT_IMPLEMENTED, "LocalHub does not support pull requests")
                return self._commit(repo, unquote(revision))
        return self._not_implemented()

    def _not_implemented(self) -> _Response:
        raise HubError(HTTPStatus.NOT_IMPLEMENTED, f"LocalHub does not implement {self.command} {self.path}")

    # -- endpoints ------------------------------------------------------------------------------------

    def _create_repo(self) -> _Response:
        payload = self._json_body()
        name = payload.get("name")
        if not name or "/" in name:
            raise HubError(HTTPStatus.BAD_REQUEST, f"Invalid repo name: {name!r}")
        repo_type = payload.get("type") or "model"
        if repo_type not in URL_PREFIXES:
            raise HubError(HTTPStatus.BAD_REQUEST, f"Unsupported repo type: {repo_type!r}")
        repo_id = f"{payload.get('organization') or self.server.state.user}/{name}"
        private = bool(payload.get("private")) or payload.get("visibility") in {"private", "protected"}
        repo, created = self.server.state.create_repo(repo_type, repo_id, private=private)
        if not created:
            # The client reads "url" from this 409 body when called with exist_ok=True.
            return _json_response(
                {"error": f"You already created this {repo_type} repo", "url": self._repo_url(repo)},
                HTTPStatus.CONFLICT,
            )
        return _json_response({"url": self._repo_url(repo), "name": repo_id, "id": repo_id})

    def _repo_info(self, repo: Repo, revision: str, query: dict[str, list[str]]) -> _Response:
        commit = repo.resolve(revision)
        with_blobs = _is_true(query.get("blobs"))
        siblings = []
        for path in sorted(commit.files):
            sibling: dict[str, Any] = {"rfilename": path}
            if with_blobs:
                sibling.update(size=len(commit.files[path]), blobId=git_blob_oid(commit.files[path]))
            siblings.append(sibling)
        namespace = repo.repo_id.split("/")[0]
        return _json_response(
            {
                "_id": hashlib.sha1(f"{repo.repo_type}/{repo.repo_id}".encode()).hexdigest()[:24],
                "id": repo.repo_id,
                "modelId": repo.repo_id,
                "author": namespace,
                "sha": commit.oid,
                "lastModified": _format_date(commit.date),
                "createdAt": _format_date(repo.created_at),
                "private": repo.private,
                "disabled": False,
                "gated": False,
                "downloads": 0,
                "likes": 0,
                "tags": [],
                "siblings": siblings,
                "spaces": [],
                "usedStorage": sum(len(content) for content in commit.files.values()),
            }
        )

    def _tree(self, repo: Repo, revision: str, path: str, query: dict[str, list[str]]) -> _Response:
        commit = repo.resolve(revision)
        if path and not any(name.startswith(f"{path}/") for name in commit.files):
            raise HubError(HTTPStatus.NOT_FOUND, f"{path} does not exist on {revision}", "EntryNotFound")
        entries = _tree_entries(commit.files, path, recursive=_is_true(query.get("recursive")))
        if _is_true(query.get("expand")):
            for entry in entries:
                if entry["type"] == "file":
                    last = repo.last_commit_touching(commit, entry["path"])
                    entry["lastCommit"] = {
                        "id": last.oid,
                        "title": last.title,
                        "date": _format_date(last.date),
                    }
        return _json_response(entries)

    def _paths_info(self, repo: Repo, revision: str) -> _Response:
        commit = repo.resolve(revision)
        if self.headers.get("Content-Type", "").startswith("application/json"):
            paths = self._json_body().get("paths", [])
        else:
            paths = parse_qs(self._body.decode()).get("paths", [])
        entries = []
        for path in (p.strip("/") for p in ([paths] if isinstance(paths, str) else paths)):
            if path in commit.files:
                entries.append(_file_entry(path, commit.files[path]))
            elif any(name.startswith(f"{path}/") for name in commit.files):
                entries.append(_folder_entry(path, commit.files))
        return _json_response(entries)

    def _preupload(self, repo: Repo, revision: str) -> _Response:
        commit = repo.resolve(revision)
        files = []
        for file in self._json_body().get("files", []):
            existing = commit.files.get(file["path"])
            files.append(
                {
                    "path": file["path"],
                    # "regular" => content is sent inline in the commit payload: no LFS/Xet upload at all.
                    "uploadMode": "regular",
                    "shouldIgnore": False,
                    # The client skips files whose git oid did not change.
                    "oid": git_blob_oid(existing) if existing is not None else None,
                }
            )
        return _json_response({"files": files, "commitOid": commit.oid})

    def _commit(self, repo: Repo, branch: str) -> _Response:
        header: dict[str, Any] = {}
        operations: list[tuple[str, Mapping[str, Any]]] = []
        for line in self._body.splitlines():
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except ValueError as err:
                raise HubError(HTTPStatus.BAD_REQUEST, f"Invalid ndjson line: {err}") from err
            if item.get("key") == "header":
                header = item.get("value") or {}
            else:
                operations.append((item.get("key"), item.get("value") or {}))
        commit = self.server.state.commit(repo, branch, header, operations)
        return _json_response(
            {
                "success": True,
                "commitOid": commit.oid,
                "commitUrl": f"{self._repo_url(repo)}/commit/{commit.oid}",
                "pullRequestUrl": None,
            }
        )

    def _resolve(self, repo: Repo, revision: str, path: str) -> _Response:
        commit = repo.resolve(revision)
        content = commit.files.get(path)
        if content is None:
            raise HubError(
                HTTPStatus.NOT_FOUND,
                f"Entry not found: {path} at {revision}",
                "EntryNotFound",
                headers={"X-Repo-Commit": commit.oid},
            )
        filename = path.rsplit("/", 1)[-1]
        headers = {
            "ETag": f'"{git_blob_oid(content)}"',
            "X-Repo-Commit": commit.oid,
            "Accept-Ranges": "bytes",
            "Content-Disposition": f"inline; filename*=UTF-8''{quote(filename)}; filename=\"{filename}\";",
        }
        status = HTTPStatus.OK
        range_header = self.headers.get("Range")
        if range_header:
            byte_range = _parse_range(range_header, len(content))
            if byte_range is None:
                raise HubError(
                    HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE,
                    f"Unsatisfiable range {range_header}",
                    headers={"Content-Range": f"bytes */{len(content)}"},
                )
            start, end = byte_range
            headers["Content-Range"] = f"bytes {start}-{end}/{len(content)}"
            content, status = content[start : end + 1], HTTPStatus.PARTIAL_CONTENT
        return _Response(status=status, body=content, headers=headers, content_type="application/octet-stream")


class LocalHub:
    """An in-memory Hugging Face Hub served over HTTP on localhost, in a daemon thread.

    Example::

        with LocalHub() as hub:
            os.environ["HF_ENDPOINT"] = hub.url  # must happen before huggingface_hub is imported
            ...

    Args:
        port: Port to bind on ``host``; ``0`` picks a free one.
        host: Interface to bind.
        user: Namespace used for repos created without an organization (and returned by ``whoami``).
    """

    def __init__(self, port: int = 0, host: str = "127.0.0.1", user: str = DEFAULT_USER) -> None:
        self.host = host
        self.port = port
        self.state = HubState(user=user)
        self._server: _HubHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL of the server, suitable for ``HF_ENDPOINT`` (no trailing slash)."""
        port = self._server.server_address[1] if self._server is not None else self.port
        if not port:
            raise RuntimeError("LocalHub has no port yet: call start() first or pass an explicit port")
        return f"http://{self.host}:{port}"

    @property
    def requests(self) -> list[tuple[str, str]]:
        """``(method, path)`` of every request received so far (query strings excluded)."""
        return list(self.state.requests)

    def start(self) -> Self:
        """Bind the socket and serve in a daemon thread. Returns ``self``."""
        if self._server is not None:
            raise RuntimeError("LocalHub is already running")
        self._server = _HubHTTPServer((self.host, self.port), self.state)
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"LocalHub:{self.url}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket. Safe to call twice."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- server-side helpers for tests ----------------------------------------------------------------

    def reset(self) -> None:
        """Delete every repo and clear the request log."""
        self.state.reset()

    def repo_ids(self, repo_type: str = "model") -> list[str]:
        """Ids of the repos of ``repo_type`` that currently exist."""
        return self.state.repo_ids(repo_type)

    def read_file(self, repo_id: str, path: str, revision: str = DEFAULT_BRANCH, repo_type: str = "model") -> bytes:
        """Return the content of ``path`` at ``revision``, bypassing HTTP. Raises ``KeyError`` if missing."""
        try:
            return self.state.get_repo(repo_type, repo_id).resolve(revision).files[path]
        except HubError as err:
            raise KeyError(f"{repo_id}@{revision}: {err.message}") from err
