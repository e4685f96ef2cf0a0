"""Stand-in module (gemini): the Gemini API as the Gemini CLI (@google/genai SDK) calls it.

See standin.py for the contract every module keeps. Routes (any API version prefix,
`/v1beta` is what the CLI uses; the key arrives as `x-goog-api-key`):
  POST /v1beta/models/{model}:generateContent                 JSON GenerateContentResponse
  POST /v1beta/models/{model}:streamGenerateContent?alt=sse   SSE, `data: {GenerateContentResponse}`
  POST /v1beta/models/{model}:countTokens                     {"totalTokens": n}
  POST /v1beta/models/{model}:embedContent / :batchEmbedContents
  GET  /v1beta/models[/{model}]                               a model list / one model

Model turns come in two kinds:
- side requests (no `tools`): the CLI's model router (a JSON answer to `responseJsonSchema`,
  e.g. `complexity_score`), next-speaker and loop checks, summaries. A schema is answered with
  an object built from it (the first enum value, `next_speaker` = "user" so the run ends);
  anything else with a short text. Side requests report no usage.
- the agent's turns (with `tools`): mode ok answers the first with a `functionCall` of the file
  writing tool it declares (`write_file`: `file_path` = the workspace directory named in the
  request text joined with settings.file, `content`), and, once the contents carry a
  `functionResponse`, with settings.answer and `usageMetadata` {promptTokenCount =
  settings.input_tokens, candidatesTokenCount = settings.output_tokens, totalTokenCount}; only
  this final turn reports usage, so the CLI's totals are exactly the settings' figures.
Mode 401 refuses every request under /models with HTTP 401
`{"error":{"code":401,"message":"standin-401: invalid api key","status":"UNAUTHENTICATED"}}`.

Work-around: standin.py caches a request's body on the handler, which lives as long as the
keep-alive connection; handle() drops the cache so the next request on the connection is read.
"""

import json
import os
import re

_ROUTE = re.compile(r"^/(v1|v1beta|v1alpha)/models(/[^:?]+)?(:[A-Za-z]+)?(\?.*)?$")
_MODEL_METHODS = (":generateContent", ":streamGenerateContent")
_WORKSPACE = re.compile(r"Workspace Directories:\*\*\s*\n\s*-\s*(/[^\n]*)")
_FALLBACK_WORKSPACE = re.compile(r"current working directory[^/\n]*(/[^\s`'\"]+)", re.I)

ERROR_401 = {
    "error": {
        "code": 401,
        "message": "standin-401: invalid api key",
        "status": "UNAUTHENTICATED",
    }
}


def _route(req):
    path = req.path
    m = _ROUTE.match(path)
    if not m:
        return None
    return (m.group(2) or "").lstrip("/"), m.group(3) or ""


def matches(req):
    """Whether this module serves req (method and path)."""
    return _route(req) is not None


def is_model_request(req):
    """Whether req asks the model for a turn (the requests that mode 'silent' never answers)."""
    r = _route(req)
    return r is not None and r[1] in _MODEL_METHODS


def handle(req, settings):
    """Answers req per settings.mode ('ok' or '401')."""
    model, method = _route(req)
    if settings.mode == "401":
        req.send_json(401, ERROR_401)
        return
    if req.command == "GET":
        if model:
            req.send_json(200, _model_info(model))
        else:
            req.send_json(200, {"models": [_model_info("gemini-2.5-flash")]})
        return
    body = req.body_json()
    if method == ":countTokens":
        req.send_json(200, {"totalTokens": _rough_tokens(body)})
    elif method == ":embedContent":
        req.send_json(200, {"embedding": {"values": [0.0] * 8}})
    elif method == ":batchEmbedContents":
        n = len(body.get("requests") or [])
        req.send_json(200, {"embeddings": [{"values": [0.0] * 8} for _ in range(n)]})
    elif method in _MODEL_METHODS:
        response = _turn(body, settings, model)
        if method == ":streamGenerateContent":
            req.send_sse([(None, response)])
        else:
            req.send_json(200, response)
    else:
        req.send_json(404, {"error": {"code": 404, "message": f"stand-in: no method {method}",
                                      "status": "NOT_FOUND"}})


def _model_info(model):
    return {
        "name": f"models/{model}",
        "displayName": model,
        "inputTokenLimit": 1048576,
        "outputTokenLimit": 65536,
        "supportedGenerationMethods": ["generateContent", "countTokens"],
    }


def _rough_tokens(body):
    return max(1, len(json.dumps(body)) // 4)


def _turn(body, settings, model):
    """The GenerateContentResponse for one model request."""
    tools = body.get("tools") or []
    config = body.get("generationConfig") or {}
    schema = config.get("responseJsonSchema") or config.get("responseSchema")
    if not tools:
        if schema:
            text = json.dumps(_from_schema(schema, ""))
        else:
            text = "stand-in: ok"
        return _response([{"text": text}], model)
    contents = body.get("contents") or []
    if _has_function_response(contents):
        usage = {
            "promptTokenCount": settings.input_tokens,
            "candidatesTokenCount": settings.output_tokens,
            "totalTokenCount": settings.input_tokens + settings.output_tokens,
        }
        return _response([{"text": settings.answer}], model, usage)
    name, args = _write_call(tools, contents, settings)
    return _response([{"functionCall": {"name": name, "args": args}}], model)


def _response(parts, model, usage=None):
    out = {
        "candidates": [
            {"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}
        ],
        "modelVersion": model,
        "responseId": "standin-response",
    }
    if usage:
        out["usageMetadata"] = usage
    return out


def _has_function_response(contents):
    return any("functionResponse" in p for c in contents for p in (c.get("parts") or []))


def _declarations(tools):
    for t in tools:
        for f in t.get("functionDeclarations") or []:
            yield f


def _write_call(tools, contents, settings):
    """(tool name, args) of a call that writes settings.file with settings.content."""
    names = {f.get("name") for f in _declarations(tools)}
    cwd = _workspace(contents)
    path = os.path.join(cwd, settings.file) if cwd else settings.file
    if "write_file" in names or not names:
        return "write_file", {"file_path": path, "content": settings.content}
    shell = "run_shell_command"
    if shell in names:
        return shell, {"command": f"printf %s {json.dumps(settings.content)} > {json.dumps(path)}"}
    return "write_file", {"file_path": path, "content": settings.content}


def _workspace(contents):
    """The workspace directory the CLI names in its session context, or None."""
    for c in contents:
        for p in c.get("parts") or []:
            text = p.get("text") or ""
            m = _WORKSPACE.search(text) or _FALLBACK_WORKSPACE.search(text)
            if m:
                return m.group(1).strip()
    return None


def _from_schema(schema, name):
    """A value that fits a JSON schema (the subset the CLI's side requests use)."""
    if name == "next_speaker":
        return "user"
    enum = schema.get("enum")
    if enum:
        return enum[0]
    kind = str(schema.get("type", "object")).lower()
    if kind == "object":
        props = schema.get("properties") or {}
        return {k: _from_schema(v, k) for k, v in props.items()}
    if kind == "array":
        return []
    if kind in ("integer", "number"):
        lo = schema.get("minimum", 10)
        return lo if kind == "number" else int(lo)
    if kind == "boolean":
        return False
    return "stand-in"
