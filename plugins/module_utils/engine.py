# -*- coding: utf-8 -*-
# Copyright: HAL-9000 DinD maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A small Docker Engine API client on the standard library, for claudy's warm claim.

Hand-written because importing the docker SDK alone (requests, urllib3) takes about 0.24 s, most of
claudy's 0.3 s budget for a warm claim (issue 16), while a claim is a handful of calls on the local
socket that take 20-40 ms. ``EngineClient`` speaks HTTP over the engine's unix socket with http.client.

The interface the claim code uses (``pool.claim``, ``worker_state.put_worker`` up to the claim) is the
docker SDK's own: ``client.api.<method>`` with docker.APIClient's names, arguments and return values,
so the SDK's DockerClient and this client both satisfy it and there is one claim implementation.
``EngineAPI`` makes these calls itself: inspect_container, inspect_image, containers, rename,
exec_create, exec_start, exec_inspect, remove_container, remove_volume, and the three SDK helpers
``workers.update_limits`` uses (_url, _post_json, _raise_for_status). Any other call (a cold spawn,
logs, ...) is handed to a docker SDK client made on first use, so the SDK is imported only then.

Code catching engine errors names ``ERRORS.NotFound`` or ``ERRORS.APIError``: this client's errors,
and the SDK's once the SDK is imported (nothing can raise them before).
Pure: standard library only.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import struct
import sys
import urllib.parse

from ansible_collections.hal9000.dind.plugins.module_utils.errors import Hal9000Error

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
DEFAULT_TIMEOUT = 60


class EngineError(Exception):
    """The engine answered with an error status (the SDK's docker.errors.APIError)."""

    def __init__(self, status_code, explanation, method="", path=""):
        super().__init__(f"{status_code} {method} {path}: {explanation}")
        self.status_code = status_code
        self.explanation = explanation


class EngineNotFound(EngineError):
    """404: no such container, image, exec or volume (the SDK's docker.errors.NotFound)."""


class EngineUnreachable(Exception):
    """The socket failed: no engine, a timeout, a dropped connection (the SDK raises requests' errors)."""


class _Errors:
    """The error classes of both clients, looked up when an except clause is reached."""

    @staticmethod
    def _with_sdk(ours, name):
        sdk = sys.modules.get("docker.errors")
        return (ours, getattr(sdk, name)) if sdk else (ours,)

    @property
    def NotFound(self):  # noqa: N802 (named like the SDK's class it stands for)
        return self._with_sdk(EngineNotFound, "NotFound")

    @property
    def APIError(self):  # noqa: N802
        return self._with_sdk(EngineError, "APIError")

    @property
    def failures(self):
        """Every error of talking to the engine: API errors and transport errors of either client."""
        found = [EngineError, EngineUnreachable]
        if "docker.errors" in sys.modules:
            found.append(sys.modules["docker.errors"].DockerException)
        if "requests.exceptions" in sys.modules:
            found.append(sys.modules["requests.exceptions"].RequestException)
        return tuple(found)


ERRORS = _Errors()


def resolve_docker_host(docker_host=None):
    """The explicit value, else DOCKER_HOST, else the local socket."""
    return docker_host or os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST


def unreachable_message(docker_host):
    return (
        f"Cannot connect to the Docker daemon at {docker_host}: is it running, "
        "and is the socket mounted?"
    )


def api_error_message(exc):
    """One line for an API or transport error of either client, without a traceback."""
    if isinstance(exc, ERRORS.APIError):
        explanation = getattr(exc, "explanation", None) or str(exc)
        if isinstance(explanation, bytes):
            explanation = explanation.decode("utf-8", "replace")
        return f"Docker API error: {explanation}".strip()
    return f"Error talking to the Docker daemon: {exc}".splitlines()[0]


def inspect_container(client, name):
    """The inspected container, or None when there is none by that name or ID."""
    try:
        return client.api.inspect_container(name)
    except ERRORS.NotFound:
        return None


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def _quote(value):
    if isinstance(value, dict):  # as the SDK's check_resource: an exec_create/create_container answer names its Id
        value = value.get("Id") or value.get("ID")
    return urllib.parse.quote(str(value), safe="/:")  # as the SDK quotes


def _filters(filters):
    """As the SDK's convert_filters: {key: value or [values]} -> {key: [values]}, a boolean as "true"/"false"."""
    converted = {}
    for key, value in filters.items():
        if isinstance(value, bool):
            value = "true" if value else "false"
        converted[key] = [str(item) for item in (value if isinstance(value, list) else [value])]
    return converted


def _demux(data):
    """The payloads of a non-TTY exec's multiplexed stream (8-byte frame headers), stdout and stderr in order."""
    out, offset = bytearray(), 0
    while offset + 8 <= len(data):
        size = struct.unpack(">I", data[offset + 4:offset + 8])[0]
        out += data[offset + 8:offset + 8 + size]
        offset += 8 + size
    return bytes(out)


class _Response:
    """What _post_json returns: enough of a requests.Response for _raise_for_status."""

    def __init__(self, status, body, method, path):
        self.status_code, self.content, self.method, self.path = status, body, method, path


class EngineAPI:
    """docker.APIClient's calls a claim makes, over the socket; any other attribute is the SDK's."""

    def __init__(self, path, timeout, sdk):
        self._path, self._timeout, self._sdk = path, timeout, sdk
        self._connection = None

    def __getattr__(self, name):
        if name.startswith("__"):  # copy, pickle and friends probing: no reason to load the SDK
            raise AttributeError(name)
        return getattr(self._sdk().api, name)

    def _exchange(self, method, path, body=None, keep=True):
        """(status, content type, body bytes) of one request, on the kept-alive connection unless ``keep`` is False
        (a hijacked stream ends with the connection)."""
        headers = {"Host": "docker"}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        reused = keep and self._connection is not None
        connection = self._connection if reused else _UnixConnection(self._path, self._timeout)
        self._connection = None
        try:
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
            data = response.read()
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
            connection.close()
            if not reused:
                raise EngineUnreachable(f"{method} {path}: {exc}") from exc
            return self._exchange(method, path, body, keep)  # the engine closed the idle connection: once more on a new one
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            raise EngineUnreachable(f"{method} {path}: {exc}") from exc
        if keep and not response.will_close:
            self._connection = connection
        else:
            connection.close()
        return response.status, response.getheader("Content-Type", ""), data

    def _call(self, method, path, body=None, params=None, keep=True):
        if params:
            path += "?" + urllib.parse.urlencode(params)
        status, content_type, data = self._exchange(method, path, body, keep)
        self._raise_for_status(_Response(status, data, method, path))
        return json.loads(data) if content_type.startswith("application/json") and data else data

    def _raise_for_status(self, response):
        if response.status_code < 400:
            return
        try:
            explanation = json.loads(response.content).get("message", "")
        except (ValueError, AttributeError):
            explanation = response.content.decode("utf-8", "replace").strip()
        kind = EngineNotFound if response.status_code == 404 else EngineError
        raise kind(response.status_code, explanation, response.method, response.path.split("?")[0])

    def _url(self, pathfmt, *args):
        return pathfmt.format(*[_quote(arg) for arg in args])

    def _post_json(self, url, data):
        data = {key: value for key, value in data.items() if value is not None}  # as the SDK's _post_json
        status, _content_type, body = self._exchange("POST", url, data)
        return _Response(status, body, "POST", url)

    def ping(self):
        return self._call("GET", "/_ping") == b"OK"

    def inspect_container(self, container):
        return self._call("GET", self._url("/containers/{0}/json", container))

    def inspect_image(self, image):
        return self._call("GET", self._url("/images/{0}/json", image))

    def containers(self, all=False, filters=None):  # pylint: disable=redefined-builtin
        params = {"all": "1" if all else "0"}
        if filters:
            params["filters"] = json.dumps(_filters(filters))
        return self._call("GET", "/containers/json", params=params)

    def rename(self, container, name):
        self._call("POST", self._url("/containers/{0}/rename", container), params={"name": name})

    def remove_container(self, container, v=False, link=False, force=False):
        self._call("DELETE", self._url("/containers/{0}", container),
                   params={"v": str(bool(v)).lower(), "link": str(bool(link)).lower(), "force": str(bool(force)).lower()})

    def remove_volume(self, name, force=False):
        self._call("DELETE", self._url("/volumes/{0}", name), params={"force": "true"} if force else None)

    def exec_create(self, container, cmd, stdout=True, stderr=True, stdin=False, tty=False, privileged=False,
                    user="", environment=None, workdir=None, detach_keys=None):
        if isinstance(cmd, str):
            return self._sdk().api.exec_create(container, cmd, stdout, stderr, stdin, tty, privileged, user,
                                               environment, workdir, detach_keys)
        body = {"AttachStdin": stdin, "AttachStdout": stdout, "AttachStderr": stderr, "Tty": tty, "Cmd": cmd,
                "Privileged": privileged, "User": user, "Env": environment, "WorkingDir": workdir}
        if detach_keys:
            body["DetachKeys"] = detach_keys
        return self._call("POST", self._url("/containers/{0}/exec", container), body)

    def exec_start(self, exec_id, detach=False, tty=False, stream=False, socket=False, demux=False):  # pylint: disable=redefined-outer-name
        if detach or tty or stream or socket or demux:  # a stream or a socket: the SDK's
            return self._sdk().api.exec_start(exec_id, detach, tty, stream, socket, demux)
        # Without an Upgrade header the engine answers 200 and sends the raw stream until it closes the connection.
        return _demux(self._call("POST", self._url("/exec/{0}/start", exec_id), {"Detach": False, "Tty": False}, keep=False))

    def exec_inspect(self, exec_id):
        return self._call("GET", self._url("/exec/{0}/json", exec_id))

    def close(self):
        if self._connection:
            self._connection.close()
            self._connection = None


class EngineClient:
    """Stands for a docker.DockerClient: ``.api`` is an ``EngineAPI``; anything else is the SDK client's."""

    def __init__(self, docker_host=None, timeout=DEFAULT_TIMEOUT):
        self.docker_host = resolve_docker_host(docker_host)
        self.timeout = timeout
        self.sdk_client = None
        self.api = EngineAPI(local_socket(self.docker_host), timeout, self._sdk)

    def _sdk(self):
        """The docker SDK client, made (and the SDK imported) on first use."""
        if self.sdk_client is None:
            from ansible_collections.hal9000.dind.plugins.module_utils.docker_api import connect  # pylint: disable=import-outside-toplevel

            self.sdk_client = connect(self.docker_host, self.timeout)
        return self.sdk_client

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self._sdk(), name)

    def ping(self):
        return self.api.ping()

    def close(self):
        self.api.close()
        if self.sdk_client is not None:
            self.sdk_client.close()


def local_socket(docker_host):
    """The socket path of a unix:// engine address, or None (tcp://, ssh://: only the SDK speaks those)."""
    if docker_host.startswith("unix://"):
        return docker_host[len("unix://"):]
    return docker_host if docker_host.startswith("/") else None


def connect_light(docker_host=None, timeout=DEFAULT_TIMEOUT):
    """A pinged ``EngineClient`` for a local engine, or None when the address is not a unix socket;
    Hal9000Error with one line when no engine answers there."""
    host = resolve_docker_host(docker_host)
    if local_socket(host) is None:
        return None
    client = EngineClient(host, timeout)
    try:
        client.ping()
    except (EngineUnreachable, EngineError):
        client.close()
        raise Hal9000Error(unreachable_message(host)) from None
    return client
