"""`run_until_disconnect`: a client that leaves cancels the work; a cancellation from outside is not taken for one."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sidecar.coordinator.endpoint import run_until_disconnect


class Client:
    """An ASGI receive/send pair whose client leaves when told to."""

    def __init__(self) -> None:
        self.left = asyncio.Event()
        self.sent: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        await self.left.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)


async def test_a_client_that_leaves_cancels_the_work() -> None:
    client, cleaned_up = Client(), asyncio.Event()

    async def work(send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        try:
            client.left.set()
            await asyncio.Event().wait()  # a long upstream stream
        finally:
            await asyncio.sleep(0)  # cleanup may await (closing the upstream stream): it is not cut short
            cleaned_up.set()

    assert await run_until_disconnect(client.receive, client.send, work) is True
    assert cleaned_up.is_set()
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0  # the cancellation was taken back


async def test_leaving_after_the_whole_response_is_the_normal_end() -> None:
    client = Client()

    async def work(send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}", "more_body": False})
        client.left.set()
        await asyncio.sleep(0.01)  # the watcher sees the disconnect while the work still runs

    assert await run_until_disconnect(client.receive, client.send, work) is False
    assert client.sent[-1]["more_body"] is False


@pytest.mark.parametrize("client_leaves_too", [False, True])
async def test_a_cancellation_from_outside_propagates(client_leaves_too: bool) -> None:
    client, started = Client(), asyncio.Event()

    async def work(send: Any) -> None:
        started.set()
        await asyncio.Event().wait()

    call = asyncio.create_task(run_until_disconnect(client.receive, client.send, work))
    await started.wait()
    if client_leaves_too:
        client.left.set()
        await asyncio.sleep(0)  # the watcher runs and cancels the call
    call.cancel()  # the server shuts down
    with pytest.raises(asyncio.CancelledError):
        await call
