"""The fake LLM speaks OpenAI's wire format well enough for the real ``openai`` SDK, over
real HTTP, and holds tests to the traffic they script.

In: a :class:`FakeLLM` (in-process, one per test, uvicorn on a thread) scripted with turns,
functions of the request or a responder, called through ``openai.AsyncOpenAI`` (retries off),
httpx and a raw socket. Asserted: non-streamed and streamed text, usage (deterministic counts,
the ``include_usage`` chunk), tool-call deltas reassembled by the SDK's stream helper, HTTP
errors surfacing as the SDK's exception classes, latency, dropped connections, request
recording (body and headers, chunked request bodies, keep-alive), holding answers back, the
rule-based responders, strictness (an unused step or an unscripted request fails the ``with``
block and the fixture; a responder opts out), the admin endpoints, the JSON script form, and
the child-process front end.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageFunctionToolCall

from tests.support.fake_llm import (
    ChatRequest,
    FakeLLM,
    FakeLLMProcess,
    ToolCall,
    Turn,
    completion_tokens,
    echo,
    parse_call_arguments,
    prompt_tokens,
    tool_then_answer,
)

pytestmark = pytest.mark.timeout(30)

MODEL = "fake-model"
ADD_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two integers",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
    },
}


@pytest.fixture
def llm(fake_llm: FakeLLM) -> FakeLLM:
    return fake_llm


@pytest.fixture
async def client(llm: FakeLLM) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=llm.base_url, api_key="sk-test", max_retries=0) as sdk:
        yield sdk


def user(text: str) -> Any:
    return {"role": "user", "content": text}


async def test_non_streamed_text_with_usage(llm: FakeLLM, client: AsyncOpenAI) -> None:
    llm.script(Turn.text("four score and seven"))
    messages = [{"role": "system", "content": "You are terse."}, user("how many years ago")]

    result = await client.chat.completions.create(model=MODEL, messages=messages)

    assert result.choices[0].message.content == "four score and seven"
    assert result.choices[0].finish_reason == "stop"
    assert result.model == MODEL
    assert result.usage is not None
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (3 + 4, 4)
    assert result.usage.total_tokens == 11
    llm.assert_script_consumed()


async def test_streamed_text_reassembles_and_ends_with_usage(
    llm: FakeLLM, client: AsyncOpenAI
) -> None:
    answer = "The quick  brown fox\njumps."
    llm.script(Turn.text(answer))

    stream = await client.chat.completions.create(
        model=MODEL,
        messages=[user("go")],
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces: list[str] = []
    finish: list[str | None] = []
    usage = None
    async for chunk in stream:
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
            finish.append(chunk.choices[0].finish_reason)
        if chunk.usage is not None:
            usage = chunk.usage

    assert "".join(pieces) == answer
    assert len([p for p in pieces if p]) == 5  # one chunk per word
    assert finish[-1] == "stop"
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (1, 5, 6)


async def test_stream_without_include_usage_sends_no_usage(
    llm: FakeLLM, client: AsyncOpenAI
) -> None:
    llm.script(Turn.text("hi there"))
    stream = await client.chat.completions.create(model=MODEL, messages=[user("x")], stream=True)
    chunks = [chunk async for chunk in stream]
    assert all(chunk.usage is None for chunk in chunks)
    assert all(chunk.choices for chunk in chunks)


async def test_streamed_tool_calls_are_reassembled_by_the_sdk(
    llm: FakeLLM, client: AsyncOpenAI
) -> None:
    llm.script(
        Turn.tool_calls(
            ToolCall("add", {"a": 12345, "b": 67890}),
            ToolCall("echo", {"text": "a long text argument, split in pieces"}, id="call_x"),
        )
    )

    async with client.chat.completions.stream(
        model=MODEL, messages=[user("add")], tools=[ADD_TOOL]
    ) as stream:
        async for _ in stream:
            pass
        final = await stream.get_final_completion()

    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert calls is not None
    assert all(isinstance(c, ChatCompletionMessageFunctionToolCall) for c in calls)
    function_calls = [c for c in calls if isinstance(c, ChatCompletionMessageFunctionToolCall)]
    assert [(c.id, c.function.name) for c in function_calls] == [
        ("call_1_0", "add"),
        ("call_x", "echo"),
    ]
    arguments = [json.loads(c.function.arguments) for c in function_calls]
    assert arguments == [
        {"a": 12345, "b": 67890},
        {"text": "a long text argument, split in pieces"},
    ]


async def test_non_streamed_tool_call_and_usage(llm: FakeLLM, client: AsyncOpenAI) -> None:
    turn = Turn.tool_calls(ToolCall("add", {"a": 1, "b": 2}))
    llm.script(turn)

    result = await client.chat.completions.create(
        model=MODEL, messages=[user("please add a=1 b=2")], tools=[ADD_TOOL]
    )

    message = result.choices[0].message
    assert message.content is None
    assert message.tool_calls is not None
    call = message.tool_calls[0]
    assert call.type == "function"
    assert (call.function.name, json.loads(call.function.arguments)) == ("add", {"a": 1, "b": 2})
    assert result.usage is not None
    assert result.usage.completion_tokens == completion_tokens(turn) == 2


@pytest.mark.parametrize(
    ("turn", "exception", "status"),
    [
        pytest.param(Turn.rate_limited(retry_after=2), openai.RateLimitError, 429, id="429"),
        pytest.param(Turn.invalid_api_key(), openai.AuthenticationError, 401, id="401"),
        pytest.param(Turn.model_not_found("gpt-x"), openai.NotFoundError, 404, id="404"),
        pytest.param(Turn.server_error(), openai.InternalServerError, 500, id="500"),
        pytest.param(Turn.error(400, "bad"), openai.BadRequestError, 400, id="400"),
    ],
)
async def test_errors_surface_as_sdk_exceptions(
    llm: FakeLLM,
    client: AsyncOpenAI,
    turn: Turn,
    exception: type[openai.APIStatusError],
    status: int,
) -> None:
    llm.script(turn, turn)

    with pytest.raises(exception) as caught:
        await client.chat.completions.create(model=MODEL, messages=[user("x")])
    with pytest.raises(exception):
        await client.chat.completions.create(model=MODEL, messages=[user("x")], stream=True)

    assert caught.value.status_code == status
    assert turn.http_error is not None
    assert caught.value.code == turn.http_error.code
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["message"] == turn.http_error.message
    if status == 429:
        assert caught.value.response.headers["retry-after"] == "2"


async def test_the_sdk_retries_a_429_after_retry_after(llm: FakeLLM) -> None:
    llm.script(Turn.rate_limited(retry_after=0.05), Turn.text("finally"))
    async with AsyncOpenAI(base_url=llm.base_url, api_key="k", max_retries=1) as sdk:
        result = await sdk.chat.completions.create(model=MODEL, messages=[user("x")])
    assert result.choices[0].message.content == "finally"
    assert len(llm.requests) == 2


async def test_latency_before_first_byte_and_per_chunk(llm: FakeLLM, client: AsyncOpenAI) -> None:
    llm.script(
        Turn.text("slow").with_latency(first_byte=0.2),
        Turn.text("a b c d").with_latency(per_chunk=0.05),
    )

    started = time.monotonic()
    await client.chat.completions.create(model=MODEL, messages=[user("x")])
    assert time.monotonic() - started >= 0.2

    stream = await client.chat.completions.create(model=MODEL, messages=[user("x")], stream=True)
    arrivals: list[float] = []
    async for _ in stream:
        arrivals.append(time.monotonic())
    # role chunk, 4 words, finish chunk: 5 gaps of >= 50 ms each
    assert len(arrivals) == 6
    assert arrivals[-1] - arrivals[0] >= 0.2


async def test_dropped_connection_mid_stream(llm: FakeLLM, client: AsyncOpenAI) -> None:
    llm.script(Turn.disconnect_after(3, content="one two three four five"))

    stream = await client.chat.completions.create(model=MODEL, messages=[user("x")], stream=True)
    received: list[str] = []

    async def read_all() -> None:
        async for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")

    with pytest.raises(openai.APIConnectionError):
        await read_all()
    assert "".join(received) == "one two "


async def test_dropped_connection_before_response(llm: FakeLLM, client: AsyncOpenAI) -> None:
    llm.script(Turn.disconnect_after(0))
    with pytest.raises(openai.APIConnectionError):
        await client.chat.completions.create(model=MODEL, messages=[user("x")])


async def test_requests_are_recorded_with_body_and_headers(
    llm: FakeLLM, client: AsyncOpenAI
) -> None:
    llm.script(Turn.text("ok"))
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

    await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "system", "content": "Be brief."}, user("hello")],
        tools=[ADD_TOOL],
        temperature=0.25,
        max_tokens=64,
        extra_headers={"traceparent": traceparent},
    )

    (request,) = llm.requests
    assert request.headers["authorization"] == "Bearer sk-test"
    assert request.headers["traceparent"] == traceparent
    assert request.system_prompt == "Be brief."
    assert request.last_user_text == "hello"
    assert request.tool_names == ["add"]
    assert request.body["temperature"] == 0.25
    assert request.body["max_tokens"] == 64
    assert request.model == MODEL
    assert not request.stream


async def test_models_endpoint(client: AsyncOpenAI) -> None:
    models = [m.id async for m in client.models.list()]
    assert models == [MODEL]


async def test_strict_models_and_api_key_checks() -> None:
    with FakeLLM(echo, strict_models=True, api_key="right") as llm:
        async with AsyncOpenAI(base_url=llm.base_url, api_key="wrong", max_retries=0) as sdk:
            with pytest.raises(openai.AuthenticationError):
                await sdk.chat.completions.create(model=MODEL, messages=[user("x")])
        async with AsyncOpenAI(base_url=llm.base_url, api_key="right", max_retries=0) as sdk:
            with pytest.raises(openai.NotFoundError):
                await sdk.chat.completions.create(model="other", messages=[user("x")])
            result = await sdk.chat.completions.create(model=MODEL, messages=[user("x")])
    assert result.choices[0].message.content == "Echo: x"


async def test_exhausted_script_without_responder_is_a_500_and_a_difference(
    llm: FakeLLM, client: AsyncOpenAI
) -> None:
    with pytest.raises(openai.InternalServerError, match="script exhausted"):
        await client.chat.completions.create(model=MODEL, messages=[user("x")])
    with pytest.raises(AssertionError, match=r"request 1 was not scripted .* user text 'x'"):
        llm.assert_traffic_as_scripted()
    llm.reset()  # forgiven: this test made the unscripted request on purpose
    llm.assert_traffic_as_scripted()


async def test_script_comes_before_the_responder(llm: FakeLLM, client: AsyncOpenAI) -> None:
    llm.responder = echo
    llm.script(Turn.text("scripted"))
    answers = []
    for text in ("first", "second"):
        result = await client.chat.completions.create(model=MODEL, messages=[user(text)])
        answers.append(result.choices[0].message.content)
    assert answers == ["scripted", "Echo: second"]


def test_assert_script_consumed_names_leftovers(llm: FakeLLM) -> None:
    llm.script(Turn.text("never asked"))
    with pytest.raises(AssertionError, match="1 scripted"):
        llm.assert_script_consumed()
    llm.reset()


def test_a_clean_exit_asserts_the_traffic_was_the_script() -> None:
    with pytest.raises(AssertionError, match="1 scripted fake-LLM turn"), FakeLLM() as llm:
        llm.script(Turn.text("never asked"))
    with pytest.raises(AssertionError, match="request 1 was not scripted"), FakeLLM() as llm:
        assert httpx.post(f"{llm.base_url}/chat/completions", json={}).status_code == 500
    with FakeLLM(responder=echo) as llm:  # a responder answers open-ended traffic
        assert httpx.post(f"{llm.base_url}/chat/completions", json={}).is_success

    def fail_inside() -> None:
        with FakeLLM() as llm:
            llm.script(Turn.text("never asked"))
            raise KeyError("the test's own failure")

    # a failing block keeps its own error; the traffic is not checked on top of it
    with pytest.raises(KeyError):
        fail_inside()


async def test_steps_may_compute_their_turn_and_a_raising_step_is_a_difference(
    llm: FakeLLM, client: AsyncOpenAI
) -> None:
    def shout(request: ChatRequest) -> Turn:
        return Turn.text(request.last_user_text.upper())

    def broken(request: ChatRequest) -> Turn:
        raise ValueError("bug in the test")

    llm.script(shout, broken)
    result = await client.chat.completions.create(model=MODEL, messages=[user("hey")])
    assert result.choices[0].message.content == "HEY"
    with pytest.raises(openai.InternalServerError, match="scripted step raised"):
        await client.chat.completions.create(model=MODEL, messages=[user("x")])
    with pytest.raises(AssertionError, match=r"request 2: the scripted step raised ValueError"):
        llm.assert_traffic_as_scripted()
    llm.reset()


async def test_hold_keeps_answers_back_until_release(llm: FakeLLM, client: AsyncOpenAI) -> None:
    llm.script(Turn.text("one"), Turn.text("two"))
    llm.hold()
    calls = [
        asyncio.ensure_future(client.chat.completions.create(model=MODEL, messages=[user(t)]))
        for t in ("a", "b")
    ]
    await asyncio.to_thread(llm.wait_for_requests, 2)
    await asyncio.sleep(0.05)  # room for an answer that should not come
    assert not any(call.done() for call in calls), "held requests were answered"
    llm.release()
    answers = [(await call).choices[0].message.content for call in calls]
    assert sorted(answers) == ["one", "two"]  # type: ignore[type-var]


def test_stop_drops_held_and_slow_answers_at_once() -> None:
    llm = FakeLLM().start()
    llm.script(Turn.text("late").with_latency(first_byte=30), Turn.text("held"))
    with httpx.Client(base_url=llm.base_url, timeout=30) as http:
        errors: list[BaseException] = []

        def call() -> None:
            try:
                http.post("/chat/completions", json={"messages": []})
            except httpx.HTTPError as e:
                errors.append(e)

        callers = [threading.Thread(target=call) for _ in range(2)]
        callers[0].start()
        llm.wait_for_requests(1)
        llm.hold()
        callers[1].start()
        llm.wait_for_requests(2)
        started = time.monotonic()
        llm.stop()
        for caller in callers:
            caller.join(10)
        assert time.monotonic() - started < 2
        assert len(errors) == 2
        assert all(isinstance(e, httpx.TransportError) for e in errors), errors


async def test_tool_then_answer_drives_a_tool_loop() -> None:
    with FakeLLM(tool_then_answer) as llm:
        async with AsyncOpenAI(base_url=llm.base_url, api_key="k", max_retries=0) as sdk:
            messages: list[Any] = [user('please add a=2 b=40 note="two words"')]
            first = await sdk.chat.completions.create(
                model=MODEL, messages=messages, tools=[ADD_TOOL]
            )
            call = first.choices[0].message.tool_calls
            assert call is not None
            assert isinstance(call[0], ChatCompletionMessageFunctionToolCall)
            function = call[0].function
            assert function.name == "add"
            assert json.loads(function.arguments) == {"a": 2, "b": 40, "note": "two words"}
            messages += [
                first.choices[0].message.model_dump(exclude_none=True),
                {"role": "tool", "tool_call_id": call[0].id, "content": "42"},
            ]
            second = await sdk.chat.completions.create(
                model=MODEL, messages=messages, tools=[ADD_TOOL]
            )
    assert second.choices[0].message.content == "The tool said: 42"
    assert second.usage is not None
    assert second.usage.prompt_tokens == prompt_tokens(messages)


def test_rule_based_responders_directly() -> None:
    def request(*messages: Any, tools: list[Any] | None = None) -> ChatRequest:
        return ChatRequest(body={"messages": list(messages), "tools": tools}, headers={})

    assert echo(request(user("hi"))).content == "Echo: hi"
    no_tool = tool_then_answer(request(user("add a=1"), tools=None))
    assert no_tool.content == "Echo: add a=1"
    other = tool_then_answer(request(user("adder a=1"), tools=[ADD_TOOL]))
    assert other.calls == ()
    parallel = tool_then_answer(
        request(
            user("x"),
            {"role": "assistant", "tool_calls": []},
            {"role": "tool", "content": "1"},
            {"role": "tool", "content": [{"type": "text", "text": "2"}]},
        )
    )
    assert parallel.content == "The tool said: 1 | 2"
    assert parse_call_arguments("q=hello n=1.5 ok=true s='a b'") == {
        "q": "hello",
        "n": 1.5,
        "ok": True,
        "s": "a b",
    }


def test_turn_json_round_trip() -> None:
    turns = [
        Turn.text("hi")
        .with_latency(first_byte=0.1, per_chunk=0.01)
        .with_usage(prompt=3, completion=4),
        Turn.tool_calls(ToolCall("add", {"a": 1}), content="calling"),
        Turn.rate_limited(retry_after=3),
        Turn.disconnect_after(2),
        Turn.text("cut").with_finish_reason("length"),
    ]
    decoded = [Turn.from_json(json.loads(json.dumps(t.to_json()))) for t in turns]
    # Arguments come back as their JSON text; everything else is equal.
    assert decoded[1].calls[0].arguments_json == turns[1].calls[0].arguments_json
    assert [d for i, d in enumerate(decoded) if i != 1] == [
        t for i, t in enumerate(turns) if i != 1
    ]


def test_wait_for_requests_times_out_with_a_count(llm: FakeLLM) -> None:
    with pytest.raises(TimeoutError, match="got 0 chat requests, expected 1"):
        llm.wait_for_requests(1, timeout=0.05)


async def test_child_process_front_end(tmp_path: Path) -> None:
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"turns": [{"text": "from file"}], "responder": "echo"}))
    with FakeLLMProcess(responder=None, script_file=script) as llm:
        llm.script(Turn.tool_calls(ToolCall("add", {"a": 1, "b": 2})))
        async with AsyncOpenAI(base_url=llm.base_url, api_key="k", max_retries=0) as sdk:
            first = await sdk.chat.completions.create(model=MODEL, messages=[user("a")])
            second = await sdk.chat.completions.create(model=MODEL, messages=[user("b")])
            third = await sdk.chat.completions.create(model=MODEL, messages=[user("c")])
        llm.assert_script_consumed()
        requests = llm.wait_for_requests(3)
    assert first.choices[0].message.content == "from file"
    assert second.choices[0].message.tool_calls is not None
    assert third.choices[0].message.content == "Echo: c"
    assert [r.last_user_text for r in requests] == ["a", "b", "c"]


def test_keep_alive_and_a_chunked_request_body_over_one_raw_connection(llm: FakeLLM) -> None:
    llm.script(Turn.text("first"), Turn.text("second"))
    body = json.dumps({"model": MODEL, "messages": [user("chunked")]}).encode()
    half = len(body) // 2
    chunked = b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (
        half,
        body[:half],
        len(body) - half,
        body[half:],
    )
    plain = json.dumps({"model": MODEL, "messages": [user("plain")]}).encode()
    with socket.create_connection(("127.0.0.1", llm.port), timeout=5) as sock:
        reader = sock.makefile("rb")
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Trace: a\r\nX-Trace: b\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + chunked
        )
        first = _read_response(reader)
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
            % (len(plain), plain)
        )
        second = _read_response(reader)
    assert [first["choices"][0]["message"]["content"], second["choices"][0]["message"]["content"]]
    assert [r.last_user_text for r in llm.requests] == ["chunked", "plain"]
    assert llm.requests[0].headers["x-trace"] == "a, b"


def _read_response(reader: Any) -> Any:
    """One HTTP/1.1 response with a content-length body, as JSON."""
    status = reader.readline()
    assert status.startswith(b"HTTP/1.1 200"), status
    length = 0
    while (line := reader.readline()) != b"\r\n":
        name, _, value = line.decode().partition(":")
        if name.lower() == "content-length":
            length = int(value)
    return json.loads(reader.read(length))


def test_bad_bodies_and_unknown_routes_get_openai_style_errors(llm: FakeLLM) -> None:
    with httpx.Client(base_url=llm.base_url) as http:
        for content in (b"{not json", b"[1]"):
            response = http.post("/chat/completions", content=content)
            assert response.status_code == 400
            assert response.json()["error"]["message"].startswith("invalid JSON body")
        missing = http.get("/nowhere")
    assert missing.status_code == 404
    assert missing.json()["error"] == {
        "message": "no route GET /v1/nowhere",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
    assert llm.requests == [], "only well-formed chat requests are recorded"


def test_admin_endpoints_script_inspect_hold_and_reset(llm: FakeLLM) -> None:
    admin = f"http://127.0.0.1:{llm.port}/_fake"
    with httpx.Client(timeout=5) as http:
        assert http.post(f"{admin}/script", json={"turns": [{"text": "hi"}]}).json() == {
            "pending": 1
        }
        assert http.get(f"{admin}/health").json() == {"ok": True, "pending": 1, "problems": []}
        http.post(f"{admin}/hold")
        held = threading.Thread(
            target=http.post,
            args=(f"{llm.base_url}/chat/completions",),
            kwargs={"json": {"messages": [user("q")]}},
        )
        held.start()
        llm.wait_for_requests(1)
        assert held.is_alive()
        http.post(f"{admin}/release")
        held.join(5)
        assert not held.is_alive()
        (recorded,) = http.get(f"{admin}/requests").json()
        assert recorded["body"] == {"messages": [user("q")]}
        assert recorded["headers"]["content-type"] == "application/json"
        assert http.post(f"{admin}/reset").json() == {"ok": True}
        assert http.get(f"{admin}/requests").json() == []
        assert http.get(f"{admin}/nothing").status_code == 404


async def test_a_client_leaving_during_latency_frees_the_server(
    llm: FakeLLM, client: AsyncOpenAI
) -> None:
    llm.script(Turn.text("too late").with_latency(first_byte=30), Turn.text("next"))
    with pytest.raises(openai.APITimeoutError):
        await client.chat.completions.create(model=MODEL, messages=[user("x")], timeout=0.2)
    result = await client.chat.completions.create(model=MODEL, messages=[user("y")])
    assert result.choices[0].message.content == "next"


def test_child_process_is_strict_too(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="1 scripted fake-LLM turn"), FakeLLMProcess() as llm:
        llm.script(Turn.text("never asked"))
    with pytest.raises(AssertionError, match="request 1 was not scripted"), FakeLLMProcess() as llm:
        assert httpx.post(f"{llm.base_url}/chat/completions", json={}).status_code == 500
