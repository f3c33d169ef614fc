"""A fake OpenAI Chat Completions endpoint speaking its wire formats exactly.

Streamed requests (`"stream": true`, chat turns) are answered "You said: <the last user
message>" one word per event; tests queue `Script`s to shape them: timing, status errors,
broken streams, finish reasons. Non-streamed requests get one `chat.completion` JSON object,
as OpenAI documents it; the fake tells a summary call from a title call by its request (the
instructions in its system message, as OpenAI would see them) and records each in
`summaries` / `titles`. Their answers are shaped by `WholeScript`s queued per kind.
Streamed user messages with image parts echo their text parts, then " [N image(s)]"; image
content parts are checked like OpenAI checks them (shape, a data: URL that decodes, a vision
model).

`POST /v1/audio/transcriptions` checks the multipart form like OpenAI (a `file` part whose
name's extension is a supported format, a known `model`, at most 25 MB) and answers
`{"text": ...}` with usage: tokens for the gpt-4o transcribe models, seconds for whisper-1.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import time
from collections import deque
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

from tests.fakes.http11 import LoopbackFake, Reply, Request, drop, write_chunk

API_KEY = "sk-test-fake-openai-key-0123456789"
MODELS = ("gpt-4o-mini", "gpt-4o", "gpt-4", "gpt-3.5-turbo")


@dataclass
class Script:
    pieces: list[str] | None = None  # None: echo the last user message
    status: int = 200
    error_code: str = "server_error"
    retry_after: str | None = None
    first_delay: float = 0.0
    gap: float = 0.0
    finish_reason: str = "stop"
    usage: bool = True
    cut_after: int | None = None  # close the connection after this many content events
    done: bool = True
    raw_before: list[str] = field(default_factory=list)  # extra lines before the content
    error_after: int | None = None  # an error object inside the stream after N events
    burst: int = 1  # content events written together in one chunk
    # Hostile modes (the wire format stays OpenAI's otherwise):
    endless: bool = False  # repeat `pieces` without end, as fast as the client reads
    giant_line: int = 0  # after the pieces, one data line this long that never ends
    usage_counts: tuple[int, int] | None = None  # (prompt, completion) claimed in usage
    content_encoding: str | None = None  # claimed in the headers; the body stays plain
    empty: bool = False  # a 200 whose event stream holds no event at all
    error_text: str | None = None  # the error's message, e.g. one that echoes the prompt
    after_done: bytes = b""  # written after `[DONE]`, in a chunk of its own
    hold_after_done: float = 0.0  # seconds between `[DONE]` and the end of the body


TRANSCRIBE_MODELS = frozenset({"whisper-1", "gpt-4o-mini-transcribe", "gpt-4o-transcribe"})
AUDIO_FORMATS = frozenset({"flac", "mp3", "mp4", "mpeg", "mpga", "m4a", "ogg", "wav", "webm"})
VISION_PREFIXES = ("gpt-4o", "gpt-4.1", "gpt-4-turbo", "o1", "o3", "o4-mini")
DATA_URL = re.compile(r"data:(image/(?:jpeg|png|webp|gif));base64,([A-Za-z0-9+/=]+)")


@dataclass
class Heard:
    """One transcription request as received."""

    model: str
    filename: str
    content_type: str
    audio: bytes
    fields: dict[str, str]


@dataclass
class WholeScript:
    """The answer to one non-streamed request."""

    text: str | None = None  # None: the default summary or title for the request
    status: int = 200
    delay: float = 0.0
    finish_reason: str = "stop"
    null_content: bool = False


@dataclass
class Seen:
    headers: dict[str, str]
    body: dict[str, Any]
    at: float
    finished: bool = False
    finished_at: float | None = None
    closed_early_at: float | None = None
    kind: str = "chat"  # "chat" (streamed turn), "summary", "title", or "other"

    @property
    def transcript(self) -> str:
        """The last user message of the request (a summary call's previous summary and
        transcript)."""
        return next(m["content"] for m in reversed(self.body["messages"]) if m["role"] == "user")


TOPIC = re.compile(r"topic-\d+")


def kind_of(body: dict[str, Any]) -> str:
    """What a request is, judged by what OpenAI receives: streamed or not, and the
    instructions of its first (system) message."""
    if body.get("stream") is True:
        return "chat"
    first = body["messages"][0]
    instructions = first["content"] if first["role"] == "system" else ""
    if "running summary" in instructions:
        return "summary"
    if "title for this conversation" in instructions:
        return "title"
    return "other"


def default_whole_answer(kind: str, seen: Seen) -> str:
    """A summary lists every `topic-N` word it was given, in order (so folding shows);
    a title is the first words of the question, quoted, as models like to."""
    text = seen.transcript
    if kind == "summary":
        topics = list(dict.fromkeys(TOPIC.findall(text)))
        return "Summary: " + (" ".join(topics) if topics else f"{len(text.split())} words")
    if kind == "title":
        question = text.split("\n\n", 1)[0].removeprefix("User: ")
        return '"' + " ".join(question.split()[:4]) + '"'
    return "ok"


def _chunk(cid: str, model: str, delta: dict[str, Any], finish: str | None = None) -> bytes:
    obj = {
        "id": cid, "object": "chat.completion.chunk", "created": int(time.time()),
        "model": model, "system_fingerprint": "fp_fake",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        "usage": None,
    }
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


class FakeOpenAI(LoopbackFake):
    def __init__(self) -> None:
        super().__init__()
        self.scripts: deque[Script] = deque()
        self.models = list(MODELS)
        self.models_status = 200
        self.requests: list[Seen] = []  # streamed chat turns
        self.whole_scripts: dict[str, deque[WholeScript]] = {}
        self.whole_requests: list[Seen] = []  # non-streamed: summaries, titles
        self.transcriptions: list[Heard] = []
        self.transcripts: deque[str | int] = deque()  # next texts, or an HTTP status to fail

    @property
    def summaries(self) -> list[Seen]:
        return [seen for seen in self.whole_requests if seen.kind == "summary"]

    @property
    def titles(self) -> list[Seen]:
        return [seen for seen in self.whole_requests if seen.kind == "title"]

    def queue_whole(self, kind: str, *scripts: WholeScript) -> None:
        """Shape the next non-streamed answers of one kind ("summary" or "title")."""
        self.whole_scripts.setdefault(kind, deque()).extend(scripts)

    @property
    def base_url(self) -> str:
        return self.origin + "/v1"

    def queue(self, *scripts: Script) -> None:
        self.scripts.extend(scripts)

    def reset(self) -> None:
        self.scripts.clear()
        self.requests.clear()
        self.whole_scripts.clear()
        self.whole_requests.clear()
        self.transcriptions.clear()
        self.transcripts.clear()
        self.models = list(MODELS)
        self.models_status = 200

    def _models(self, request: Request) -> Reply:
        """`GET /models`: the list in `models`, or `models_status` when that is not 200."""
        if request.headers.get("authorization") != f"Bearer {API_KEY}":
            return _error(401, "invalid_api_key", "Incorrect API key provided.")
        if self.models_status != 200:
            return _error(self.models_status, "not_found", "Fake failure")
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in self.models]
        return Reply(200, {"content-type": "application/json"},
                     json.dumps({"object": "list", "data": data}).encode())

    @property
    def calls(self) -> int:
        """Every request that reached the API: turns, summaries, titles, transcriptions."""
        return len(self.requests) + len(self.whole_requests) + len(self.transcriptions)

    async def _handle(self, request: Request) -> Reply:
        if request.method == "GET" and request.path == "/v1/models":
            return self._models(request)
        if request.method == "POST" and request.path == "/v1/audio/transcriptions":
            return self._transcribe(request)
        if request.method != "POST" or request.path != "/v1/chat/completions":
            return _error(404, "not_found", "Unknown endpoint")
        body = json.loads(request.body)
        kind = kind_of(body)
        if kind != "chat":
            return await self._whole(request, body, kind)
        script = self.scripts.popleft() if self.scripts else Script()
        if request.headers.get("authorization") != f"Bearer {API_KEY}":
            return _unauthorized(request)
        seen = Seen(request.headers, body, time.monotonic())
        self.requests.append(seen)
        problem = _image_problem(body)
        if problem is not None:
            return _error(400, "invalid_image", problem)
        if script.status != 200:
            seen.finished, seen.finished_at = True, time.monotonic()  # a whole reply, at once
            headers = {"retry-after": script.retry_after} if script.retry_after else {}
            text = script.error_text or "Fake failure"
            return _error(script.status, script.error_code, text, headers)
        pieces = script.pieces
        if pieces is None:
            last = next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")
            words = _text_of(last).split(" ")
            pieces = ["You said:"] + [" " + w for w in words]
        headers = {"content-type": "text/event-stream"}
        if script.content_encoding:
            headers["content-encoding"] = script.content_encoding
        return Reply(
            200, headers, stream=lambda w: self._stream(
                w, script, pieces, body["model"], seen
            ),
        )

    async def _whole(self, request: Request, body: dict[str, Any], kind: str) -> Reply:
        """A non-streamed request: one JSON object, after the script's delay."""
        queue = self.whole_scripts.get(kind)
        script = queue.popleft() if queue else WholeScript()
        if request.headers.get("authorization") != f"Bearer {API_KEY}":
            return _unauthorized(request)
        seen = Seen(request.headers, body, time.monotonic(), kind=kind)
        self.whole_requests.append(seen)
        await asyncio.sleep(script.delay)
        seen.finished, seen.finished_at = True, time.monotonic()
        if script.status != 200:
            return _error(script.status, "server_error", "Fake failure")
        text = None if script.null_content else (
            script.text if script.text is not None else default_whole_answer(kind, seen))
        prompt = sum(len(m["content"].split()) for m in body["messages"])
        return Reply(200, {"content-type": "application/json"},
                     _completion(body["model"], text, script.finish_reason, prompt))

    async def _stream(
        self, writer: asyncio.StreamWriter, s: Script, pieces: list[str], model: str, seen: Seen
    ) -> None:
        cid = "chatcmpl-fake"
        try:
            await asyncio.sleep(s.first_delay)
            if s.empty:
                await write_chunk(writer, b"")
                seen.finished, seen.finished_at = True, time.monotonic()
                return
            for line in s.raw_before:
                await write_chunk(writer, line.encode())
            await write_chunk(writer, _chunk(cid, model, {"role": "assistant", "content": ""}))
            if s.endless:
                await _endless(writer, cid, model, pieces, s.burst)
            for i, piece in enumerate(pieces):
                if s.cut_after is not None and i == s.cut_after:
                    raise drop()
                if s.error_after is not None and i == s.error_after:
                    text = s.error_text or "The server had an error"
                    err = {"error": {"message": text, "type": "server_error",
                                     "param": None, "code": None}}
                    await write_chunk(writer, b"data: " + json.dumps(err).encode() + b"\n\n")
                    await write_chunk(writer, b"")
                    return
                if i % s.burst:
                    continue
                if i and s.gap:
                    await asyncio.sleep(s.gap)
                group = pieces[i:i + s.burst]
                await write_chunk(writer, b"".join(
                    _chunk(cid, model, {"content": p}) for p in group))
            if s.giant_line:
                await _giant_line(writer, s.giant_line)
            await write_chunk(writer, _chunk(cid, model, {}, s.finish_reason))
            if s.usage:
                prompt, completion = s.usage_counts or (11, len(pieces))
                usage = {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()),
                         "model": model, "system_fingerprint": "fp_fake", "choices": [],
                         "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                                   "total_tokens": prompt + completion}}
                await write_chunk(writer, b"data: " + json.dumps(usage).encode() + b"\n\n")
            if s.done:
                await write_chunk(writer, b"data: [DONE]\n\n")
            if s.after_done:
                await write_chunk(writer, s.after_done)
            await asyncio.sleep(s.hold_after_done)
            await write_chunk(writer, b"")  # a clean end of the body, [DONE] or not
            seen.finished, seen.finished_at = True, time.monotonic()
        except (ConnectionError, asyncio.CancelledError):
            seen.closed_early_at = time.monotonic()
            raise drop() from None


    def _transcribe(self, request: Request) -> Reply:
        if request.headers.get("authorization") != f"Bearer {API_KEY}":
            return _unauthorized(request)
        form = _multipart(request)
        if isinstance(form, str):
            return _error(400, "invalid_request_error", form)
        fields, (filename, content_type, audio) = form
        heard = Heard(fields.get("model", ""), filename, content_type, audio, fields)
        self.transcriptions.append(heard)
        if heard.model not in TRANSCRIBE_MODELS:
            return _error(400, "model_not_found", f"The model `{heard.model}` does not exist")
        ext = filename.rpartition(".")[2].lower()
        if ext not in AUDIO_FORMATS:
            return _error(400, "invalid_value", f"Invalid file format. Supported formats: "
                          f"{sorted(AUDIO_FORMATS)}")
        if not audio or len(audio) > 25 * 1024 * 1024:
            return _error(400, "invalid_value", "Audio file is empty or over 25 MB")
        if ext == "ogg" and not audio.startswith(b"OggS"):
            return _error(400, "invalid_value", "Audio file might be corrupted or unsupported")
        nxt = (self.transcripts.popleft() if self.transcripts
               else f"voice note of {len(audio)} bytes")
        if isinstance(nxt, int):
            return _error(nxt, "server_error", "Fake failure")
        answer: dict[str, Any] = {"text": nxt}
        if heard.model == "whisper-1":
            answer["usage"] = {"type": "duration", "seconds": max(1, len(audio) // 4000)}
        else:
            out = max(1, len(nxt.split()))
            answer["usage"] = {"type": "tokens", "input_tokens": 20, "output_tokens": out,
                               "total_tokens": 20 + out,
                               "input_token_details": {"text_tokens": 0, "audio_tokens": 20}}
        return Reply(200, {"content-type": "application/json"}, json.dumps(answer).encode())


def _multipart(request: Request) -> tuple[dict[str, str], tuple[str, str, bytes]] | str:
    """(text fields, (filename, content type, bytes) of `file`), or what is wrong."""
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("multipart/form-data") or "boundary=" not in ctype:
        return "Content-Type must be multipart/form-data with a boundary"
    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + request.body)
    if not message.is_multipart():
        return "the body is not a multipart form"
    fields: dict[str, str] = {}
    file: tuple[str, str, bytes] | None = None
    for part in message.iter_parts():
        if part.get_content_disposition() != "form-data" or not part.get_param(
                "name", header="content-disposition"):
            return "every part must be form-data with a name"
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True) or b""
        if name == "file":
            filename = part.get_filename()
            if not filename:
                return "the file part needs a filename"
            file = (filename, part.get_content_type(), payload)
        else:
            fields[str(name)] = payload.decode()
    if file is None:
        return "you must provide a file"
    if "model" not in fields:
        return "you must provide a model parameter"
    return fields, file


def _text_of(content: Any) -> str:
    """A message's text: the string, or its text parts joined, plus how many images it has."""
    if isinstance(content, str):
        return content
    texts = [p["text"] for p in content if p.get("type") == "text"]
    images = sum(1 for p in content if p.get("type") == "image_url")
    return " ".join(texts) + (f" [{images} image(s)]" if images else "")


def _image_problem(body: dict[str, Any]) -> str | None:
    """What OpenAI would refuse about the request's content parts, if anything."""
    for message in body["messages"]:
        content = message["content"]
        if isinstance(content, str):
            continue
        if message["role"] != "user" or not isinstance(content, list) or not content:
            return "content parts are only accepted in a non-empty list in user messages"
        for part in content:
            kind = part.get("type")
            if kind == "text" and isinstance(part.get("text"), str) and set(part) == {
                    "type", "text"}:
                continue
            if kind != "image_url" or set(part) != {"type", "image_url"}:
                return f"invalid content part: {sorted(part)}"
            if not body["model"].startswith(VISION_PREFIXES):
                return f"image_url is not supported by model {body['model']}"
            image = part["image_url"]
            if image.get("detail", "auto") not in ("auto", "low", "high"):
                return "invalid detail"
            match = DATA_URL.fullmatch(image.get("url", ""))
            if match is None:
                return "image_url.url must be a data URL of a supported image type"
            try:
                base64.b64decode(match.group(2), validate=True)
            except binascii.Error:
                return "the image data URL is not valid base64"
    return None


ENDLESS_FOR = 60.0  # seconds: an endless stream still ends if its client never does


async def _endless(
    writer: asyncio.StreamWriter, cid: str, model: str, pieces: list[str], burst: int
) -> None:
    """Content events for as long as the client reads (bounded by ENDLESS_FOR)."""
    group = b"".join(_chunk(cid, model, {"content": p}) for p in pieces) * max(burst, 1)
    until = time.monotonic() + ENDLESS_FOR
    while time.monotonic() < until:
        await write_chunk(writer, group)
    raise drop()


async def _giant_line(writer: asyncio.StreamWriter, size: int) -> None:
    """A data line of `size` bytes that never gets its newline; the connection then idles."""
    await write_chunk(writer, b'data: {"choices": [{"index": 0, "delta": {"content": "')
    block = b"a" * 65536
    for _ in range(size // len(block)):
        await write_chunk(writer, block)
    await asyncio.sleep(ENDLESS_FOR)
    raise drop()


def _unauthorized(request: Request) -> Reply:
    presented = request.headers.get("authorization", "")[7:]
    masked = presented[:3] + "*" * 8 + presented[-4:] if presented else ""
    return _error(401, "invalid_api_key", f"Incorrect API key provided: {masked}.")


def _completion(model: str, text: str | None, finish_reason: str, prompt: int) -> bytes:
    """A `chat.completion` object as OpenAI sends it for a non-streamed request."""
    completion = len(text.split()) if text else 0
    return json.dumps({
        "id": "chatcmpl-fake-whole", "object": "chat.completion", "created": int(time.time()),
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text, "refusal": None,
                        "annotations": []},
            "logprobs": None, "finish_reason": finish_reason,
        }],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                  "total_tokens": prompt + completion,
                  "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                  "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0}},
        "service_tier": "default", "system_fingerprint": "fp_fake",
    }).encode()


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Reply:
    body = json.dumps({"error": {"message": message, "type": "invalid_request_error",
                                 "param": None, "code": code}}).encode()
    return Reply(status, {"content-type": "application/json", **(headers or {})}, body)
