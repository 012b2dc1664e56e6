"""A small stdio MCP server for the relay's unit tests: memory-bank's tool names over a dict.

Not a stand-in for Docker or for the real servers (tests/integration/test_relay.py runs those):
it lets the relay's own logic (ids, scopes, refusals) be tested in milliseconds.
"""

import json
import sys

projects = {}
TOOLS = ["list_projects", "list_project_files", "memory_bank_read", "memory_bank_write", "memory_bank_update", "secret_tool"]


def answer(request):
    method, params = request["method"], request.get("params") or {}
    if method == "initialize":
        return {"protocolVersion": params["protocolVersion"], "capabilities": {"tools": {}},
                "serverInfo": {"name": "fake-memory-bank", "version": "0"}}
    if method == "tools/list":
        return {"tools": [{"name": name, "inputSchema": {"type": "object"}} for name in TOOLS]}
    if method == "tools/call":
        name, args = params["name"], params.get("arguments") or {}
        if name == "list_projects":
            text = json.dumps(sorted(projects))
        elif name == "list_project_files":
            text = json.dumps(sorted(projects.get(args["projectName"], {})))
        elif name == "memory_bank_write":
            projects.setdefault(args["projectName"], {})[args["fileName"]] = args["content"]
            text = f"File {args['fileName']} written to project {args['projectName']}"
        elif name == "memory_bank_read":
            text = projects.get(args["projectName"], {}).get(args["fileName"], "")
        else:
            text = "ok"
        return {"content": [{"type": "text", "text": text}]}
    raise KeyError(method)


for line in sys.stdin:
    message = json.loads(line)
    if "id" not in message:
        continue
    try:
        reply = {"jsonrpc": "2.0", "id": message["id"], "result": answer(message)}
    except KeyError as exc:
        reply = {"jsonrpc": "2.0", "id": message["id"], "error": {"code": -32601, "message": str(exc)}}
    sys.stdout.write(json.dumps(reply) + "\n")
    sys.stdout.flush()
