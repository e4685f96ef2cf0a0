"""Drives Outpost's MCP server with the official MCP Python SDK (PyPI `mcp` 2.x), over stdio
(`outpost mcp`) or streamable HTTP (`/mcp`), and prints one JSON object of what it saw on stdout
for `tests/tests/mcp_e2e.rs` to check.

    client.py stdio OUTPOST_BIN URL KEY
    client.py http  MCP_URL KEY

Scenario: tools/list; fleet_status; dispatch of the fake agent with wait (progress notifications
counted); dispatch of a sleeping run, get_run, list_runs, cancel_run; promote of a run without a
repository; get_run until the cancelled run has ended; get_run of an unknown run; dispatch to an unknown agent.
"""

import asyncio
import json
import sys
from contextlib import AsyncExitStack
from typing import Any

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client


def summary(result: Any) -> dict[str, Any]:
    """A tool result as plain JSON: isError, the text blocks and the structured content."""
    texts = [block.text for block in result.content if getattr(block, "type", None) == "text"]
    return {
        "is_error": bool(result.is_error),
        "text": texts,
        "structured": result.structured_content,
    }


async def scenario(session: ClientSession) -> dict[str, Any]:
    out: dict[str, Any] = {}
    init = await session.initialize()
    out["server_name"] = init.server_info.name
    tools = await session.list_tools()
    out["tools"] = sorted(tool.name for tool in tools.tools)
    out["dispatch_schema"] = next(t.input_schema for t in tools.tools if t.name == "dispatch")

    out["fleet_status"] = summary(await session.call_tool("fleet_status", {}))

    progress: list[dict[str, Any]] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append({"progress": value, "message": message})

    waited = await session.call_tool(
        "dispatch",
        {"agent": "fake", "task": "say hello from python; sleep 2; say done", "wait": True},
        progress_callback=on_progress,
    )
    out["dispatch_wait"] = summary(waited)
    out["progress"] = progress

    sleeping = summary(await session.call_tool("dispatch", {"agent": "fake", "task": "say sleeping; sleep 60"}))
    out["dispatch"] = sleeping
    run_id = (sleeping["structured"] or {}).get("id")
    if run_id:
        out["get_run"] = summary(await session.call_tool("get_run", {"run_id": run_id}))
        out["list_runs"] = summary(await session.call_tool("list_runs", {"agent": "fake", "limit": 50}))
        out["cancel_run"] = summary(await session.call_tool("cancel_run", {"run_id": run_id}))
        # A running run stops at the worker's next heartbeat: follow it until it has ended.
        for _ in range(100):
            final = summary(await session.call_tool("get_run", {"run_id": run_id}))
            if (final["structured"] or {}).get("status") not in ("queued", "running"):
                break
            await asyncio.sleep(0.2)
        out["after_cancel"] = final
        out["promote"] = summary(await session.call_tool("promote", {"run_id": run_id}))
    out["get_run_unknown"] = summary(
        await session.call_tool("get_run", {"run_id": "run_00000000000000000000000000"})
    )
    out["dispatch_unknown_agent"] = summary(await session.call_tool("dispatch", {"agent": "nope", "task": "x"}))
    return out


async def main(argv: list[str]) -> dict[str, Any]:
    async with AsyncExitStack() as stack:
        if argv[1] == "stdio":
            _, _, binary, url, key = argv
            params = StdioServerParameters(
                command=binary,
                args=["mcp"],
                env={"OUTPOST_URL": url, "OUTPOST_API_KEY": key},
            )
            read, write = await stack.enter_async_context(stdio_client(params))
        elif argv[1] == "http":
            _, _, url, key = argv
            http = await stack.enter_async_context(create_mcp_http_client(headers={"Authorization": f"Bearer {key}"}))
            streams = await stack.enter_async_context(streamable_http_client(url, http_client=http))
            read, write = streams[0], streams[1]
        else:
            raise SystemExit(f"unknown transport {argv[1]!r}")
        session = await stack.enter_async_context(ClientSession(read, write))
        return await scenario(session)


if __name__ == "__main__":
    if len(sys.argv) < 4:
        raise SystemExit(__doc__)
    print(json.dumps(asyncio.run(main(sys.argv))))
