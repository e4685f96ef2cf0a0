"""Stand-in module (anthropic): the Anthropic Messages API as Claude Code calls it.

Routes (see standin.py for the contract every module keeps):
  POST /v1/messages[?beta=true]               a model turn: SSE when the body has "stream": true
                                              (message_start, content_block_start/delta/stop,
                                              message_delta with usage, message_stop), JSON
                                              otherwise
  POST /v1/messages/count_tokens[?beta=true]  {"input_tokens": N} (a rough estimate)
  GET  /v1/models[/ID]                        one model: the default Claude Code asks for
  any other request carrying `anthropic-version` (Claude Code's side calls; none were seen with
  print mode and nonessential traffic off): an empty JSON object, so nothing blocks on them

The main conversation is the request that offers the `Write` tool. Its first turn is one
`tool_use` of `Write` with `file_path` = <working directory>/settings.file (the working directory
is read from the request's system prompt or environment text) and `content` = settings.content;
once the last user message carries a `tool_result`, the answer is settings.answer as text with
usage input_tokens=settings.input_tokens, output_tokens=settings.output_tokens. Every other
model request (no `Write` tool: title/topic requests, quota probes, ...) gets a short plain text
answer; their usage and the tool-call turn's usage are zero, so the run's totals are exactly the
settings' figures.

Mode 401: every request here gets HTTP 401 with the Messages API error body
{"type":"error","error":{"type":"authentication_error","message":"standin-401: invalid api key"}}.
"""

import json
import re
import uuid

AUTH_ERROR = "standin-401: invalid api key"
DEFAULT_MODEL = "claude-sonnet-4-5"


def _path(req):
    return req.path.split("?", 1)[0]


def matches(req):
    """Whether this module serves req (method and path)."""
    p = _path(req)
    if p == "/v1/messages" or p.startswith("/v1/messages/"):
        return True
    return bool(req.headers.get("anthropic-version"))


def is_model_request(req):
    """Whether req asks the model for a turn (the requests that mode 'silent' never answers)."""
    return req.command == "POST" and _path(req) == "/v1/messages"


def handle(req, settings):
    """Answers req per settings.mode ('ok' or '401')."""
    if settings.mode == "401":
        req.send_json(
            401,
            {"type": "error", "error": {"type": "authentication_error", "message": AUTH_ERROR}},
            {"request-id": "req_standin_401"},
        )
        return
    p = _path(req)
    if p == "/v1/messages" and req.command == "POST":
        _message(req, settings)
    elif p == "/v1/messages/count_tokens":
        body = req.body_json()
        req.send_json(200, {"input_tokens": max(1, len(json.dumps(body)) // 4)})
    elif p == "/v1/models" or p.startswith("/v1/models/"):
        model = {
            "type": "model",
            "id": DEFAULT_MODEL,
            "display_name": "Stand-in",
            "created_at": "2026-01-01T00:00:00Z",
        }
        if p == "/v1/models":
            req.send_json(
                200,
                {"data": [model], "has_more": False, "first_id": model["id"], "last_id": model["id"]},
            )
        else:
            req.send_json(200, dict(model, id=p.rsplit("/", 1)[1]))
    else:
        req.send_json(200, {})




# -- the conversation -------------------------------------------------------------------------


def _text_of(content):
    """All text in a system prompt or message content (a string or a list of blocks)."""
    if isinstance(content, str):
        return content
    out = []
    if isinstance(content, list):
        for block in content:
            if isinstance(block, dict):
                if isinstance(block.get("text"), str):
                    out.append(block["text"])
                elif "content" in block:
                    out.append(_text_of(block["content"]))
            elif isinstance(block, str):
                out.append(block)
    return "\n".join(out)


def _write_tool(body):
    for tool in body.get("tools") or []:
        if isinstance(tool, dict) and tool.get("name") == "Write":
            return tool
    return None


def _working_dir(body):
    """The agent's working directory, from the system prompt or the messages' environment text."""
    texts = [_text_of(body.get("system"))]
    for m in body.get("messages") or []:
        if isinstance(m, dict):
            texts.append(_text_of(m.get("content")))
    pattern = re.compile(r"(?:Primary working directory|Working directory|cwd)\s*:\s*(/\S*)", re.I)
    for t in texts:
        found = pattern.search(t)
        if found:
            return found.group(1).rstrip(".,;)`'\"")
    return None


def _has_tool_result(body):
    msgs = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    if not msgs or msgs[-1].get("role") != "user":
        return False
    content = msgs[-1].get("content")
    return isinstance(content, list) and any(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in content
    )


def _message(req, settings):
    body = req.body_json()
    model = body.get("model") or DEFAULT_MODEL
    tool = _write_tool(body)
    zero = (0, 0)
    if tool is None:
        blocks, stop, usage = [{"type": "text", "text": "Stand-in side answer."}], "end_turn", zero
    elif _has_tool_result(body):
        blocks = [{"type": "text", "text": settings.answer}]
        stop, usage = "end_turn", (settings.input_tokens, settings.output_tokens)
    else:
        cwd = _working_dir(body) or "."
        path = cwd.rstrip("/") + "/" + settings.file
        # Write's input schema (2.1.332): {file_path: absolute path, content}, both required.
        blocks = [
            {
                "type": "tool_use",
                "id": "toolu_standin_" + uuid.uuid4().hex[:16],
                "name": "Write",
                "input": {"file_path": path, "content": settings.content},
            }
        ]
        stop, usage = "tool_use", zero
    msg_id = "msg_standin_" + uuid.uuid4().hex[:16]
    if body.get("stream"):
        req.send_sse(_events(msg_id, model, blocks, stop, usage))
    else:
        req.send_json(
            200,
            {
                "id": msg_id,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": blocks,
                "stop_reason": stop,
                "stop_sequence": None,
                "usage": _usage(*usage),
            },
        )


def _usage(input_tokens, output_tokens):
    return {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": output_tokens,
    }


def _events(msg_id, model, blocks, stop, usage):
    start_usage = _usage(usage[0], 0)
    ev = [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": msg_id,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": start_usage,
                },
            },
        )
    ]
    for i, block in enumerate(blocks):
        if block["type"] == "text":
            ev.append(
                (
                    "content_block_start",
                    {"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}},
                )
            )
            ev.append(
                (
                    "content_block_delta",
                    {"type": "content_block_delta", "index": i, "delta": {"type": "text_delta", "text": block["text"]}},
                )
            )
        else:
            start = dict(block, input={})
            ev.append(("content_block_start", {"type": "content_block_start", "index": i, "content_block": start}))
            ev.append(
                (
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": i,
                        "delta": {"type": "input_json_delta", "partial_json": json.dumps(block["input"])},
                    },
                )
            )
        ev.append(("content_block_stop", {"type": "content_block_stop", "index": i}))
    ev.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": _usage(usage[0], usage[1]),
            },
        )
    )
    ev.append(("message_stop", {"type": "message_stop"}))
    return ev
