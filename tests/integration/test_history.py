"""History (list, get, end) over gRPC with grpcio and over HTTP with httpx, with ownership."""

from __future__ import annotations

import uuid
from typing import Any

import grpc

from tests.integration.grpc_client import chat_stream
from tests.integration.http_client import AUTH, client
from tests.support import AUTH_TOKEN, grpcio_stubs, new_user
from tests.support import grpc_target as target


async def unary(app: object, method: str, token: str = AUTH_TOKEN, **fields: Any) -> Any:
    """Call a unary history RPC; returns the response or the grpc.aio.AioRpcError."""
    pb2, pb2_grpc = grpcio_stubs()
    request = getattr(pb2, f"{method}Request")(**fields)
    async with grpc.aio.insecure_channel(target(app)) as channel:
        call = getattr(pb2_grpc.ChatServiceStub(channel), method)
        try:
            return await call(request, metadata=(("authorization", token),), timeout=10)
        except grpc.aio.AioRpcError as exc:
            return exc


async def test_grpc_history_pages_messages_and_end(start_app) -> None:
    """ListChats pages newest first, GetChat returns messages in order, EndChat refuses more."""
    app = await start_app(TITLES_ENABLED="false")  # the title is the first message's beginning
    user = new_user()
    ids = []
    for text in ("first chat", "second chat", "third chat"):
        ids.append((await chat_stream(target(app), user, text)).chat_id)
    await chat_stream(target(app), user, "follow up", chat_id=ids[0])  # now the newest

    page = await unary(app, "ListChats", user_id=user, limit=2)
    assert [c.chat_id for c in page.chats] == [ids[0], ids[2]] and page.next_cursor
    assert page.chats[0].title == "first chat" and page.chats[0].message_count == 4
    assert page.chats[0].status == "active" and page.chats[0].created_at
    rest = await unary(app, "ListChats", user_id=user, limit=2, cursor=page.next_cursor)
    assert [c.chat_id for c in rest.chats] == [ids[1]] and rest.next_cursor == ""

    # One chat more: the last page now holds exactly `limit` chats, and says it is the last.
    ids.append((await chat_stream(target(app), user, "fourth chat")).chat_id)
    page = await unary(app, "ListChats", user_id=user, limit=2)
    assert [c.chat_id for c in page.chats] == [ids[3], ids[0]] and page.next_cursor
    rest = await unary(app, "ListChats", user_id=user, limit=2, cursor=page.next_cursor)
    assert [c.chat_id for c in rest.chats] == [ids[2], ids[1]] and rest.next_cursor == ""

    got = await unary(app, "GetChat", user_id=user, chat_id=ids[0])
    assert got.status == "active"
    # The system message is the chat's own: shown as such, not counted among its messages.
    system = got.system_message
    assert (system.seq, system.role, system.content) == (
        0, "system", "You are a helpful assistant.")
    assert [(m.seq, m.role, m.content) for m in got.messages] == [
        (1, "user", "first chat"), (2, "assistant", "You said: first chat"),
        (3, "user", "follow up"), (4, "assistant", "You said: follow up"),
    ]
    assert len(got.messages) == next(c for c in page.chats if c.chat_id == ids[0]).message_count
    answer = got.messages[1]
    assert answer.tokens > 0 and answer.completion == "complete"
    assert answer.finish_reason == "stop" and not answer.erased and answer.created_at

    ended = await unary(app, "EndChat", user_id=user, chat_id=ids[0])
    assert (ended.chat_id, ended.status) == (ids[0], "ended")
    refused = await chat_stream(target(app), user, "more?", chat_id=ids[0])
    assert refused.code == grpc.StatusCode.FAILED_PRECONDITION
    assert (await unary(app, "GetChat", user_id=user, chat_id=ids[0])).status == "ended"


async def test_grpc_history_ownership_and_errors(start_app) -> None:
    """Foreign and unknown chats are NOT_FOUND alike; bad input and bad tokens are refused."""
    app = await start_app()
    owner = new_user()
    chat_id = (await chat_stream(target(app), owner, "private")).chat_id
    stranger = new_user()
    for method in ("GetChat", "EndChat"):
        foreign = await unary(app, method, user_id=stranger, chat_id=chat_id)
        unknown = await unary(app, method, user_id=stranger, chat_id=str(uuid.uuid4()))
        assert foreign.code() == unknown.code() == grpc.StatusCode.NOT_FOUND
        assert foreign.details() == unknown.details()
    assert (await unary(app, "ListChats", user_id=stranger)).chats == []
    assert (await unary(app, "GetChat", user_id=owner, chat_id=chat_id)).status == "active"

    bad = [
        await unary(app, "GetChat", user_id=owner, chat_id="not-a-uuid"),
        await unary(app, "ListChats", user_id=owner, limit=500),
        await unary(app, "ListChats", user_id=owner, cursor="%%%"),
        await unary(app, "ListChats", user_id=""),
    ]
    assert [b.code() for b in bad] == [grpc.StatusCode.INVALID_ARGUMENT] * 4
    denied = await unary(app, "ListChats", token="wrong", user_id=owner)
    assert denied.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_http_history_routes(start_app) -> None:
    """The HTTP routes list, get and end chats with the same ownership rules and JSON errors."""
    app = await start_app(TITLES_ENABLED="false")  # the title is the first message's beginning
    user, stranger = new_user(), new_user()
    async with client(app) as http:
        ids = []
        for text in ("alpha", "beta", "gamma"):
            response = await http.post("/chat", headers=AUTH,
                                       json={"user_id": user, "user_message": text})
            ids.append(response.json()["chat_id"])
        first = (await http.get("/chats", params={"user_id": user, "limit": 2},
                                headers=AUTH)).json()
        assert [c["chat_id"] for c in first["chats"]] == [ids[2], ids[1]]
        assert first["chats"][0]["title"] == "gamma" and first["chats"][0]["message_count"] == 2
        second = (await http.get("/chats", headers=AUTH, params={
            "user_id": user, "limit": 2, "cursor": first["next_cursor"]})).json()
        assert [c["chat_id"] for c in second["chats"]] == [ids[0]]
        assert second["next_cursor"] is None

        chat = (await http.get(f"/chats/{ids[0]}", params={"user_id": user},
                               headers=AUTH)).json()
        assert chat["chat_id"] == ids[0] and chat["status"] == "active"
        assert chat["system_message"]["role"] == "system"
        assert chat["system_message"]["content"] == "You are a helpful assistant."
        assert [(m["role"], m["content"]) for m in chat["messages"]] == [
            ("user", "alpha"), ("assistant", "You said: alpha")]
        assert len(chat["messages"]) == second["chats"][0]["message_count"]  # they agree
        assert set(chat["messages"][1]) == {"seq", "role", "content", "tokens", "erased",
                                            "completion", "finish_reason", "created_at"}

        foreign = await http.get(f"/chats/{ids[0]}", params={"user_id": stranger},
                                 headers=AUTH)
        unknown = await http.get(f"/chats/{uuid.uuid4()}", params={"user_id": stranger},
                                 headers=AUTH)
        foreign_end = await http.post(f"/chats/{ids[0]}/end", json={"user_id": stranger},
                                      headers=AUTH)
        assert foreign.status_code == unknown.status_code == foreign_end.status_code == 404
        assert foreign.json() == unknown.json() == foreign_end.json()

        ended = await http.post(f"/chats/{ids[0]}/end", json={"user_id": user}, headers=AUTH)
        assert ended.json() == {"chat_id": ids[0], "status": "ended"}
        assert (await http.get(f"/chats/{ids[0]}", params={"user_id": user},
                               headers=AUTH)).json()["status"] == "ended"

        statuses = [
            (await http.get("/chats", params={"user_id": user})).status_code,
            (await http.get(f"/chats/{ids[1]}", params={"user_id": user},
                            headers={"authorization": "nope"})).status_code,
            (await http.get("/chats", params={"user_id": user, "limit": "x"},
                            headers=AUTH)).status_code,
            (await http.get("/chats", params={"user_id": user, "cursor": "%%"},
                            headers=AUTH)).status_code,
            (await http.get("/chats/zzz", params={"user_id": user}, headers=AUTH)).status_code,
            (await http.get("/chats", headers=AUTH)).status_code,
            (await http.post(f"/chats/{ids[1]}/end", content=b"[", headers=AUTH)).status_code,
        ]
        assert statuses == [401, 401, 400, 400, 400, 400, 400]


async def test_whatsapp_user_id_in_a_query(start_app) -> None:
    """The README's example works with `+` encoded; a bare `+` (read as a space) is a 400 that
    says how to write it, not an empty list."""
    app = await start_app()
    user = f"whatsapp:+5511{uuid.uuid4().int % 10**9:09d}"
    async with client(app) as http:
        made = await http.post("/chat", headers=AUTH, json={"user_id": user, "user_message": "oi"})
        assert made.status_code == 200, made.text
        number = user.removeprefix("whatsapp:+")
        encoded = await http.get(f"/chats?user_id=whatsapp%3A%2B{number}", headers=AUTH)
        assert [c["chat_id"] for c in encoded.json()["chats"]] == [made.json()["chat_id"]]
        bare = await http.get(f"/chats?user_id=whatsapp:+{number}", headers=AUTH)
        assert bare.status_code == 400
        assert "%2B" in bare.json()["error"]["message"]
    refused = await unary(app, "ListChats", user_id=f"whatsapp: {number}")
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
