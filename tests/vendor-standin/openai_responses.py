"""Stand-in module (openai_responses): the OpenAI Responses API as Codex CLI (`codex exec`) uses it.

See standin.py for the contract every module keeps. Routes (with or without the `/v1` prefix,
since codex appends `/responses` to whatever base URL it is given):
  GET  /v1/responses with `Upgrade: websocket`   codex's WebSocket transport attempt: refused
                                                 with WS_REFUSAL_STATUS, never upgraded, so
                                                 codex falls back to HTTPS
  POST /v1/responses                             one model turn; `stream: true` answers SSE
  GET  /v1/models                                a one-model list (model discovery)

A turn in mode `ok`: while the request's input carries no tool output, the model calls one tool
that writes settings.file with settings.content into the agent's cwd: codex's code-mode `exec`
tool (JavaScript calling `tools.exec_command`) when offered, else `exec_command`, else `shell`,
else the freeform `apply_patch`. Tools are looked for in the request's `tools` and in
`additional_tools` input items (codex 0.171 sends them there, inside namespaces). Once the input
holds a `function_call_output`/`custom_tool_call_output`, the model answers settings.answer with
usage settings.input_tokens/settings.output_tokens (no cached or reasoning tokens); the tool-call
turn reports zero usage, so a run's sum is exactly those figures. Mode `401`: every request (the
WebSocket attempt too) is refused with 401 and OpenAI's error body. The Outpost entry's own
provider never attempts the WebSocket (`supports_websockets` is false); codex's built-in `openai`
provider does, which is what the WebSocket route is for.
"""

import json
import shlex
import uuid

# Status answering the WebSocket upgrade. Measured with codex 0.171.0: 426 makes codex fall back
# to HTTPS at once (1 GET, run 2.7 s); 404 made it retry 5 times with backoff (7 GETs, 8.5 s).
WS_REFUSAL_STATUS = 426

PATHS = ("/responses", "/v1/responses")
MODELS_PATHS = ("/models", "/v1/models")

ERROR_401 = {
    "error": {
        "message": "standin-401: invalid api key",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_api_key",
    }
}


def _path(req):
    return req.path.split("?", 1)[0]


def matches(req):
    """Whether this module serves req (method and path)."""
    p = _path(req)
    if p in PATHS:
        return req.command in ("GET", "POST")
    return req.command == "GET" and p in MODELS_PATHS


def is_model_request(req):
    """Whether req asks the model for a turn (the requests that mode 'silent' never answers)."""
    return req.command == "POST" and _path(req) in PATHS


def handle(req, settings):
    """Answers req per settings.mode ('ok' or '401')."""
    if settings.mode == "401":
        req.send_json(401, ERROR_401)
        return
    p = _path(req)
    if req.command == "GET" and p in MODELS_PATHS:
        req.send_json(200, {"object": "list", "data": [{"id": "standin-model", "object": "model", "owned_by": "standin"}]})
        return
    if req.command == "GET":
        # The WebSocket attempt: refused without upgrading.
        req.send_json(
            WS_REFUSAL_STATUS,
            {"error": {"message": "stand-in: no WebSocket transport, use HTTPS", "type": "invalid_request_error"}},
        )
        return
    body = req.body_json()
    items = _output_items(body, settings)
    usage = _usage(settings) if _has_tool_output(body) else _usage(settings, first=True)
    rid = "resp_" + uuid.uuid4().hex[:24]
    response = {
        "id": rid,
        "object": "response",
        "status": "in_progress",
        "model": body.get("model") or "standin-model",
        "output": [],
    }
    if not body.get("stream"):
        response.update(status="completed", output=items, usage=usage)
        req.send_json(200, response)
        return
    events = [("response.created", {"type": "response.created", "sequence_number": 0, "response": response})]
    seq = 1
    for idx, item in enumerate(items):
        events.append(("response.output_item.added", {"type": "response.output_item.added", "sequence_number": seq, "output_index": idx, "item": item}))
        seq += 1
        if item["type"] == "message":
            text = item["content"][0]["text"]
            events.append(
                (
                    "response.output_text.delta",
                    {"type": "response.output_text.delta", "sequence_number": seq, "item_id": item["id"], "output_index": idx, "content_index": 0, "delta": text},
                )
            )
            seq += 1
        events.append(("response.output_item.done", {"type": "response.output_item.done", "sequence_number": seq, "output_index": idx, "item": item}))
        seq += 1
    done = dict(response, status="completed", output=items, usage=usage)
    events.append(("response.completed", {"type": "response.completed", "sequence_number": seq, "response": done}))
    req.send_sse(events)


def _usage(settings, first=False):
    """The turn's usage: the final turn reports settings' figures, the tool-call turn none."""
    inp, out = (0, 0) if first else (settings.input_tokens, settings.output_tokens)
    return {
        "input_tokens": inp,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": out,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": inp + out,
    }


def _has_tool_output(body):
    return any(
        isinstance(i, dict) and i.get("type") in ("function_call_output", "custom_tool_call_output")
        for i in body.get("input") or []
    )


def _tools(body):
    """Every tool offered: (name, type), namespaces flattened, from `tools` and `additional_tools`."""
    found = []

    def walk(tools):
        for t in tools or []:
            if not isinstance(t, dict):
                continue
            if t.get("type") == "namespace":
                walk(t.get("tools"))
            elif t.get("name"):
                found.append((t["name"], t.get("type")))

    walk(body.get("tools"))
    for item in body.get("input") or []:
        if isinstance(item, dict) and item.get("type") == "additional_tools":
            walk(item.get("tools"))
    return found


def _output_items(body, settings):
    if _has_tool_output(body):
        return [
            {
                "type": "message",
                "id": "msg_" + uuid.uuid4().hex[:24],
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": settings.answer, "annotations": []}],
            }
        ]
    return [_tool_call(body, settings)]


def _tool_call(body, settings):
    """The one tool call that writes settings.file, in the form of the best tool offered."""
    offered = dict(_tools(body))
    call_id = "call_" + uuid.uuid4().hex[:24]
    script = "printf %s {} > {}".format(shlex.quote(settings.content), shlex.quote(settings.file))
    if offered.get("exec") == "custom":
        js = "const r = await tools.exec_command({{cmd: {}}});\ntext(JSON.stringify(r));\n".format(json.dumps(script))
        return _custom("exec", js, call_id)
    if "exec_command" in offered:
        return _function("exec_command", {"cmd": script}, call_id)
    if "shell" in offered:
        return _function("shell", {"command": ["bash", "-lc", script]}, call_id)
    if "apply_patch" in offered:
        lines = "".join("+" + line + "\n" for line in settings.content.splitlines())
        patch = "*** Begin Patch\n*** Add File: {}\n{}*** End Patch\n".format(settings.file, lines)
        if offered["apply_patch"] == "custom":
            return _custom("apply_patch", patch, call_id)
        return _function("apply_patch", {"input": patch}, call_id)
    # No tool to write with: say so as the model would.
    return {
        "type": "message",
        "id": "msg_" + uuid.uuid4().hex[:24],
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": "stand-in: no tool offered to write the file", "annotations": []}],
    }


def _custom(name, text, call_id):
    return {"type": "custom_tool_call", "id": "ctc_" + call_id[5:], "status": "completed", "call_id": call_id, "name": name, "input": text}


def _function(name, args, call_id):
    return {"type": "function_call", "id": "fc_" + call_id[5:], "status": "completed", "call_id": call_id, "name": name, "arguments": json.dumps(args)}
