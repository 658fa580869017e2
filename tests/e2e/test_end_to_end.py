"""The chat flows through nginx, as a user runs them: the browser's POST and event stream (curl -N), the OpenAI
stream (curl -N), and the official OpenAI Python SDK, streamed and whole. The same prompt gives the same text on
every flow, so the browser flow's answer is kept for the others to compare with."""

from __future__ import annotations

import json
import subprocess

import pytest
from local_stack import Stack  # conftest.py put deploy/ on the path
from user_requests import (
    MODEL,
    PROMPT,
    STREAM_TIMEOUT_S,
    assert_streamed,
    client_address,
    curl_stream,
    parse_sse,
    unique_prompt,
)


@pytest.fixture(scope="module")
def browser_text(stack: Stack) -> str:
    """The browser flow's answer; the OpenAI flows must give the same text for the same prompt."""
    return run_browser_flow(stack)


def test_browser_flow_streams_token_events_then_done_with_increasing_ids(browser_text: str) -> None:
    assert browser_text.strip()


def run_browser_flow(stack: Stack) -> str:
    body = json.dumps({"message": unique_prompt()})
    client = ["-H", f"x-forwarded-for: {client_address()}"]
    created = subprocess.run(
        ["curl", "-sS", "--max-time", "15", "-w", "\n%{http_code}", "-H", "content-type: application/json",
         *client, "-d", body, f"{stack.base_url}/api/chats"],
        capture_output=True, text=True, timeout=30,
    )
    assert created.returncode == 0, f"POST /api/chats: curl failed: {created.stderr}"
    response_body, _, status = created.stdout.rpartition("\n")
    assert status == "202", f"POST /api/chats answered {status}: {response_body}"
    chat = json.loads(response_body)
    events_url = chat["events_url"]
    assert events_url.startswith("/api/chats/"), f"unexpected events_url {events_url!r}"

    lines, _ = curl_stream(["-H", "accept: text/event-stream", *client, f"{stack.base_url}{events_url}"])
    events = parse_sse(lines)
    kinds = [event.event for event in events]
    assert kinds and kinds[-1] == "done", f"the stream must end with `done`; got {kinds}"
    assert "error" not in kinds, f"the stream carried an error: {[e.data for e in events if e.event == 'error']}"
    answer_events = [event for event in events if event.event in ("token", "done", "reset")]
    ids = [int(event.id) for event in answer_events]
    assert all(later > earlier for earlier, later in zip(ids, ids[1:])), f"SSE ids do not increase: {ids}"

    text = ""
    for event in answer_events:
        payload = json.loads(event.data)
        if event.event == "reset":
            text = ""
        elif event.event == "token":
            text += payload["text"]
    tokens = [event for event in events if event.event == "token"]
    assert len(tokens) >= 3, f"expected several token events, got {len(tokens)}: one blob is not a stream"
    assert_streamed([event.at for event in tokens] + [events[-1].at], "browser token events")
    usage = json.loads(events[-1].data)["usage"]
    assert text.strip(), "the answer is empty"
    assert usage["completion_tokens"] == len(text.split()), (
        f"done.usage.completion_tokens={usage['completion_tokens']} but the text has {len(text.split())} words"
    )
    print(f"     {len(tokens)} token events, ids {ids[0]}..{ids[-1]}, answer: {text[:60]!r}...", flush=True)
    return text


def test_openai_stream_with_curl_ends_with_done_and_matches_the_browser_flow(stack: Stack, browser_text: str) -> None:
    body = json.dumps({"model": MODEL, "stream": True, "messages": [{"role": "user", "content": unique_prompt()}]})
    lines, _ = curl_stream(["-H", "content-type: application/json", "-H", f"x-forwarded-for: {client_address()}",
                            "-d", body, f"{stack.base_url}/v1/chat/completions"])
    events = parse_sse(lines)
    assert events, f"no events in the stream: {[line.text for line in lines][:10]}"
    last_data_line = [line.text for line in lines if line.text.startswith("data:")][-1]
    assert last_data_line == "data: [DONE]", f"the stream must end with data: [DONE]; got {last_data_line!r}"
    text, content_arrivals = "", []
    for event in events[:-1]:
        chunk = json.loads(event.data)
        assert chunk.get("object") == "chat.completion.chunk", f"not a chunk: {chunk}"
        for choice in chunk.get("choices", []):
            content = (choice.get("delta") or {}).get("content")
            if content:
                text += content
                content_arrivals.append(event.at)
    assert_streamed(content_arrivals + [events[-1].at], "chat.completion.chunk lines")
    assert text == browser_text, f"curl stream text differs from the browser flow:\n{text!r}\n{browser_text!r}"
    print(f"     {len(events) - 1} chunks, {len(content_arrivals)} with content", flush=True)


def openai_client(stack: Stack):
    from openai import OpenAI

    return OpenAI(base_url=f"{stack.base_url}/v1", api_key="unused", timeout=STREAM_TIMEOUT_S, max_retries=0,
                  default_headers={"x-forwarded-for": client_address()})


def test_openai_sdk_streams_and_answers_whole_like_the_browser_flow(stack: Stack, browser_text: str) -> None:
    client = openai_client(stack)
    models = [model.id for model in client.models.list()]
    assert MODEL in models, f"GET /v1/models lists {models}, not {MODEL}"

    pieces = []
    stream = client.chat.completions.create(
        model=MODEL, stream=True, messages=[{"role": "user", "content": unique_prompt()}]
    )
    for chunk in stream:
        for choice in chunk.choices:
            if choice.delta and choice.delta.content:
                pieces.append(choice.delta.content)
    streamed_text = "".join(pieces)
    assert len(pieces) >= 3, f"the SDK saw {len(pieces)} content chunks; expected several"
    assert streamed_text == browser_text, (
        f"SDK stream text differs from the browser flow:\n{streamed_text!r}\n{browser_text!r}"
    )

    whole = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": unique_prompt()}])
    assert whole.object == "chat.completion", f"object is {whole.object!r}"
    whole_text = whole.choices[0].message.content
    assert whole_text == streamed_text, f"non-streamed text differs from streamed:\n{whole_text!r}\n{streamed_text!r}"
    assert whole.choices[0].finish_reason, "finish_reason is missing"
    usage = whole.usage
    assert usage is not None, "a non-streamed completion must carry usage"
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0, f"usage is empty: {usage}"
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens, f"usage does not add up: {usage}"
    print(f"     SDK: {len(pieces)} chunks streamed; whole answer usage {usage.model_dump()}", flush=True)


def test_openai_sdk_sees_bad_request_model_not_found_for_an_unknown_model(stack: Stack) -> None:
    import openai

    client = openai_client(stack)
    try:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": PROMPT}])
    except openai.BadRequestError as error:
        assert error.status_code == 400, f"status {error.status_code}"
        assert error.code == "model_not_found", f"error code {error.code!r}, body {error.body!r}"
    else:
        raise AssertionError("an unknown model was accepted")
    try:
        client.chat.completions.create(model=MODEL, messages=[])
    except openai.BadRequestError as error:
        assert error.code, f"a 400 without a machine-readable code: {error.body!r}"
    else:
        raise AssertionError("a chat without messages was accepted")
