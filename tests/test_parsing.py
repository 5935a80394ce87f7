"""The /incident parser: what people type, as Slack sends it (should_escape: true)."""

from __future__ import annotations

import pytest

from bot.errors import UsageError
from bot.render import render
from commands import parsing


def test_declare_with_and_without_a_severity():
    assert parsing.parse_declare("sev1 Support bot quoting a refund policy").model_dump() == {
        "title": "Support bot quoting a refund policy", "severity": 1, "summary": "", "driver": None, "failure_mode": None}
    assert parsing.parse_declare("SEV-2 drift").severity == 2
    assert parsing.parse_declare("Refund bot drift").severity == parsing.DEFAULT_SEVERITY


@pytest.mark.parametrize("text, fragment", [
    ("sev7 Model down", "`sev7` is not a severity"),
    ("sev1", "The title is missing"),
    ("", "The title is missing"),
    ("sev2 " + "x" * 151, "keep it to 150"),
])
def test_declare_refusals_say_what_to_type(text, fragment):
    with pytest.raises(UsageError) as caught:
        parsing.parse_declare(text)
    assert fragment in caught.value.message
    assert "/incident declare" in caught.value.hint


def test_role_needs_a_known_role_and_a_real_mention():
    assert parsing.parse_role("ic <@U0BOB|bob>").model_dump() == {"role": "ic", "user_id": "U0BOB"}
    assert parsing.parse_role("Privacy <@W0CAROL>").user_id == "W0CAROL"
    for text, fragment in [("boss <@U0BOB>", "not a role"), ("ic @bob", "not a mention"),
                           ("ic", "one role and one person"), ("ic <!channel>", "not a mention")]:
        with pytest.raises(UsageError) as caught:
            parsing.parse_role(text)
        assert fragment in caught.value.message


def test_entities_are_undone_and_links_shown_by_name():
    text = "Roll back &lt;v14&gt; &amp; ask <@U0BOB|bob> in <#C0ROOM|inc-1> see <https://x.test/a|trace>"
    assert parsing.human_text(text) == "Roll back <v14> & ask @bob in #inc-1 see trace (https://x.test/a)"


def test_entry_limits_count_escaped_characters():
    assert parsing.parse_entry("decision", "x" * 2500).text == "x" * 2500
    with pytest.raises(UsageError, match="too long"):
        parsing.parse_entry("note", "&lt;" * 700)
    with pytest.raises(UsageError, match="decision is missing"):
        parsing.parse_entry("decision", "   ")


def test_status_and_sev():
    assert parsing.parse_status("contained rolled back to v13").model_dump() == {
        "status": "contained", "note": "rolled back to v13", "force_reason": None}
    assert parsing.parse_status("resolved force: false alarm").force_reason == "false alarm"
    assert parsing.parse_sev("1 PII in answers").model_dump() == {"severity": 1, "reason": "PII in answers"}
    with pytest.raises(UsageError, match="not a status"):
        parsing.parse_status("fixed")
    with pytest.raises(UsageError, match="not a severity"):
        parsing.parse_sev("0")


def test_rendered_user_text_cannot_mention_anyone():
    from datetime import datetime, timezone

    from bot.incidents import TimelineItem

    entry = TimelineItem(id=1, kind="decision", actor_id="U0ALICE", old_value=None, new_value=None,
                         text="<!channel> <@U0BOB> <http://evil|click> & co", source="command", source_ref=None,
                         occurred_at=datetime(2026, 11, 23, 18, 0, tzinfo=timezone.utc))
    text = render("timeline_entry_logged.slack.j2", entry=entry)
    assert "<@U0ALICE>" in text  # the bot's own, validated mention
    assert "&lt;!channel&gt; &lt;@U0BOB&gt; &lt;http://evil|click&gt; &amp; co" in text
    assert "<!channel>" not in text and "<@U0BOB>" not in text


def test_text_is_cut_to_fit_a_section_once_escaped():
    from bot.render import escape_mrkdwn, fit_escaped

    assert fit_escaped("short", 10) == "short"
    cut = fit_escaped("<" * 1000, 100)
    assert len(escape_mrkdwn(cut)) <= 100 and cut.endswith("…")
