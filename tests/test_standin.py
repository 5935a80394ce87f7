"""Tests of the Slack stand-in and simulator, driven through slack_sdk's real WebClient.

They check that the stand-in refuses what slack.com refuses (with Slack's
error codes), keeps the state tests rely on, and that the simulator delivers
requests a real Slack app would accept: correctly signed and shaped.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import pytest
import requests
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler, ServerErrorRetryHandler
from slack_sdk.http_retry.builtin_interval_calculators import FixedValueRetryIntervalCalculator
from slack_sdk.signature import SignatureVerifier

from bot.slack_standin import build_method_table
from bot.slack_standin.server import BOT_USER_ID, SlackStandIn
from bot.slack_standin.simulator import SlackSimulator

SIGNING_SECRET = "test-signing-secret"
MODAL = {
    "type": "modal",
    "callback_id": "declare_incident",
    "private_metadata": "C0INCIDENTS",
    "title": {"type": "plain_text", "text": "Declare an incident"},
    "submit": {"type": "plain_text", "text": "Declare"},
    "blocks": [
        {"type": "input", "block_id": "title", "label": {"type": "plain_text", "text": "Title"},
         "element": {"type": "plain_text_input", "action_id": "title_input"}},
        {"type": "input", "block_id": "severity", "label": {"type": "plain_text", "text": "Severity"},
         "element": {"type": "static_select", "action_id": "severity_select",
                     "options": [{"text": {"type": "plain_text", "text": f"SEV{n}"}, "value": f"sev{n}"}
                                 for n in (1, 2, 3)]}},
        {"type": "input", "block_id": "lead", "label": {"type": "plain_text", "text": "Lead"},
         "element": {"type": "users_select", "action_id": "lead_select"}},
        {"type": "input", "block_id": "notes", "optional": True, "label": {"type": "plain_text", "text": "Notes"},
         "element": {"type": "plain_text_input", "action_id": "notes_input"}},
    ],
}


@pytest.fixture
def standin():
    with SlackStandIn() as running:
        yield running


@pytest.fixture
def client(standin):
    return WebClient(token="xoxb-standin", base_url=standin.api_url)


def slack_error(call) -> SlackApiError:
    """Run a call Slack should refuse and return slack_sdk's error."""
    with pytest.raises(SlackApiError) as refused:
        call()
    return refused.value


def error_code(call) -> str:
    return slack_error(call).response["error"]


# --------------------------------------------------------------- method table
def test_method_table_matches_slack_spec():
    if not build_method_table.DEFAULT_SPEC.exists():
        pytest.skip(f"Slack's OpenAPI spec is not at {build_method_table.DEFAULT_SPEC}")
    committed = build_method_table.DEFAULT_OUT.read_text(encoding="utf-8")
    assert build_method_table.generate() == committed
    table = json.loads(committed)
    assert table["chat.postMessage"] == ["channel"]
    assert table["views.open"] == ["trigger_id", "view"]


# ------------------------------------------------------------- auth & routing
def test_auth_test_identifies_the_bot(client):
    identity = client.auth_test()
    assert (identity["user_id"], identity["bot_id"], identity["team_id"]) == ("U0WARROOM", "B0WARROOM", "T0WARROOM")
    assert identity["url"].startswith("https://")


def test_unknown_method_is_refused(client):
    refused = slack_error(lambda: client.api_call("chat.postMessagee"))
    assert refused.response.status_code == 404
    assert refused.response["error"] == "unknown_method"


def test_bad_and_missing_tokens_are_refused(standin):
    assert error_code(lambda: WebClient(token="xoxb-wrong", base_url=standin.api_url).auth_test()) == "invalid_auth"
    assert error_code(lambda: WebClient(base_url=standin.api_url).auth_test()) == "not_authed"


def test_token_is_accepted_as_a_form_field_but_not_in_a_json_body(standin):
    form = requests.post(standin.api_url + "auth.test", data={"token": "xoxb-standin"}).json()
    json_body = requests.post(standin.api_url + "auth.test", json={"token": "xoxb-standin"}).json()
    assert form["ok"] is True
    assert json_body == {"ok": False, "error": "not_authed"}


def test_every_encoding_slack_accepts(standin):
    """slack_sdk sends form or JSON; blocks may be a JSON string or an object; curl may send multipart."""
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "as form"}}]
    auth = {"Authorization": "Bearer xoxb-standin"}
    as_form = requests.post(standin.api_url + "chat.postMessage", headers=auth,
                            data={"channel": "C0INCIDENTS", "blocks": json.dumps(blocks)}).json()
    as_multipart = requests.post(standin.api_url + "chat.postMessage", headers=auth,
                                 files={"channel": (None, "C0INCIDENTS"), "text": (None, "as multipart")}).json()
    as_query = requests.get(standin.api_url + "conversations.info?channel=C0GENERAL", headers=auth).json()
    assert as_form["ok"] and as_form["message"]["blocks"] == blocks
    assert as_multipart["ok"] and as_multipart["message"]["text"] == "as multipart"
    assert as_query["channel"]["name"] == "general"
    tokenless = requests.post(standin.api_url + "api.test", data={"foo": "bar"}).json()
    assert tokenless == {"ok": True, "args": {"foo": "bar"}}
    broken = requests.post(standin.api_url + "chat.postMessage", headers=auth,
                           data={"channel": "C0INCIDENTS", "blocks": "[{not json"}).json()
    assert broken == {"ok": False, "error": "invalid_blocks_format"}


def test_missing_required_arguments_get_slacks_errors(client):
    assert error_code(lambda: client.api_call("conversations.history")) == "channel_not_found"
    assert error_code(lambda: client.api_call("conversations.create")) == "invalid_name_required"
    refused = slack_error(lambda: client.api_call("views.open", json={"view": MODAL}))
    assert refused.response["error"] == "invalid_arguments"
    assert "trigger_id" in refused.response["response_metadata"]["messages"][0]


def test_known_but_unimplemented_method_says_so(client):
    refused = slack_error(lambda: client.api_call("conversations.archive", params={"channel": "C0GENERAL"}))
    assert refused.response.data == {"ok": False, "error": "not_implemented_in_standin",
                                     "method": "conversations.archive"}


# ------------------------------------------------------------------ channels
def test_create_channel_makes_the_bot_a_member(client, standin):
    created = client.conversations_create(name="inc-42-db-outage")["channel"]
    assert created["id"].startswith("C") and created["is_member"] is True
    assert standin.channel("inc-42-db-outage")["members"] == [BOT_USER_ID]
    assert client.conversations_info(channel=created["id"])["channel"]["name"] == "inc-42-db-outage"


@pytest.mark.parametrize("name, error", [
    ("Inc-42", "invalid_name_specials"),
    ("inc 42", "invalid_name_specials"),
    ("inc.42", "invalid_name_specials"),
    ("x" * 81, "invalid_name_maxlength"),
    ("---", "invalid_name_punctuation"),
    ("incidents", "name_taken"),
])
def test_channel_name_rules(client, name, error):
    assert error_code(lambda: client.conversations_create(name=name)) == error


def test_name_taken_after_a_successful_create(client):
    client.conversations_create(name="inc-7")
    assert error_code(lambda: client.conversations_create(name="inc-7")) == "name_taken"


def test_conversations_list_pages_the_channels_the_bot_may_see_by_type(client, standin):
    created = client.conversations_create(name="inc-8-listed")["channel"]
    standin.create_channel("hidden", ["U0ALICE"], is_private=True)
    standin.create_channel("secret-room", ["U0ALICE", BOT_USER_ID], is_private=True)
    public, cursor = [], None
    while True:
        page = client.conversations_list(limit=2, **({"cursor": cursor} if cursor else {}))
        assert len(page["channels"]) <= 2
        public += [(c["name"], c["creator"], c["is_private"]) for c in page["channels"]]
        cursor = page["response_metadata"]["next_cursor"]
        if not cursor:
            break
    assert ("inc-8-listed", BOT_USER_ID, False) in public and created["id"]
    assert not [name for name, _, private in public if private]  # public_channel by default
    both = {c["name"] for c in client.conversations_list(types="public_channel,private_channel")["channels"]}
    assert "secret-room" in both and "hidden" not in both and "inc-8-listed" in both
    assert error_code(lambda: client.conversations_list(types="channels")) == "invalid_types"


def test_invite_errors_and_success(client, standin):
    channel_id = client.conversations_create(name="inc-invites")["channel"]["id"]
    client.conversations_invite(channel=channel_id, users="U0ALICE,U0BOB")
    assert standin.channel(channel_id)["members"] == [BOT_USER_ID, "U0ALICE", "U0BOB"]
    assert error_code(lambda: client.conversations_invite(channel=channel_id, users="U0ALICE")) == "already_in_channel"
    assert error_code(lambda: client.conversations_invite(channel=channel_id, users="U0NOBODY")) == "user_not_found"
    assert error_code(lambda: client.conversations_invite(channel=channel_id, users=BOT_USER_ID)) == "cant_invite_self"
    assert error_code(lambda: client.conversations_invite(channel="C0NOPE", users="U0DAVE")) == "channel_not_found"
    outside = standin.create_channel("people-only", ["U0ALICE"])
    assert error_code(lambda: client.conversations_invite(channel=outside["id"], users="U0BOB")) == "not_in_channel"


def test_topic_and_join(client, standin):
    outside = standin.create_channel("war-stories", ["U0ALICE"])
    assert error_code(lambda: client.conversations_setTopic(channel=outside["id"], topic="x")) == "not_in_channel"
    with SlackStandIn(scopes=standin.scopes - {"channels:join"}) as without_the_scope:
        refusal = slack_error(lambda: WebClient(token="xoxb-standin", base_url=without_the_scope.api_url)
                              .conversations_join(channel="C0GENERAL")).response
        assert (refusal["error"], refusal["needed"]) == ("missing_scope", "channels:join")
    client.conversations_join(channel=outside["id"])
    client.conversations_setTopic(channel=outside["id"], topic="SEV1: checkout down")
    assert standin.channel(outside["id"])["topic"]["value"] == "SEV1: checkout down"
    assert error_code(lambda: client.conversations_setPurpose(channel=outside["id"], purpose="p" * 251)) == "too_long"


# ------------------------------------------------------------------ messages
def test_posting_needs_membership_or_a_public_channel_and_content(client, standin):
    outside = standin.create_channel("no-bot-here", ["U0ALICE"])
    hidden = standin.create_channel("people-only", ["U0ALICE"], is_private=True)
    # app.yaml asks for chat:write.public: a public channel takes the bot's post without it joining,
    # but is not readable to it; a private one it is not in does not exist for it.
    client.chat_postMessage(channel=outside["id"], text="hi")
    assert [m["text"] for m in standin.messages(outside["id"])] == ["hi"]
    assert BOT_USER_ID not in standin.channel(outside["id"])["members"]
    assert error_code(lambda: client.conversations_history(channel=outside["id"])) == "not_in_channel"
    assert error_code(lambda: client.chat_postMessage(channel=hidden["id"], text="hi")) == "channel_not_found"
    with SlackStandIn(scopes=standin.scopes - {"chat:write.public"}) as without_the_scope:
        elsewhere = without_the_scope.create_channel("no-bot-here", ["U0ALICE"])
        assert error_code(lambda: WebClient(token="xoxb-standin", base_url=without_the_scope.api_url)
                          .chat_postMessage(channel=elsewhere["id"], text="hi")) == "not_in_channel"
    assert error_code(lambda: client.chat_postMessage(channel="C0NOPE", text="hi")) == "channel_not_found"
    with pytest.warns(UserWarning, match="`text` argument is missing"):  # slack_sdk warns too
        assert error_code(lambda: client.chat_postMessage(channel="C0INCIDENTS", text="")) == "no_text"
    posted = client.chat_postMessage(channel="#incidents", text="Incident declared")
    assert posted["channel"] == "C0INCIDENTS" and posted["message"]["bot_id"] == "B0WARROOM"
    assert standin.messages("incidents")[-1]["text"] == "Incident declared"


def test_message_limits(client):
    assert error_code(lambda: client.chat_postMessage(channel="C0INCIDENTS", text="x" * 40_001)) == "msg_too_long"
    divider = {"type": "divider"}
    assert error_code(lambda: client.chat_postMessage(channel="C0INCIDENTS", text="t", blocks=[divider] * 51)) \
        == "invalid_blocks"
    long_section = {"type": "section", "text": {"type": "mrkdwn", "text": "y" * 3001}}
    refused = slack_error(lambda: client.chat_postMessage(channel="C0INCIDENTS", text="t", blocks=[long_section]))
    assert refused.response["error"] == "invalid_blocks"
    assert "/blocks/0/text/text" in refused.response["errors"][0]


def test_history_is_newest_first_and_windowed(client):
    stamps = [client.chat_postMessage(channel="C0GENERAL", text=f"update {n}")["ts"] for n in range(4)]
    assert stamps == sorted(stamps, key=float) and len(set(stamps)) == 4
    history = client.conversations_history(channel="C0GENERAL")["messages"]
    assert [m["text"] for m in history] == ["update 3", "update 2", "update 1", "update 0"]
    window = client.conversations_history(channel="C0GENERAL", oldest=stamps[0], latest=stamps[2])["messages"]
    assert [m["ts"] for m in window] == [stamps[1]]
    first_page = client.conversations_history(channel="C0GENERAL", limit=3)
    assert first_page["has_more"] is True
    rest = client.conversations_history(channel="C0GENERAL", limit=3,
                                        cursor=first_page["response_metadata"]["next_cursor"])
    assert [m["text"] for m in rest["messages"]] == ["update 0"]


def test_history_window_bounds_and_bad_timestamps(client):
    stamps = [client.chat_postMessage(channel="C0GENERAL", text=f"event {n}")["ts"] for n in range(3)]
    inclusive = client.conversations_history(channel="C0GENERAL", oldest=stamps[0], latest=stamps[2],
                                             inclusive=True)
    assert [m["ts"] for m in inclusive["messages"]] == stamps[::-1] and inclusive["has_more"] is False
    newest = client.conversations_history(channel="C0GENERAL", oldest=stamps[0], limit=1)
    assert [m["ts"] for m in newest["messages"]] == [stamps[2]] and newest["has_more"] is True
    assert error_code(lambda: client.conversations_history(channel="C0GENERAL", latest="NaN")) \
        == "invalid_ts_latest"
    assert error_code(lambda: client.conversations_history(channel="C0GENERAL", oldest="soon")) \
        == "invalid_ts_oldest"


def test_threads_and_replies(client, standin):
    parent = client.chat_postMessage(channel="C0INCIDENTS", text="timeline")["ts"]
    SlackSimulator(standin, "http://127.0.0.1:9/unused", SIGNING_SECRET).post_message(
        "U0ALICE", "C0INCIDENTS", "rolled back", thread_ts=parent)
    replies = client.conversations_replies(channel="C0INCIDENTS", ts=parent)["messages"]
    assert [m["text"] for m in replies] == ["timeline", "rolled back"]
    assert [m["text"] for m in client.conversations_history(channel="C0INCIDENTS")["messages"]] == ["timeline"]
    assert error_code(lambda: client.conversations_replies(channel="C0INCIDENTS", ts="1.000001")) == "thread_not_found"


def test_update_only_own_messages(client, standin):
    ts = client.chat_postMessage(channel="C0INCIDENTS", text="status: investigating")["ts"]
    client.chat_update(channel="C0INCIDENTS", ts=ts, text="status: mitigated")
    assert standin.message("C0INCIDENTS", ts)["text"] == "status: mitigated"
    human_ts = standin.post_as_user("U0BOB", "C0INCIDENTS", "mine")["ts"]
    assert error_code(lambda: client.chat_update(channel="C0INCIDENTS", ts=human_ts, text="x")) \
        == "cant_update_message"
    assert error_code(lambda: client.chat_update(channel="C0INCIDENTS", ts="1.000002", text="x")) \
        == "message_not_found"


def test_ephemeral_needs_the_user_in_the_channel(client, standin):
    outside = standin.create_channel("bot-and-alice", [BOT_USER_ID, "U0ALICE"])
    assert client.chat_postEphemeral(channel=outside["id"], user="U0ALICE", text="only you")["message_ts"]
    assert error_code(lambda: client.chat_postEphemeral(channel=outside["id"], user="U0BOB", text="x")) \
        == "user_not_in_channel"
    assert [e["text"] for e in standin.ephemerals(user="U0ALICE")] == ["only you"]


def test_pins_and_reactions(client, standin):
    ts = client.chat_postMessage(channel="C0INCIDENTS", text="Root cause found")["ts"]
    client.pins_add(channel="C0INCIDENTS", timestamp=ts)
    assert error_code(lambda: client.pins_add(channel="C0INCIDENTS", timestamp=ts)) == "already_pinned"
    assert error_code(lambda: client.pins_add(channel="C0INCIDENTS", timestamp="1.000003")) == "message_not_found"
    assert error_code(lambda: client.pins_add(channel="C0INCIDENTS")) == "no_item_specified"
    assert [item["message"]["ts"] for item in client.pins_list(channel="C0INCIDENTS")["items"]] == [ts]
    assert [p["ts"] for p in standin.pins("incidents")] == [ts]
    client.reactions_add(channel="C0INCIDENTS", timestamp=ts, name="eyes")
    assert error_code(lambda: client.reactions_add(channel="C0INCIDENTS", timestamp=ts, name="eyes")) \
        == "already_reacted"
    assert standin.message("C0INCIDENTS", ts)["reactions"] == [{"name": "eyes", "users": [BOT_USER_ID], "count": 1}]


def test_permalink_and_users(client):
    ts = client.chat_postMessage(channel="C0INCIDENTS", text="x")["ts"]
    permalink = client.chat_getPermalink(channel="C0INCIDENTS", message_ts=ts)["permalink"]
    assert permalink.endswith(f"/archives/C0INCIDENTS/p{ts.replace('.', '')}")
    assert client.users_info(user="U0CAROL")["user"]["tz"] == "Asia/Tokyo"
    assert error_code(lambda: client.users_info(user="U0GHOST")) == "user_not_found"


# ------------------------------------------------------- direct messages
def test_posting_to_a_user_id_lands_in_the_bots_dm(client, standin):
    posted = client.chat_postMessage(channel="U0ALICE", text="You are incident lead")
    dm_id = posted["channel"]
    assert dm_id.startswith("D") and posted["message"]["text"] == "You are incident lead"
    client.chat_postMessage(channel="U0ALICE", text="Second note")
    client.chat_postMessage(channel=dm_id, text="By channel id")
    assert [m["text"] for m in standin.dm_messages("U0ALICE")] == ["You are incident lead", "Second note",
                                                                   "By channel id"]
    assert standin.messages(dm_id) == standin.dm_messages("U0ALICE")
    assert standin.dm_messages("U0BOB") == []
    assert [(im["id"], im["user"], im["members"], im["is_im"]) for im in standin.ims()] \
        == [(dm_id, "U0ALICE", [BOT_USER_ID, "U0ALICE"], True)]
    assert {c["id"] for c in standin.channels()} == {"C0INCIDENTS", "C0GENERAL"}  # rooms only
    history = client.conversations_history(channel=dm_id)["messages"]
    assert [m["text"] for m in history] == ["By channel id", "Second note", "You are incident lead"]
    info = client.conversations_info(channel=dm_id)["channel"]
    assert (info["is_im"], info["user"], "name" in info) == (True, "U0ALICE", False)
    assert error_code(lambda: client.conversations_setTopic(channel=dm_id, topic="x")) \
        == "method_not_supported_for_channel_type"
    assert error_code(lambda: client.conversations_invite(channel=dm_id, users="U0BOB")) \
        == "method_not_supported_for_channel_type"


def test_conversations_open_is_idempotent(client, standin):
    first = client.conversations_open(users="U0BOB")
    assert set(first.data) == {"ok", "channel"} and first["channel"]["id"].startswith("D")
    again = client.conversations_open(users="U0BOB")
    assert again.data == {"ok": True, "no_op": True, "already_open": True, "channel": first["channel"]}
    full = client.conversations_open(users="U0BOB", return_im=True)["channel"]
    assert (full["id"], full["is_im"], full["user"]) == (first["channel"]["id"], True, "U0BOB")
    resumed = client.conversations_open(channel=first["channel"]["id"])
    assert resumed["channel"]["id"] == first["channel"]["id"]
    assert client.chat_postMessage(channel="U0BOB", text="hi")["channel"] == first["channel"]["id"]
    assert [im["user"] for im in standin.ims()] == ["U0BOB"]
    assert error_code(lambda: client.conversations_open(channel="C0GENERAL")) \
        == "method_not_supported_for_channel_type"
    assert error_code(lambda: client.api_call("conversations.open")) == "users_list_not_supplied"
    # The id is the same after a reset: stable per user.
    standin.reset()
    assert client.conversations_open(users="U0BOB")["channel"]["id"] == first["channel"]["id"]


def test_unknown_user_has_no_dm(client, standin):
    assert error_code(lambda: client.chat_postMessage(channel="U0NOBODY", text="hi")) == "channel_not_found"
    assert error_code(lambda: client.chat_postMessage(channel="W0NOBODY", text="hi")) == "channel_not_found"
    assert error_code(lambda: client.conversations_open(users="U0NOBODY")) == "user_not_found"
    # Only chat.postMessage reads a user id as "the DM with them"; history wants the D id.
    assert error_code(lambda: client.conversations_history(channel="U0ALICE")) == "channel_not_found"
    assert standin.ims() == []


# ------------------------------------------------------------------ metadata
INCIDENT_METADATA = {"event_type": "incident_declared", "event_payload": {"id": "inc-42", "severity": 1}}


def test_metadata_is_stored_and_returned_only_on_request(client, standin):
    ts = client.chat_postMessage(channel="C0INCIDENTS", text="Declared", metadata=INCIDENT_METADATA)["ts"]
    assert standin.message("C0INCIDENTS", ts)["metadata"] == INCIDENT_METADATA
    assert "metadata" not in client.conversations_history(channel="C0INCIDENTS")["messages"][0]
    with_metadata = client.conversations_history(channel="C0INCIDENTS", include_all_metadata=True)
    assert with_metadata["messages"][0]["metadata"] == INCIDENT_METADATA
    replies = client.conversations_replies(channel="C0INCIDENTS", ts=ts, include_all_metadata=True)
    assert replies["messages"][0]["metadata"] == INCIDENT_METADATA
    # Form encoding carries it as a JSON string.
    form = requests.post(standin.api_url + "chat.postMessage", headers={"Authorization": "Bearer xoxb-standin"},
                         data={"channel": "U0DAVE", "text": "dm", "metadata": json.dumps(INCIDENT_METADATA)}).json()
    assert form["ok"] and standin.dm_messages("U0DAVE")[0]["metadata"] == INCIDENT_METADATA


def test_chat_update_keeps_replaces_or_clears_metadata(client, standin):
    ts = client.chat_postMessage(channel="C0INCIDENTS", text="v1", metadata=INCIDENT_METADATA)["ts"]
    client.chat_update(channel="C0INCIDENTS", ts=ts, text="v2")
    assert standin.message("C0INCIDENTS", ts)["metadata"] == INCIDENT_METADATA
    resolved = {"event_type": "incident_resolved", "event_payload": {"id": "inc-42"}}
    client.chat_update(channel="C0INCIDENTS", ts=ts, text="v3", metadata=resolved)
    assert standin.message("C0INCIDENTS", ts)["metadata"] == resolved
    client.chat_update(channel="C0INCIDENTS", ts=ts, text="v4", metadata={})
    assert "metadata" not in standin.message("C0INCIDENTS", ts)


@pytest.mark.parametrize("metadata", [
    "{not json",
    [INCIDENT_METADATA],
    {"event_payload": {"id": "inc-42"}},
    {"event_type": 7, "event_payload": {}},
    {"event_type": " ", "event_payload": {}},
    {"event_type": "incident_declared"},
    {"event_type": "incident_declared", "event_payload": "inc-42"},
])
def test_malformed_metadata_is_refused(client, standin, metadata):
    assert error_code(lambda: client.chat_postMessage(channel="C0INCIDENTS", text="x", metadata=metadata)) \
        == "invalid_metadata_format"
    ts = client.chat_postMessage(channel="C0INCIDENTS", text="ok")["ts"]
    assert error_code(lambda: client.chat_update(channel="C0INCIDENTS", ts=ts, text="y", metadata=metadata)) \
        == "invalid_metadata_format"
    assert [m["text"] for m in standin.messages("C0INCIDENTS")] == ["ok"]  # nothing stored or changed


# ------------------------------------------------------------------ mentions
def test_mentions_are_recorded_not_escaped(client, standin):
    client.chat_postMessage(channel="C0INCIDENTS", text="user typed &lt;!channel&gt; and @here")
    client.chat_postMessage(channel="C0INCIDENTS", text="paging <!here|here> and <@U0BOB>", blocks=[
        {"type": "section", "text": {"type": "mrkdwn", "text": "lead: <@U0ALICE|alice>"}},
        {"type": "section", "text": {"type": "plain_text", "text": "<!everyone> is plain text"}},
    ])
    client.chat_postMessage(channel="C0INCIDENTS", text="@here", link_names=True)
    escaped, paging, linked = standin.messages("C0INCIDENTS")[-3:]
    assert escaped["mentions"] == []
    assert paging["mentions"] == ["<!here>", "<@U0BOB>", "<@U0ALICE>"]
    assert linked["mentions"] == ["<!here>"]


# ---------------------------------------------------------- fault injection
def test_rate_limit_is_a_429_with_retry_after(client, standin):
    standin.fail_next("chat.postMessage", retry_after=7)
    refused = slack_error(lambda: client.chat_postMessage(channel="C0INCIDENTS", text="x"))
    assert refused.response.status_code == 429
    assert refused.response.headers["Retry-After"] == "7"
    assert refused.response["error"] == "ratelimited"
    assert client.chat_postMessage(channel="C0INCIDENTS", text="x")["ok"] is True


def test_retry_handler_recovers_from_rate_limit(standin):
    retrying = WebClient(token="xoxb-standin", base_url=standin.api_url,
                         retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=2)])
    standin.fail_next("chat.postMessage", retry_after=0, times=2)
    assert retrying.chat_postMessage(channel="C0INCIDENTS", text="eventually")["ok"] is True
    statuses = [call["http_status"] for call in standin.calls("chat.postMessage")]
    assert statuses == [429, 429, 200]
    assert [m["text"] for m in standin.messages("C0INCIDENTS")] == ["eventually"]


def test_other_faults_and_delay(client, standin):
    standin.fail_next("auth.test", status=500)
    assert slack_error(client.auth_test).response.status_code == 500
    standin.fail_next("auth.test", error="fatal_error")
    refused = slack_error(client.auth_test)
    assert (refused.response.status_code, refused.response["error"]) == (200, "fatal_error")
    standin.delay("auth.test", 0.3)
    started = time.monotonic()
    assert client.auth_test()["ok"] is True
    assert time.monotonic() - started >= 0.3


# -------------------------------------------------------------- file uploads
TIMELINE = "# INC-42 timeline\n14:05 Zoë — 東京 ✓ failover started\n"


def upload_bytes(client, standin, content: bytes, filename: str = "timeline.md") -> str:
    """Steps 1 and 2 of the external upload by hand; the file id, not yet completed."""
    ticket = client.files_getUploadURLExternal(filename=filename, length=len(content))
    posted = requests.post(ticket["upload_url"], data=content)
    assert (posted.status_code, posted.text) == (200, f"OK - {len(content)}")
    return ticket["file_id"]


def test_upload_v2_lands_in_the_channel_with_its_bytes_intact(client, standin):
    uploaded = client.files_upload_v2(channel="C0INCIDENTS", filename="inc-42.md", content=TIMELINE,
                                      title="INC-42 timeline", initial_comment="Timeline for <@U0ALICE>")
    file_id = uploaded["file"]["id"]
    assert file_id.startswith("F") and uploaded["files"][0]["title"] == "INC-42 timeline"
    assert [c["method"] for c in standin.calls()] == ["files.getUploadURLExternal", "upload",
                                                     "files.completeUploadExternal"]
    assert standin.calls("upload")[0]["args"] == {"file_id": file_id, "bytes": len(TIMELINE.encode())}
    [shared] = standin.files("incidents")
    assert shared["content"] == TIMELINE.encode("utf-8") and shared["content"].decode() == TIMELINE
    assert (shared["id"], shared["name"], shared["title"]) == (file_id, "inc-42.md", "INC-42 timeline")
    assert shared["size"] == shared["length"] == len(TIMELINE.encode("utf-8")) != len(TIMELINE)
    assert (shared["channels"], shared["initial_comment"]) == (["C0INCIDENTS"], "Timeline for <@U0ALICE>")
    # In the channel it is one file_share message by the bot, the comment as its text.
    message = standin.message("C0INCIDENTS", shared["message_ts"])
    assert (message["text"], message["user"], message["bot_id"], message["subtype"]) \
        == ("Timeline for <@U0ALICE>", BOT_USER_ID, "B0WARROOM", "file_share")
    assert message["mentions"] == ["<@U0ALICE>"]
    [in_message] = message["files"]
    assert (in_message["id"], in_message["name"], in_message["size"]) == (file_id, "inc-42.md", shared["size"])
    assert in_message["channels"] == ["C0INCIDENTS"] and "content" not in in_message
    history = client.conversations_history(channel="C0INCIDENTS")["messages"]
    assert [(m["text"], [f["id"] for f in m["files"]]) for m in history] == [("Timeline for <@U0ALICE>", [file_id])]
    assert standin.files("C0GENERAL") == []


def test_upload_into_a_thread_a_dm_and_without_a_comment(client, standin):
    parent = client.chat_postMessage(channel="C0INCIDENTS", text="INC-42 declared")["ts"]
    client.files_upload_v2(channel="C0INCIDENTS", thread_ts=parent, filename="notes.txt", content=b"\x00\xffraw",
                           initial_comment="Exported")
    replies = client.conversations_replies(channel="C0INCIDENTS", ts=parent)["messages"]
    assert [m["text"] for m in replies] == ["INC-42 declared", "Exported"]
    assert replies[1]["files"][0]["name"] == "notes.txt" and replies[0]["reply_count"] == 1
    assert [m["text"] for m in client.conversations_history(channel="C0INCIDENTS")["messages"]] \
        == ["INC-42 declared"]
    assert standin.files("C0INCIDENTS")[0]["content"] == b"\x00\xffraw"
    dm_id = client.conversations_open(users="U0BOB")["channel"]["id"]
    client.files_upload_v2(channel=dm_id, filename="for-bob.csv", content="a,b\n")
    [message] = standin.dm_messages("U0BOB")
    assert message["text"] == "" and message["files"][0]["title"] == "for-bob.csv"  # title defaults to the name
    assert standin.files(dm_id)[0]["message_ts"] == message["ts"]


def test_upload_to_a_channel_the_bot_cannot_post_in_is_refused(client, standin):
    outside = standin.create_channel("people-only", ["U0ALICE"])
    assert error_code(lambda: client.files_upload_v2(channel=outside["id"], filename="a.txt", content="x")) \
        == "not_in_channel"
    assert error_code(lambda: client.files_upload_v2(channel="C0NOPE", filename="a.txt", content="x")) \
        == "channel_not_found"
    hidden = standin.create_channel("secret", ["U0ALICE"], is_private=True)
    assert error_code(lambda: client.files_upload_v2(channel=hidden["id"], filename="a.txt", content="x")) \
        == "channel_not_found"
    # channel_id takes a conversation id only, as Slack checks: not a user id or a #name.
    for not_an_id in ("U0ALICE", "#incidents"):
        refused = slack_error(lambda ref=not_an_id: client.files_upload_v2(channel=ref, filename="a.txt", content="x"))
        assert refused.response["error"] == "invalid_arguments"
        assert "[json-pointer:/channel_id]" in refused.response["response_metadata"]["messages"][0]
    # Refused completions share nothing and leave the uploads pending.
    assert standin.messages(outside["id"]) == [] and standin.files(outside["id"]) == []
    assert [(f["uploaded"], f["completed"]) for f in standin.files()] == [(True, False)] * 5


def test_complete_refuses_files_it_has_no_bytes_for(client, standin):
    assert error_code(lambda: client.files_completeUploadExternal(files=[{"id": "F0NOPE"}],
                                                                  channel_id="C0INCIDENTS")) == "file_not_found"
    ticket = client.files_getUploadURLExternal(filename="empty-handed.txt", length=3)
    assert error_code(lambda: client.files_completeUploadExternal(files=[{"id": ticket["file_id"]}],
                                                                  channel_id="C0INCIDENTS")) == "file_not_found"
    file_id = upload_bytes(client, standin, b"abc")
    # One unknown id refuses the whole call: the good file is not shared either.
    assert error_code(lambda: client.files_completeUploadExternal(
        files=[{"id": file_id}, {"id": "F0NOPE"}], channel_id="C0INCIDENTS")) == "file_not_found"
    assert standin.messages("C0INCIDENTS") == []
    client.files_completeUploadExternal(files=[{"id": file_id, "title": "ABC"}], channel_id="C0INCIDENTS")
    # The upload ticket is spent: completing again or re-posting bytes finds nothing.
    assert error_code(lambda: client.files_completeUploadExternal(files=[{"id": file_id}],
                                                                  channel_id="C0INCIDENTS")) == "file_not_found"
    auth = {"Authorization": "Bearer xoxb-standin"}
    for files in ("[{not json", "[]", json.dumps([{"title": "no id"}])):
        refused = requests.post(standin.api_url + "files.completeUploadExternal", headers=auth,
                                data={"files": files, "channel_id": "C0INCIDENTS"}).json()
        assert refused["error"] == "invalid_arguments" and "/files" in refused["response_metadata"]["messages"][0]
    assert [m["files"][0]["title"] for m in standin.messages("C0INCIDENTS")] == ["ABC"]


@pytest.mark.parametrize("args, error", [
    ({"filename": "a.txt"}, "invalid_arguments"),
    ({"length": 5}, "invalid_arguments"),
    ({"filename": "a.txt", "length": "five"}, "invalid_arguments"),
    ({"filename": "a.txt", "length": -5}, "invalid_arguments"),
    ({"filename": "a.txt", "length": 0}, "missing_argument"),
    ({"filename": "a.py", "length": 1024 ** 2 + 1, "snippet_type": "python"}, "snippet_too_large"),
    ({"filename": "huge.bin", "length": 1024 ** 3 + 1}, "file_upload_size_restricted"),
    ({"filename": "a.png", "length": 5, "alt_txt": "a" * 1001}, "alt_txt_too_large"),
])
def test_get_upload_url_refusals(client, standin, args, error):
    assert error_code(lambda: client.api_call("files.getUploadURLExternal", params=args)) == error
    assert standin.files() == []


def test_upload_url_takes_raw_bytes_or_a_multipart_file(client, standin):
    ticket = client.files_getUploadURLExternal(filename="data.bin", length=6)
    binary = b"\r\n--\x00\xff"
    as_form = requests.post(ticket["upload_url"], files={"filename": ("data.bin", binary)})
    assert (as_form.status_code, as_form.text) == (200, "OK - 6")
    assert standin.files()[0]["content"] == binary
    assert requests.post(ticket["upload_url"], files={"file": ("data.bin", b"second")}).text == "OK - 6"
    assert standin.files()[0]["content"] == b"second"
    assert requests.post(standin.base_url + "/upload/v1/made-up", data=b"x").status_code == 404
    assert requests.get(ticket["upload_url"]).status_code == 405
    assert [c["http_status"] for c in standin.calls("upload")] == [200, 200, 404]


def test_faults_on_the_upload_methods(client, standin):
    standin.fail_next("files.getUploadURLExternal", retry_after=3)
    refused = slack_error(lambda: client.files_upload_v2(channel="C0INCIDENTS", filename="a.txt", content="x"))
    assert (refused.response.status_code, refused.response["error"]) == (429, "ratelimited")
    assert standin.files() == []
    standin.fail_next("files.completeUploadExternal", status=500)
    refused = slack_error(lambda: client.files_upload_v2(channel="C0INCIDENTS", filename="a.txt", content="x"))
    assert (refused.response.status_code, refused.response["error"]) == (500, "fatal_error")
    assert standin.messages("C0INCIDENTS") == [] and standin.files("C0INCIDENTS") == []
    # A client that retries server errors gets the file shared once.
    retrying = WebClient(token="xoxb-standin", base_url=standin.api_url, retry_handlers=[
        ServerErrorRetryHandler(max_retry_count=1, interval_calculator=FixedValueRetryIntervalCalculator(0))])
    standin.fail_next("files.completeUploadExternal", status=500)
    assert retrying.files_upload_v2(channel="C0INCIDENTS", filename="b.txt", content="y")["file"]["name"] == "b.txt"
    assert [c["http_status"] for c in standin.calls("files.completeUploadExternal")] == [500, 500, 200]
    assert [f["name"] for f in standin.files("C0INCIDENTS")] == ["b.txt"]
    assert len(standin.messages("C0INCIDENTS")) == 1


def test_an_upload_that_is_not_completed_or_not_shared_shows_nowhere(client, standin):
    pending = upload_bytes(client, standin, "Zoë — 東京 ✓".encode())
    [upload] = standin.files()
    assert (upload["id"], upload["content"].decode(), upload["completed"]) == (pending, "Zoë — 東京 ✓", False)
    assert (upload["channels"], upload["message_ts"], upload["file"]) == ([], None, None)
    assert standin.files("C0INCIDENTS") == [] and standin.messages("C0INCIDENTS") == []
    # Completed without a channel, the file is private to the bot: stored, in no channel.
    private = upload_bytes(client, standin, b"private", filename="private.txt")
    assert client.files_completeUploadExternal(files=[{"id": private}])["files"][0]["id"] == private
    assert [(f["id"], f["completed"], f["channels"]) for f in standin.files()] \
        == [(pending, False, []), (private, True, [])]
    assert all(standin.messages(c["id"]) == [] for c in standin.channels()) and standin.ims() == []


def test_uploads_in_state_and_reset(client, standin):
    client.files_upload_v2(channel="C0GENERAL", filename="a.txt", content="Zoë")
    [state_file] = requests.get(standin.base_url + "/_standin/state").json()["files"]
    assert state_file["name"] == "a.txt" and state_file["content_base64"] == "Wm/Dqw=="
    ticket = client.files_getUploadURLExternal(filename="b.txt", length=1)
    standin.reset()
    assert standin.files() == []
    assert requests.post(ticket["upload_url"], data=b"x").status_code == 404


# --------------------------------------------------------------------- views
def test_views_open_honours_triggers(client, standin):
    trigger = standin.issue_trigger("U0ALICE")
    view = client.views_open(trigger_id=trigger, view=MODAL)["view"]
    assert view["id"].startswith("V") and view["callback_id"] == "declare_incident"
    assert standin.views()[0]["user"] == "U0ALICE"
    assert error_code(lambda: client.views_open(trigger_id=trigger, view=MODAL)) == "exchanged_trigger_id"
    assert error_code(lambda: client.views_open(trigger_id="1.2.made-up", view=MODAL)) == "invalid_trigger_id"


def test_views_open_rejects_expired_trigger_and_bad_views(client, standin, monkeypatch):
    bad = {**MODAL, "type": "home"}
    refused = slack_error(lambda: client.views_open(trigger_id=standin.issue_trigger("U0BOB"), view=bad))
    assert refused.response["error"] == "invalid_arguments"
    too_many = {**MODAL, "blocks": [{"type": "divider"}] * 101}
    assert error_code(lambda: client.views_open(trigger_id=standin.issue_trigger("U0BOB"), view=too_many)) \
        == "invalid_arguments"
    monkeypatch.setattr(standin, "TRIGGER_TTL_SECONDS", 0.05)
    stale = standin.issue_trigger("U0BOB")
    time.sleep(0.1)
    assert error_code(lambda: client.views_open(trigger_id=stale, view=MODAL)) == "expired_trigger_id"


def test_views_update_and_push(client, standin):
    root = client.views_open(trigger_id=standin.issue_trigger("U0DAVE"), view=MODAL)["view"]
    updated = client.views_update(view_id=root["id"], hash=root["hash"],
                                  view={**MODAL, "title": {"type": "plain_text", "text": "Step 2"}})["view"]
    assert (updated["id"], updated["title"]["text"]) == (root["id"], "Step 2")
    assert error_code(lambda: client.views_update(view_id=root["id"], hash=root["hash"], view=MODAL)) \
        == "hash_conflict"
    assert error_code(lambda: client.views_update(view_id="V0NOPE", view=MODAL)) == "not_found"
    pushed = client.views_push(trigger_id=standin.issue_trigger("U0DAVE"), view=MODAL)["view"]
    assert (pushed["root_view_id"], pushed["previous_view_id"]) == (root["id"], root["id"])


# -------------------------------------------------------------- response_url
def test_response_url_ephemeral_and_in_channel(standin):
    token = standin.issue_response_url("U0CAROL", "C0INCIDENTS")
    url = standin.response_url(token)
    private = requests.post(url, json={"text": "Only Carol sees this"})
    public = requests.post(url, json={"text": "Incident declared", "response_type": "in_channel"})
    assert (private.status_code, private.text, public.text) == (200, "ok", "ok")
    assert [e["text"] for e in standin.ephemerals(user="U0CAROL", channel="incidents")] == ["Only Carol sees this"]
    assert standin.messages("C0INCIDENTS")[-1]["text"] == "Incident declared"
    assert standin.messages("C0INCIDENTS")[-1]["bot_id"] == "B0WARROOM"
    assert len(standin.responses()) == 2
    assert requests.post(standin.response_url("unknown"), json={"text": "x"}).status_code == 404


# -------------------------------------------------------- inspection & reset
def test_state_over_http_and_reset(client, standin):
    client.conversations_create(name="inc-state")
    state = requests.get(standin.base_url + "/_standin/state").json()
    assert "inc-state" in [c["name"] for c in state["channels"]]
    assert [c["method"] for c in state["calls"]] == ["conversations.create"]
    standin.reset()
    assert standin.channel("inc-state") is None and standin.calls() == []
    assert {c["id"] for c in standin.channels()} == {"C0INCIDENTS", "C0GENERAL"}


# ---------------------------------------------------------------- simulator
class _Receiver:
    """A throwaway 'bot' that records what Slack sent and checks its signature."""

    def __init__(self):
        self.requests: list[dict] = []
        self.reply: tuple[int, str] = (200, "")
        verifier = SignatureVerifier(SIGNING_SECRET)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                headers = dict(self.headers.items())
                receiver.requests.append({"headers": headers, "body": body,
                                          "signature_valid": verifier.is_valid_request(body, headers)})
                status, text = receiver.reply
                if '"url_verification"' in body:  # answer the handshake as a Bolt app does
                    status, text = 200, json.dumps({"challenge": json.loads(body)["challenge"]})
                self.send_response(status)
                self.send_header("Content-Type", "application/json" if text.startswith("{") else "text/plain")
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text.encode())

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/slack/events"

    @property
    def last(self) -> dict:
        return self.requests[-1]


@pytest.fixture
def receiver():
    running = _Receiver()
    yield running
    running.server.shutdown()
    running.server.server_close()


@pytest.fixture
def simulator(standin, receiver):
    return SlackSimulator(standin, receiver.url, SIGNING_SECRET)


def test_command_arrives_signed_and_shaped(simulator, receiver, client, standin):
    receiver.reply = (200, "")
    result = simulator.command("U0ALICE", "C0INCIDENTS", "declare checkout is down")
    assert result.status == 200 and receiver.last["signature_valid"]
    assert receiver.last["headers"]["Content-Type"] == "application/x-www-form-urlencoded"
    form = {k: v[0] for k, v in parse_qs(receiver.last["body"]).items()}
    assert form["command"] == "/incident" and form["text"] == "declare checkout is down"
    assert (form["user_id"], form["user_name"], form["channel_name"]) == ("U0ALICE", "alice", "incidents")
    assert form["response_url"] == standin.response_url(result.response_url_token)
    # The trigger really is usable for a modal, as the bot will do.
    assert client.views_open(trigger_id=form["trigger_id"], view=MODAL)["view"]["id"]


def test_a_command_from_a_dm_names_it_as_slack_does(simulator, receiver, client):
    dm_id = client.conversations_open(users="U0CAROL")["channel"]["id"]
    simulator.command("U0CAROL", dm_id, "help")
    form = {k: v[0] for k, v in parse_qs(receiver.last["body"]).items()}
    assert (form["channel_id"], form["channel_name"]) == (dm_id, "directmessage")


def test_reaction_event_arrives_signed_and_replayable(simulator, receiver, client, standin):
    ts = client.chat_postMessage(channel="C0INCIDENTS", text="DB failover started")["ts"]
    first = simulator.react("U0BOB", "C0INCIDENTS", ts)
    envelope = json.loads(receiver.last["body"])
    assert receiver.last["signature_valid"] and first.status == 200
    assert envelope["type"] == "event_callback" and envelope["event_id"] == first.event_id
    assert envelope["event"] == {"type": "reaction_added", "user": "U0BOB", "reaction": "pushpin",
                                 "item_user": BOT_USER_ID, "item": {"type": "message", "channel": "C0INCIDENTS",
                                                                    "ts": ts},
                                 "event_ts": envelope["event"]["event_ts"]}
    schema = build_method_table.DEFAULT_SPEC.parents[1] / "events-api" / "slack_common_event_wrapper_schema.json"
    required = json.loads(schema.read_text())["required"] if schema.exists() else ["type", "event_id", "event"]
    assert set(required) <= set(envelope)
    simulator.react("U0BOB", "C0INCIDENTS", ts, event_id=first.event_id, retry_num=1)
    assert receiver.last["headers"]["X-Slack-Retry-Num"] == "1"
    assert json.loads(receiver.last["body"])["event_id"] == first.event_id
    assert standin.message("C0INCIDENTS", ts)["reactions"][0]["users"] == ["U0BOB"]
    simulator.unreact("U0BOB", "C0INCIDENTS", ts)
    assert json.loads(receiver.last["body"])["event"]["type"] == "reaction_removed"
    assert "reactions" not in standin.message("C0INCIDENTS", ts) or not standin.message("C0INCIDENTS", ts)["reactions"]


def test_view_submission_arrives_signed_and_shaped(simulator, receiver, client, standin):
    view_id = client.views_open(trigger_id=standin.issue_trigger("U0ALICE"), view=MODAL)["view"]["id"]
    with pytest.raises(ValueError, match="required"):
        simulator.submit_view("U0ALICE", view_id, {"title_input": "Checkout down"})
    result = simulator.submit_view("U0ALICE", view_id, {
        "title_input": "Checkout down", "severity_select": "sev1", "lead_select": "U0BOB"})
    assert result.status == 200 and receiver.last["signature_valid"]
    payload = json.loads(parse_qs(receiver.last["body"])["payload"][0])
    assert payload["type"] == "view_submission" and payload["user"]["id"] == "U0ALICE"
    assert payload["view"]["id"] == view_id and payload["view"]["private_metadata"] == "C0INCIDENTS"
    assert payload["view"]["state"]["values"] == {
        "title": {"title_input": {"type": "plain_text_input", "value": "Checkout down"}},
        "severity": {"severity_select": {"type": "static_select", "selected_option": {
            "text": {"type": "plain_text", "text": "SEV1"}, "value": "sev1"}}},
        "lead": {"lead_select": {"type": "users_select", "selected_user": "U0BOB"}},
        "notes": {"notes_input": {"type": "plain_text_input", "value": None}},
    }
    assert standin.view(view_id)["closed"] is True  # an empty ack closes the modal


def test_click_url_verification_and_forged_requests(simulator, receiver, client):
    ts = client.chat_postMessage(channel="C0INCIDENTS", text="x", blocks=[
        {"type": "actions", "block_id": "act", "elements": [
            {"type": "button", "action_id": "resolve", "value": "inc-1",
             "text": {"type": "plain_text", "text": "Resolve"}}]}])["ts"]
    simulator.click("U0CAROL", "C0INCIDENTS", ts, "resolve", "inc-1")
    payload = json.loads(parse_qs(receiver.last["body"])["payload"][0])
    assert receiver.last["signature_valid"] and payload["type"] == "block_actions"
    assert payload["actions"][0]["block_id"] == "act" and payload["container"]["message_ts"] == ts
    assert simulator.url_verification("abc").body == {"challenge": "abc"}
    simulator.send_raw("{}", "application/json", signature="v0=forged")
    assert receiver.last["signature_valid"] is False
    simulator.send_raw("{}", "application/json", timestamp=str(int(time.time()) - 600))
    assert receiver.last["signature_valid"] is False  # stale: outside Slack's 5-minute window
