"""Stand-in module (chat_completions): OpenAI-compatible Chat Completions, as DeepSeek (aider via
litellm, `DEEPSEEK_API_BASE`) and xAI (grok-cli via the `openai` npm SDK, `GROK_BASE_URL`) serve it.
See standin.py for the contract every module keeps.

Routes: `POST /chat/completions` and `POST /v1/chat/completions` (any prefix ending in
`/chat/completions`, since a base URL may carry `/v1` or `/beta`), `GET /models` and
`GET /v1/models`. Every route wants `Authorization: Bearer <key>`; without one it answers 401
`standin: no Authorization: Bearer key` (so a CLI that does not send its key is seen).

Mode `ok`, one conversation per request (stateless):
- A request with `tools` (grok): while no message has role `tool`, the answer is one `tool_calls`
  entry of the file-creating tool (`create_file`, else any tool with a path-like and a
  content-like string parameter) writing `settings.file` with `settings.content`; once a `tool`
  result is there, the final message `settings.answer`.
- A request without tools (aider's text edit formats): one message that makes aider create
  `settings.file` in the edit format its system prompt asks for (`diff`: a SEARCH/REPLACE block
  with an empty SEARCH; `whole`: the file name and the whole content in a fence), followed by
  `settings.answer`. Once an assistant turn already holds that edit (an aider reflection), only
  `settings.answer`.
Each answer carries `usage` {prompt_tokens, completion_tokens, total_tokens} (plus DeepSeek's
`prompt_cache_hit_tokens`/`prompt_cache_miss_tokens`) from `settings.input_tokens` /
`settings.output_tokens`. `stream: true` answers as SSE chunks (`data: {chunk}` ... `data:
[DONE]`), the usage in a last chunk with empty `choices` when `stream_options.include_usage`.

Mode `401`: HTTP 401 `{"error": {"message": "standin-401: invalid api key", "type":
"authentication_error", "code": "invalid_api_key"}}` on every route.
"""

import json
import time

UNAUTHORIZED = {
    "error": {
        "message": "standin-401: invalid api key",
        "type": "authentication_error",
        "code": "invalid_api_key",
    }
}
MODELS = ["grok-code-fast-1", "grok-4-latest", "deepseek-chat", "deepseek-reasoner"]


def _path(req):
    return req.path.split("?", 1)[0].rstrip("/")


def matches(req):
    """Whether this module serves req (method and path)."""
    p = _path(req)
    if req.command == "POST" and p.endswith("/chat/completions"):
        return True
    return req.command == "GET" and p in ("/models", "/v1/models")


def is_model_request(req):
    """Whether req asks the model for a turn (the requests that mode 'silent' never answers)."""
    return req.command == "POST" and _path(req).endswith("/chat/completions")


def _bearer(req):
    auth = req.headers.get("Authorization") or ""
    if auth.lower().startswith("bearer ") and auth[7:].strip():
        return auth[7:].strip()
    return None


def handle(req, settings):
    """Answers req per settings.mode ('ok' or '401')."""
    if settings.mode == "401":
        req.send_json(401, UNAUTHORIZED)
        return
    if _bearer(req) is None:
        req.send_json(
            401,
            {
                "error": {
                    "message": "standin: no Authorization: Bearer key",
                    "type": "authentication_error",
                    "code": "missing_api_key",
                }
            },
        )
        return
    if req.command == "GET":
        now = int(time.time())
        req.send_json(
            200,
            {
                "object": "list",
                "data": [{"id": m, "object": "model", "created": now, "owned_by": "standin"} for m in MODELS],
            },
        )
        return
    body = req.body_json()
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
        req.send_json(
            400,
            {"error": {"message": "standin: body needs messages", "type": "invalid_request_error"}},
        )
        return
    message, finish = _turn(body, settings)
    _answer(req, body, message, finish, settings)


# -- the conversation ---------------------------------------------------------------------------


def _text(content):
    """A message's content as text (a string or a list of text parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _turn(body, settings):
    """(assistant message, finish_reason) of the next turn."""
    messages = [m for m in body["messages"] if isinstance(m, dict)]
    tools = body.get("tools") or []
    if tools:
        if any(m.get("role") == "tool" for m in messages):
            return {"role": "assistant", "content": settings.answer}, "stop"
        call = _tool_call(tools, settings)
        if call is None:
            return {"role": "assistant", "content": "standin: no file-creating tool offered"}, "stop"
        return {"role": "assistant", "content": None, "tool_calls": [call]}, "tool_calls"
    done = any(
        m.get("role") == "assistant" and settings.file in _text(m.get("content")) and settings.content.strip() in _text(m.get("content"))
        for m in messages
    )
    if done:
        return {"role": "assistant", "content": settings.answer}, "stop"
    system = "\n".join(_text(m.get("content")) for m in messages if m.get("role") == "system")
    return {"role": "assistant", "content": _edit_text(system, settings)}, "stop"


def _edit_text(system, settings):
    """Aider's edit of a new file in the format its system prompt asks for, then the answer."""
    content = settings.content if settings.content.endswith("\n") else settings.content + "\n"
    if "SEARCH/REPLACE" in system:
        edit = f"{settings.file}\n```\n<<<<<<< SEARCH\n=======\n{content}>>>>>>> REPLACE\n```\n"
    else:  # `whole`: the file's path, then its whole content in a fence
        edit = f"{settings.file}\n```\n{content}```\n"
    return f"{edit}\n{settings.answer}"


PATH_NAMES = ("path", "file_path", "filepath", "filename", "file", "absolute_path")
CONTENT_NAMES = ("content", "contents", "text", "file_text", "data")


def _tool_call(tools, settings):
    """A call of the offered tool that creates a file (None when none fits)."""
    candidates = []
    for t in tools:
        fn = t.get("function") if isinstance(t, dict) else None
        if not isinstance(fn, dict) or not fn.get("name"):
            continue
        props = (fn.get("parameters") or {}).get("properties") or {}
        path = next((n for n in PATH_NAMES if n in props), None)
        text = next((n for n in CONTENT_NAMES if n in props), None)
        if path and text:
            candidates.append((fn["name"] != "create_file", fn["name"], path, text))
    if not candidates:
        return None
    _, name, path, text = sorted(candidates)[0]
    return {
        "id": "call_standin_1",
        "type": "function",
        "function": {"name": name, "arguments": json.dumps({path: settings.file, text: settings.content})},
    }


# -- the answer on the wire ---------------------------------------------------------------------


def _usage(settings):
    return {
        "prompt_tokens": settings.input_tokens,
        "completion_tokens": settings.output_tokens,
        "total_tokens": settings.input_tokens + settings.output_tokens,
        "prompt_cache_hit_tokens": 0,
        "prompt_cache_miss_tokens": settings.input_tokens,
    }


def _answer(req, body, message, finish, settings):
    model = body.get("model") or "standin"
    rid = f"chatcmpl-standin-{int(time.time() * 1000)}"
    created = int(time.time())
    if not body.get("stream"):
        req.send_json(
            200,
            {
                "id": rid,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
                "usage": _usage(settings),
            },
        )
        return

    def chunk(delta, finish_reason=None, **extra):
        c = {
            "id": rid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
        }
        c.update(extra)
        return (None, c)

    events = [chunk({"role": "assistant", "content": ""})]
    if message.get("tool_calls"):
        for i, call in enumerate(message["tool_calls"]):
            events.append(
                chunk(
                    {
                        "tool_calls": [
                            {
                                "index": i,
                                "id": call["id"],
                                "type": "function",
                                "function": {"name": call["function"]["name"], "arguments": ""},
                            }
                        ]
                    }
                )
            )
            events.append(chunk({"tool_calls": [{"index": i, "function": {"arguments": call["function"]["arguments"]}}]}))
    else:
        text = message.get("content") or ""
        for i in range(0, len(text), 40):
            events.append(chunk({"content": text[i : i + 40]}))
    events.append(chunk({}, finish))
    if (body.get("stream_options") or {}).get("include_usage"):
        events.append((None, {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model, "choices": [], "usage": _usage(settings)}))
    events.append((None, "[DONE]"))
    req.send_sse(events)
