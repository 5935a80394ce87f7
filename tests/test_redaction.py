"""Redaction of secrets and personal data in war-room text (bot/redaction.py): no Slack, no database."""

from __future__ import annotations

import csv
import hashlib
import hmac
from pathlib import Path

import pytest

from bot.redaction import KINDS, Redacted, derive_key, fingerprint, normalise, redact

KEY = derive_key("test-signing-secret")
OTHER_KEY = derive_key("another-deployment")

AIID_CSV_CANDIDATES = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "aiid" / "incidents.csv",
    Path("/work/shared/data/aiid/incidents.csv"),
)

JWT = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ"
       ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c")
PRIVATE_KEY = ("-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7VJTUt9Us8cKjMzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6d\n"
               "VMvDuictGeurT8jNbvJZHtCSuYEvuNMoSfm76oqFvAp8Gy0iz5sxjZmSnXyCdPEo\n-----END RSA PRIVATE KEY-----")

# (value as typed, kind): each must disappear wherever it sits in a sentence.
VALUES = [
    ("jane.doe+billing@example.co.uk", "email"),
    ("Bob.Smith@Example.com", "email"),
    ("+44 20 7946 0958", "phone_number"),
    ("+1-415-555-0100", "phone_number"),
    ("+49 (0)30 123456", "phone_number"),
    ("+14155550100", "phone_number"),
    ("(415) 555-0100", "phone_number"),
    ("415-555-0100", "phone_number"),
    ("415.555.0100", "phone_number"),
    ("4111 1111 1111 1111", "card_number"),
    ("5555-5555-5555-4444", "card_number"),
    ("378282246310005", "card_number"),
    ("3782 822463 10005", "card_number"),
    ("6011111111111117", "card_number"),
    ("sk-proj-Ab3dEf6hIj9kLmN0pQrStUvWxYz12345", "api_key"),
    ("sk-Ab3dEf6hIj9kLmN0pQrStUvWxYz1234567890abcdefGHIJ", "api_key"),
    ("sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_AbCdEf", "api_key"),
    ("AKIAIOSFODNN7EXAMPLE", "api_key"),
    ("ASIAY34FZKBOKMUTVV7A", "api_key"),
    ("AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY", "api_key"),
    ("sk_live_4eC39HqLyjWDarjtT1zdp7dc", "api_key"),
    ("rk_live_51H8sT2eZvKYlo2C0aBcDeFgH", "api_key"),
    ("pk_live_51H8sT2eZvKYlo2C0aBcDeFgH", "api_key"),
    ("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", "token"),
    ("gho_16C7e42F292c6912E7710c838347Ae178B4a", "token"),
    ("github_pat_11ABCDEFG0abcdefghijkl_mnopqrstuvwxyzABCDEF0123456789abcdefghijklmnopqrstuv", "token"),
    ("xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx", "token"),
    ("xoxp-123456789012-123456789012-1234567890123-0123456789abcdef0123456789abcdef", "token"),
    ("xapp-1-A0123456789-1234567890123-0123456789abcdef0123456789abcdef", "token"),
    (JWT, "token"),
    (PRIVATE_KEY, "private_key"),
    ("GB82 WEST 1234 5698 7654 32", "iban"),
    ("DE89370400440532013000", "iban"),
    ("123-45-6789", "ssn"),
]

TEMPLATES = [
    "{}",
    "{} was pasted into the room",
    "The bot replied with {}",
    "The bot replied with {}.",
    "Leaked: {}, {} and more",
    "({})",
    '"{}"',
    "'{}'!",
    "*{}*",
    "see {};\nrotating now",
]


@pytest.mark.parametrize("template", TEMPLATES)
@pytest.mark.parametrize("value, kind", VALUES, ids=[f"{kind}-{i}" for i, (_, kind) in enumerate(VALUES)])
def test_each_kind_is_redacted_anywhere_in_a_sentence(value, kind, template):
    text = template.format(value, value)
    result = redact(text, key=KEY)
    assert value not in result.text
    assert result.redacted
    assert result.kinds() == [kind]
    expected = f"[redacted {kind} {fingerprint(value, kind, key=KEY)[:6]}]"
    assert result.text == template.format(expected, expected)
    for found in result.findings:
        assert text[found.start:found.end] == value


# (sentence, the sensitive part, kind): labelled values, links and headers keep their context.
SENTENCES = [
    ("Customer wrote from <mailto:bob@example.com|bob@example.com> about the refund", "bob@example.com", "email"),
    ("Someone pasted OPENAI_API_KEY=sk-proj-Ab3dEf6hIj9kLmN0pQrStUvWxYz12345 in the channel",
     "sk-proj-Ab3dEf6hIj9kLmN0pQrStUvWxYz12345", "api_key"),
    ("env dump had aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY in it",
     "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "api_key"),
    ("curl -H 'Authorization: Bearer abc123DEF456ghi789JKL' https://api.example.com", "abc123DEF456ghi789JKL", "token"),
    ("header was Authorization: Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA==", "token"),
    ("webhook https://hooks.slack.com/services/T0001/B0001/XXXXXXXXXXXXXXXXXXXXXXXX posted it",
     "T0001/B0001/XXXXXXXXXXXXXXXXXXXXXXXX", "token"),
    ("DB_PASSWORD=Tr0ub4dor&3 was in the env dump", "Tr0ub4dor&3", "password"),
    ("the db password: hunter2! (rotated since)", "hunter2!", "password"),
    ('config had {"password": "correct horse battery staple"}', "correct horse battery staple", "password"),
    ('client_secret: "a8f5f167f44f4964e6c998dee827110c"', "a8f5f167f44f4964e6c998dee827110c", "secret"),
    ("api_key=9f8e7d6c5b4a3f2e1d0c from the staging config", "9f8e7d6c5b4a3f2e1d0c", "api_key"),
    ("export link <https://x.example/export?token=abc123def456ghi|export> was shared", "abc123def456ghi", "token"),
    ("https://x.example/?a=1&amp;session_token=abc123def456&amp;page=2", "abc123def456", "token"),
    ("connect with postgres://app:s3cr3t-pw@db.internal:5432/prod", "s3cr3t-pw", "password"),
    ("SLACK_BOT_TOKEN=xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
     "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx", "token"),
    ("The assistant quoted a caller: call me on 1-800-555-0199 after six", "1-800-555-0199", "phone_number"),
    ("Refund went to IBAN FR14 2004 1010 0505 0001 3M02 606 USD", "FR14 2004 1010 0505 0001 3M02 606", "iban"),
    ("user _jane@example.com_ reported it", "jane@example.com", "email"),
]


@pytest.mark.parametrize("text, secret, kind", SENTENCES)
def test_labelled_values_links_and_headers(text, secret, kind):
    result = redact(text, key=KEY)
    assert secret not in result.text
    assert result.kinds() == [kind]
    assert len(result.findings) == 1
    assert result.findings[0].placeholder in result.text


def test_labels_and_links_stay_readable():
    assert redact("DB_PASSWORD=Tr0ub4dor&3", key=KEY).text.startswith("DB_PASSWORD=[redacted password ")
    link = redact("<https://x.example/export?token=abc123def456ghi|export>", key=KEY).text
    assert link.startswith("<https://x.example/export?token=[redacted token ") and link.endswith("]|export>")
    url = redact("postgres://app:s3cr3t-pw@db.internal:5432/prod", key=KEY)
    assert url.kinds() == ["password"]  # the host is not taken for an e-mail domain
    assert url.text.startswith("postgres://app:[redacted password ") and url.text.endswith("]@db.internal:5432/prod")
    query = redact("see https://x.example/lookup?email=bob@example.com&page=2", key=KEY).text
    assert query == f"see https://x.example/lookup?email={_placeholder('bob@example.com', 'email')}&page=2"


def test_a_mailto_link_is_one_finding_fingerprinted_on_the_address():
    result = redact("mail <mailto:Bob@Example.com|Bob@Example.com> or <mailto:bob@example.com>", key=KEY)
    placeholder = _placeholder("bob@example.com", "email")
    assert result.text == f"mail {placeholder} or {placeholder}"
    assert [f.kind for f in result.findings] == ["email", "email"]
    assert result.findings[0].fingerprint == result.findings[1].fingerprint


def test_a_key_inside_an_assignment_is_one_finding_of_the_specific_kind():
    result = redact("export OPENAI_API_KEY=sk-proj-Ab3dEf6hIj9kLmN0pQrStUvWxYz12345", key=KEY)
    assert [f.kind for f in result.findings] == ["api_key"]
    bearer = redact(f"Authorization: Bearer {JWT}", key=KEY)
    assert [f.kind for f in bearer.findings] == ["token"]
    assert bearer.text == f"Authorization: Bearer {_placeholder(JWT, 'token')}"


def test_same_value_same_fingerprint_across_texts_different_values_and_keys_differ():
    first = redact("Caller: (415) 555-0100, mail jane@example.com", key=KEY)
    second = redact("again +1 415 555 0100 and JANE@example.com today", key=KEY)
    assert [f.fingerprint for f in first.findings] == [f.fingerprint for f in second.findings]
    assert first.kinds() == second.kinds() == ["phone_number", "email"]
    other = redact("Caller: (415) 555-0199, mail john@example.com", key=KEY)
    assert not {f.fingerprint for f in other.findings} & {f.fingerprint for f in first.findings}
    rekeyed = redact("Caller: (415) 555-0100, mail jane@example.com", key=OTHER_KEY)
    assert not {f.fingerprint for f in rekeyed.findings} & {f.fingerprint for f in first.findings}
    assert rekeyed.text != first.text  # the placeholders show the (keyed) fingerprint


def test_fingerprints_normalise_by_kind_and_are_prefixed_by_it():
    assert fingerprint("4111 1111 1111 1111", "card_number", key=KEY) == fingerprint(
        "4111-1111-1111-1111", "card_number", key=KEY)
    assert fingerprint("+49 (0)30 123456", "phone_number", key=KEY) == fingerprint("+4930123456", "phone_number",
                                                                                   key=KEY)
    assert normalise("(415) 555-0100", "phone_number") == normalise("+1-415-555-0100", "phone_number") == "14155550100"
    assert normalise("GB82 west 1234 5698 7654 32", "iban") == "GB82WEST12345698765432"
    assert fingerprint("Secret1", "password", key=KEY) != fingerprint("secret1", "password", key=KEY)  # as is
    assert fingerprint("hunter2!", "password", key=KEY) != fingerprint("hunter2!", "secret", key=KEY)
    expected = hmac.new(KEY, b"email\x00bob@example.com", hashlib.sha256).hexdigest()
    assert fingerprint(" Bob@Example.COM", "email", key=KEY) == expected
    assert derive_key("test-signing-secret") == KEY and derive_key("test-signing-secret") != b"test-signing-secret"


def test_repeated_values_share_a_placeholder_and_kinds_are_in_order_of_first_appearance():
    result = redact("4111111111111111 bob@example.com +44 20 7946 0958 4111 1111 1111 1111", key=KEY)
    assert result.kinds() == ["card_number", "email", "phone_number"]
    assert len(result.findings) == 4
    assert result.findings[0].fingerprint == result.findings[3].fingerprint
    assert result.text.count(result.findings[0].placeholder) == 2
    assert [f.start for f in result.findings] == sorted(f.start for f in result.findings)


def test_redacting_twice_changes_nothing_more():
    for text in [f"leaked {value} here" for value, _ in VALUES] + [text for text, _, _ in SENTENCES]:
        once = redact(text, key=KEY)
        assert once.redacted
        assert redact(once.text, key=KEY) == Redacted(text=once.text, findings=[])


def test_clean_text_is_returned_as_is_and_the_key_is_required():
    result = redact("Model rollback done at 14:05, INC-42 resolved.", key=KEY)
    assert result == Redacted(text="Model rollback done at 14:05, INC-42 resolved.", findings=[])
    assert not result.redacted and result.kinds() == []
    assert redact("", key=KEY).text == ""
    with pytest.raises(ValueError):
        redact("bob@example.com", key=b"")
    with pytest.raises(ValueError):
        derive_key("")
    assert set(KINDS) >= {"api_key", "token", "email", "card_number", "phone_number", "iban", "ssn"}


NOT_SECRETS = [
    "Deployed prompt template v14 at 14:05 UTC",
    "Rolled back to gpt-4o-2024-08-06 on 2026-11-23",
    "Upgraded the SDK from 1.2.3 to 1.10.0, then v1.2.3.4 and 2.0.0-beta.2+build.5",
    "Started 2026-11-23T14:05:33Z, mitigated 2026-11-23T15:41:07.123+01:00",
    "Timestamps 2026-11-23 14:05:33 and 23/11/2026 and 11/23/2026 and 23.11.2026 and 20261123",
    "Duration 00:45:12, between 09:00-17:00, UTC+01:00, +05:30, 2026",
    "Traffic from 10.0.0.1 and 192.168.100.200:8443 and 2001:db8::1 and 255.255.255.0",
    "See INC-42 and INC-2026-0042, JIRA OPS-4411, ticket #4411, issue #1234567890123",
    "Refunds of $1,200.00 (€1.150,00, £999.99) issued to 1,234 customers",
    "Error rate 99.95% -> 3.5%, p99 latency 1,250ms, +12% week over week, -4.5%",
    "12 tickets, 3/4 replicas healthy, 1.5M requests, 128000 tokens of context",
    "Commit 3f786850e387550fdab836ed7e6dc881de23001b reverted in a1b2c3d",
    "SHA256 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "https://status.example.com/incidents/4411?view=timeline#update-3",
    "<https://github.com/example/warroom/pull/1234/files|PR 1234> and <https://status.example.com/incidents/42|INC-42>",
    "Unix time 1732406400, in ms 1732406400123, order id 20261123140533",
    "Order 4111111111111112 and 1234567812345678 and 4000123412341235 are not card numbers",
    "HTTP 503 from us-east-1, CVE-2021-3129, arXiv:2303.08774",
    "UUID 123e4567-e89b-12d3-a456-426614174000, trace 4bf92f3577b34da6a3ce929d0e0e4736",
    "k8s pod web-7d9f8c6b5-x2x4z restarted 14 times",
    "max_tokens=4096, temperature=0.7, top_p=0.95, token_count: 128000, tokens: 4096",
    "The API key: rotated. Token: expired. Password reset done. secret: none. password: ********",
    "Tokenizer v2 and the keyword filter; passwords were not involved; token=abc",
    "ISBN 978-0-306-40615-7 and part 1234-5678-90",
    "Call volume up 415% from 555 to 2,300 calls; 555-0100 is a seven-digit number",
    "Coordinates 37.7749, -122.4194",
    "Build 2024.11.23.1 released; version 14.2.0-rc.1",
    "@channel the on-call is <@U0BOB|bob> in <#C0123ABC|incident-42>, cc <!subteam^S0123|@oncall>",
    "sk-learn-compatible-estimator and a risk-based-scoring-approach-for-models",
    "Retina asset icon@2x.png, npm lodash@4.17.21, git@github.com:example/warroom.git",
    "Ratio 16:9, score 8/10, 2x faster, 24/7 coverage, 1-2-3",
    "Code AB12 CDEF GHIJ KLMN 1234 is not an IBAN, nor is GB00 WEST 1234 5698 7654 32",
    "Rate limit 10000 requests/min, 1000000 tokens/day, window 60s",
    "Numbers 000-12-3456, 666-12-3456 and 900-12-3456 are not valid SSNs",
    "123-456-7890 has area code 123, which North America does not use",
    "Latency +250ms, +1.5s, +15 minutes, +100 users",
    "Long ids 12345678901234567890123 and 98765432109876543210",
    "Postmortem at https://docs.example.com/postmortems/2026-11-23-inc-42 (bearer of bad news: me)",
    "Secret: see INC-42. Token budget: 128k. Keys rotated at 14:05.",
]


@pytest.mark.parametrize("text", NOT_SECRETS)
def test_no_false_positives_on_ordinary_incident_text(text):
    result = redact(text, key=KEY)
    assert result.findings == [], [(f.kind, text[f.start:f.end]) for f in result.findings]
    assert result.text == text


@pytest.mark.parametrize("number", ["4111 1111 1111 1111", "4111-1111-1111-1111", "4111111111111111",
                                    "5555-5555-5555-4444", "5555555555554444", "378282246310005", "3782 822463 10005",
                                    "6011111111111117", "3530111333300000", "30569309025904", "4222222222222",
                                    "2223003122003222"])
def test_luhn_valid_cards_are_caught(number):
    result = redact(f"card {number} on file", key=KEY)
    assert result.kinds() == ["card_number"] and number not in result.text


@pytest.mark.parametrize("number", [
    "4111 1111 1111 1112",  # Luhn fails
    "5555-5555-5555-4445",
    "378282246310006",
    "1234567812345670",  # Luhn passes, no card starts with 1
    "9111111111111111",
    "4111 111 1111 1111 1",  # not a card layout
    "41111-11111-111111",
    "4111-1111 1111-1111",  # mixed separators
    "x4111111111111111",  # part of a word / id
    "#4111111111111111",
    "INC-4111111111111111",
    "4111111111111111.5",
    "41111111111111111111",  # 20 digits
    "order 4111-1111-1111-1111-2026",  # a longer dashed id
])
def test_card_lookalikes_are_not_caught(number):
    assert redact(number, key=KEY).findings == []


def test_many_candidates_in_a_long_message():
    chunk = ("Call +44 20 7946 0958 or (415) 555-0100, mail bob@example.com, card 4111 1111 1111 1111, "
             "token=abc123def456 at 2026-11-23T14:05:33Z v1.2.3 10.0.0.1 INC-42 $1,200.00 #4411 99.5% ")
    text = chunk * 23
    assert len(text) > 4000
    result = redact(text, key=KEY)
    assert len(result.findings) == 23 * 5
    assert result.kinds() == ["phone_number", "email", "card_number", "token"]
    assert len({f.fingerprint for f in result.findings}) == 5


@pytest.mark.parametrize("text", [
    "1" * 4000, "-" * 4000, "a@" * 2000, "@." * 2000, "a." * 2000 + "@x.com", ("a" * 63 + "@") * 62,
    "4111 " * 800, "4111-" * 800, "1 " * 2000, "1-" * 2000, "(1" * 2000, "+1 " * 1333, "+" * 4000,
    "token=" * 666, "password:" * 444, "api_key = " * 400, "x" * 4000, " " * 4000, "eyJ" + "a." * 2000,
    "sk-" * 1333, "-----BEGIN PRIVATE KEY-----" * 150, "<mailto:" * 500, "https://" * 500, "a:b@" * 1000,
    "AB12" * 1000, "Bearer " * 570, "aaaa" * 1000 + "@", "1." * 2000, "(415) " * 666,
])
def test_adversarial_input_completes(text):
    result = redact(text, key=KEY)
    assert isinstance(result.text, str)
    if not result.findings:
        assert result.text == text


def _aiid_csv() -> Path:
    for path in AIID_CSV_CANDIDATES:
        if path.is_file():
            return path
    pytest.skip("AI Incident Database snapshot not found at ../shared/data/aiid/incidents.csv "
                "or /work/shared/data/aiid/incidents.csv")


def test_real_incident_texts_from_the_ai_incident_database():
    """989 real incident titles and descriptions (AI Incident Database, CC BY-SA 4.0): nothing in them is a
    secret or personal data as defined here, so nothing is redacted and every text comes back as it was."""
    with _aiid_csv().open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) >= 900
    found = []
    for row in rows:
        for column in ("title", "description"):
            text = row[column]
            result = redact(text, key=KEY)
            found += [(row["incident_id"], column, f.kind, text[f.start:f.end]) for f in result.findings]
            if not result.findings:
                assert result.text == text
    for item in found:
        print(item)
    assert found == []


def _placeholder(value: str, kind: str) -> str:
    return f"[redacted {kind} {fingerprint(value, kind, key=KEY)[:6]}]"
