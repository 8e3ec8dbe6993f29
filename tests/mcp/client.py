"""Drive `costledger mcp` with the official MCP Python SDK (PyPI `mcp`).

Usage: client.py COMMAND [ARGS...] < calls.json
calls.json is a list of [tool, arguments]. Prints one JSON document: the server's info, its
tools and resources, the text of each resource, and the result of each call (as the SDK
parsed it, dumped with the wire's field names).
"""

import asyncio
import json
import os
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client


def dump(model):
    return model.model_dump(by_alias=True, mode="json", exclude_none=True)


async def main() -> None:
    calls = json.load(sys.stdin)
    params = StdioServerParameters(command=sys.argv[1], args=sys.argv[2:], env=dict(os.environ))
    async with stdio_client(params) as streams:
        read, write = streams[0], streams[1]
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            tools = await session.list_tools()
            resources = await session.list_resources()
            texts = {}
            for r in resources.resources:
                got = await session.read_resource(r.uri)
                texts[str(r.uri)] = [getattr(c, "text", None) for c in got.contents]
            results = []
            for name, arguments in calls:
                results.append(dump(await session.call_tool(name, arguments)))
    print(json.dumps({
        "initialize": dump(init),
        "tools": [dump(t) for t in tools.tools],
        "resources": [dump(r) for r in resources.resources],
        "resource_texts": texts,
        "results": results,
    }))


asyncio.run(main())
