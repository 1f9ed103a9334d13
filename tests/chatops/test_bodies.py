"""Bodies that arrive in pieces are read whole, within their budget (vigil.chatops.bodies).

A local aiohttp server streams its answer in chunks with pauses between them, as the API server does
with a long list; the component's Kubernetes client must read it to the end (reading only what had
arrived once turned a list of actions into "no actions", and the board then called them deleted).
"""

from __future__ import annotations

import asyncio
import json
import pathlib
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from vigil.adapters import kubeaccess
from vigil.chatops import bodies, kube
from vigil_sandbox.ports import free_port

ITEMS = [{"metadata": {"name": f"web-{i}", "namespace": "shop"}, "spec": {"note": "x" * 500}} for i in range(300)]


async def _slow_list(request: web.Request) -> web.StreamResponse:
    answer = web.StreamResponse(headers={"Content-Type": "application/json"})
    await answer.prepare(request)
    raw = json.dumps({"kind": "RemediationActionList", "items": ITEMS}).encode()
    for start in range(0, len(raw), 20_000):
        await answer.write(raw[start:start + 20_000])
        await asyncio.sleep(0.01)
    await answer.write_eof()
    return answer


async def _garbage(request: web.Request) -> web.Response:
    return web.Response(text="<html>proxy error</html>")


async def _echo_size(request: web.Request) -> web.Response:
    body = await bodies.read_bounded(request.content, 100_000)
    return web.json_response({"size": None if body is None else len(body)})


async def _serve() -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_get("/list", _slow_list)
    app.router.add_get("/garbage", _garbage)
    app.router.add_post("/echo", _echo_size)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


def _kubeconfig(path: pathlib.Path, server: str) -> pathlib.Path:
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    return path


async def _pieces(size: int) -> AsyncIterator[bytes]:
    for _ in range(size // 10_000):
        yield b"x" * 10_000
        await asyncio.sleep(0.005)


def test_a_list_streamed_in_pieces_is_read_whole_and_garbage_is_an_error(tmp_path: pathlib.Path) -> None:
    async def scenario() -> None:
        runner, url = await _serve()
        client = kube.KubeApi(kubeaccess.load(str(_kubeconfig(tmp_path / "kubeconfig", url)),
                                              in_cluster_first=False))
        try:
            listed = await client.request("GET", "/list")
            assert [i["metadata"]["name"] for i in listed["items"]] == [i["metadata"]["name"] for i in ITEMS]
            with pytest.raises(kube.KubeError) as refused:
                await client.request("GET", "/garbage")
            assert refused.value.reason == "BadAnswer" and "proxy error" in refused.value.message
            async with aiohttp.ClientSession() as session:
                for size, expected in ((60_000, 60_000), (100_000, 100_000), (150_000, None)):
                    async with session.post(f"{url}/echo", data=_pieces(size)) as answer:  # chunked, in pieces
                        assert (await answer.json())["size"] == expected
        finally:
            await client.close()
            await runner.cleanup()

    asyncio.run(scenario())
