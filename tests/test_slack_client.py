"""The bot's Slack client against the stand-in: connections kept between calls, errors as slack_sdk's."""

from __future__ import annotations

import pytest
from slack_sdk.errors import SlackApiError

from bot import slack_io
from tests.conftest import BOT_TOKEN

CHANNEL = "C0INCIDENTS"


@pytest.fixture
def client(standin):
    standin.reset()
    return slack_io.make_client(BOT_TOKEN, standin.api_url, timeout=5)


@pytest.fixture(autouse=True)
def no_drill_rooms():
    """`slack_io.call` asks the bot's drill marker about each room; tests that built a bot in this
    process leave theirs behind, on a database that is gone."""
    left_behind = slack_io._is_drill_room
    slack_io.mark_drill_rooms(None)
    yield
    slack_io.mark_drill_rooms(left_behind)


def posted(standin) -> list[str]:
    return [m["text"] for m in standin.messages(CHANNEL)]


def test_calls_share_one_kept_connection(client, standin):
    before = standin.connections_accepted
    for n in range(20):
        assert client.chat_postMessage(channel=CHANNEL, text=f"update {n}")["ok"] is True
    assert standin.connections_accepted - before == 1
    assert posted(standin) == [f"update {n}" for n in range(20)]


def test_a_connection_slack_closed_while_idle_is_replaced_without_a_repeat(client, standin):
    client.chat_postMessage(channel=CHANNEL, text="first")
    before = standin.connections_accepted
    standin.drop_connections()  # Slack closes idle connections whenever it likes
    assert client.chat_postMessage(channel=CHANNEL, text="second")["ok"] is True
    assert standin.connections_accepted - before == 1
    assert posted(standin) == ["first", "second"]
    assert [c["http_status"] for c in standin.calls("chat.postMessage")] == [200, 200]


def test_errors_are_retried_and_reported_as_before(client, standin):
    standin.fail_next("chat.postMessage", status=500)
    assert client.chat_postMessage(channel=CHANNEL, text="after a 500")["ok"] is True
    standin.fail_next("chat.postMessage", retry_after=0)  # a 429 with Retry-After: 0
    assert client.chat_postMessage(channel=CHANNEL, text="after a 429")["ok"] is True
    assert [c["http_status"] for c in standin.calls("chat.postMessage")] == [500, 200, 429, 200]
    assert posted(standin) == ["after a 500", "after a 429"]

    standin.fail_next("chat.postMessage", status=503, times=3)  # more than the two retries of a 5xx
    with pytest.raises(SlackApiError) as refused:
        client.chat_postMessage(channel=CHANNEL, text="never")
    assert refused.value.response.status_code == 503
    with pytest.raises(slack_io.SlackCallFailed, match="posting failed: channel_not_found"):
        slack_io.call("posting", client.chat_postMessage, channel="C0NOSUCH", text="x")
    assert posted(standin) == ["after a 500", "after a 429"]


def test_slack_unreachable_is_a_failure_not_a_hang(standin):
    from tests.conftest import free_port

    client = slack_io.make_client(BOT_TOKEN, f"http://127.0.0.1:{free_port()}/api/", timeout=2)
    with pytest.raises(slack_io.SlackCallFailed, match="posting failed: URLError"):
        slack_io.call("posting", client.chat_postMessage, channel=CHANNEL, text="x")
