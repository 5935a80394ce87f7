"""Finding secrets and personal data in what responders type into a war room, and redacting them.

Pure Python (standard library and pydantic): no Slack, no database. `redact(text, key=...)` returns
the text with every finding replaced by a placeholder, and the findings themselves (kind, span in
the original text, fingerprint), so the room stores and shows only the redacted text while the
incident can keep the fingerprints and recognise the same value when it comes back.

Placeholder format: ``[redacted <kind> <first 6 hex digits of the fingerprint>]``, for example
``[redacted email 1a2b3c]``. The same value always gets the same placeholder (under one key), so
people can tell two redacted values apart and see one recur; nothing in the placeholder matches
any detector again, so redacting redacted text changes nothing.

Fingerprint: HMAC-SHA256 with a per-deployment key (see `derive_key`) over ``kind``, a NUL byte and
the normalised value: e-mail addresses lower-cased; card numbers and SSNs digits only; phone numbers
digits only in international form (a trunk ``(0)`` dropped, ``1`` prepended to a North American
number written without a country code, so ``(415) 555-0100`` and ``+1-415-555-0100`` are the same
value); IBANs upper-cased without spaces; secrets exactly as written. Without the key the short
values (phone and card numbers) cannot be brute-forced from the hash.

Kinds (`KINDS`):

- ``api_key``: provider keys: OpenAI ``sk-...`` / ``sk-proj-...``, Anthropic ``sk-ant-...``, AWS access
  key ids (``AKIA``/``ASIA``/``ABIA``/``ACCA`` + 16), AWS secret keys when labelled
  (``aws_secret_access_key=...``), Google ``AIza...``, Stripe ``sk_live_``/``rk_live_``/``pk_live_``/
  ``..._test_``/``whsec_``, and labelled ``api_key=`` / ``access_key:`` / ``secret_key=`` values.
- ``token``: GitHub (``ghp_ gho_ ghu_ ghs_ ghr_ github_pat_``), Slack (``xoxb- xoxp- xoxa- xoxr- xoxe-
  xoxs- xapp-`` and the secret path of ``hooks.slack.com`` webhooks), JWTs (``eyJ...``.``...``.``...``),
  ``Bearer <token>`` and ``Authorization: Basic <credentials>``, and labelled ``token=`` values.
- ``password``: labelled ``password=`` / ``passwd:`` / ``pwd=`` values and the password of a URL
  (``postgres://app:<password>@db``).
- ``secret``: labelled ``secret=`` / ``client_secret:`` values.
- ``private_key``: a ``-----BEGIN ... PRIVATE KEY-----`` block up to its END line (or the end of the
  text when the paste was cut off).
- ``email``: e-mail addresses.
- ``card_number``: 13-19 digits, contiguous or in the usual groups (4-4-4-4, 4-4-4-4-3, 4-6-5, 4-6-4,
  one kind of separator), with a known IIN prefix for its length and a valid Luhn check digit.
- ``phone_number``: international numbers starting ``+`` (8-15 digits, e.g. ``+44 20 7946 0958``,
  ``+49 (0)30 123456``) and North American numbers ``(415) 555-0100``, ``415-555-0100``,
  ``415.555.0100`` (optionally ``1-`` in front; area code and exchange must start 2-9).
- ``iban``: IBANs (upper case, optionally in groups of four) of a known country and length that
  pass the mod-97 check.
- ``ssn``: US social security numbers written ``123-45-6789``, excluding areas 000, 666 and 9xx,
  group 00 and serial 0000.

Labelled values (``password=...``) redact only the value, so the label stays readable:
``DB_PASSWORD=[redacted password 1a2b3c]``. A value after ``:`` that is a plain word
(``token: expired``) is not redacted; a value after ``=`` of six characters or more is.

Overlaps: when two findings overlap, the longer one wins, and on equal spans the more specific
detector wins (an ``sk-...`` key labelled ``api_key=`` is one ``api_key`` finding, not a generic one).

Slack formatting: Slack sends an e-mail address typed into a message as
``<mailto:bob@example.com|bob@example.com>``; the whole link (target and label) becomes one
placeholder, fingerprinted on the address in the target. Credentials in the query of a Slack link
(``<https://x.example/?token=...|link>``) are redacted in place, keeping the link intact. Values in
URLs stop at ``&`` (the next parameter, or Slack's ``&amp;``).

Speed: all patterns are precompiled and linear (no nested quantifiers over overlapping classes,
possessive quantifiers where a run is scanned, lengths and checksums checked in Python), and each
detector starts from something rare (a literal prefix, an "@", a "=" or ":", a run of eight or more
digits), so 4,000 characters of ordinary text take a fraction of a millisecond, and dense or
adversarial input (thousands of digits, "a@a@a@...") stays linear: a few milliseconds.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from bisect import bisect_left
from typing import Iterator, NamedTuple

from pydantic import BaseModel, Field

__all__ = ["KINDS", "PERSONAL_KINDS", "SECRET_KINDS", "Finding", "Redacted", "derive_key", "fingerprint",
           "normalise", "placeholder", "redact"]

SECRET_KINDS = ("api_key", "token", "password", "secret", "private_key")
PERSONAL_KINDS = ("email", "phone_number", "card_number", "iban", "ssn")
KINDS = SECRET_KINDS + PERSONAL_KINDS

FINGERPRINT_PREFIX_LENGTH = 6  # hex digits of the fingerprint shown in the placeholder


class Finding(BaseModel):
    kind: str  # one of KINDS
    start: int  # span of the redacted value in the original text
    end: int
    fingerprint: str  # hex HMAC-SHA256 of kind + normalised value

    @property
    def placeholder(self) -> str:
        return placeholder(self.kind, self.fingerprint)


class Redacted(BaseModel):
    text: str  # the text with each finding replaced by its placeholder
    findings: list[Finding] = Field(default_factory=list)  # in order of position in the original text

    @property
    def redacted(self) -> bool:
        return bool(self.findings)

    def kinds(self) -> list[str]:
        """Distinct kinds found, in order of first appearance."""
        return list(dict.fromkeys(f.kind for f in self.findings))


def placeholder(kind: str, fingerprint_hex: str) -> str:
    return f"[redacted {kind} {fingerprint_hex[:FINGERPRINT_PREFIX_LENGTH]}]"


def derive_key(secret: str | bytes) -> bytes:
    """A redaction key derived from a deployment secret (e.g. the Slack signing secret).

    Domain-separated, so the fingerprints reveal nothing about the secret itself and rotating the
    secret changes every fingerprint.
    """
    raw = secret.encode() if isinstance(secret, str) else bytes(secret)
    if not raw:
        raise ValueError("the redaction key needs a non-empty secret")
    return hmac.new(raw, b"warroom/redaction/v1", hashlib.sha256).digest()


def normalise(value: str, kind: str) -> str:
    """The form of a value that is fingerprinted (see the module docstring)."""
    if kind == "email":
        return value.strip().lower()
    if kind in ("card_number", "ssn"):
        return _digits(value)
    if kind == "phone_number":
        stripped = value.strip()
        digits = _digits(stripped.replace("(0)", ""))
        if not stripped.startswith("+") and len(digits) == 10:
            digits = "1" + digits  # North American number without its country code
        return digits
    if kind == "iban":
        return "".join(value.split()).upper()
    return value


def fingerprint(value: str, kind: str, *, key: bytes) -> str:
    """Hex HMAC-SHA256 of the kind and the normalised value under the deployment's key."""
    _check_key(key)
    return _fingerprint(hmac.new(bytes(key), digestmod=hashlib.sha256), value, kind)


def redact(text: str, *, key: bytes) -> Redacted:
    """Find secrets and personal data in `text` and replace each with its placeholder."""
    _check_key(key)
    chosen = _resolve(list(_candidates(text)))
    if not chosen:
        return Redacted(text=text)
    mac = hmac.new(bytes(key), digestmod=hashlib.sha256)
    findings: list[Finding] = []
    parts: list[str] = []
    position = 0
    known: dict[tuple[str, str], str] = {}  # a value repeated in one message is hashed once
    for cand in chosen:
        fp = known.get((cand.kind, cand.value))
        if fp is None:
            fp = known[cand.kind, cand.value] = _fingerprint(mac, cand.value, cand.kind)
        found = Finding(kind=cand.kind, start=cand.start, end=cand.end, fingerprint=fp)
        findings.append(found)
        parts.append(text[position:cand.start])
        parts.append(found.placeholder)
        position = cand.end
    parts.append(text[position:])
    return Redacted(text="".join(parts), findings=findings)


# --- internals -------------------------------------------------------------------------------------

class _Candidate(NamedTuple):
    start: int
    end: int
    kind: str
    value: str  # what is fingerprinted (before normalisation)
    rank: int  # on equal spans, the lower rank (more specific detector) wins


_RANK_PRIVATE_KEY, _RANK_SPECIFIC, _RANK_PERSONAL, _RANK_PHONE, _RANK_LABELLED = range(5)

_ASCII_DIGITS = frozenset("0123456789")
_RUN_SEPARATORS = str.maketrans("", "", " ().-")


def _digits(value: str) -> str:
    return "".join(ch for ch in value if ch in _ASCII_DIGITS)


def _fingerprint(mac: hmac.HMAC, value: str, kind: str) -> str:
    mac = mac.copy()
    mac.update(kind.encode() + b"\x00" + normalise(value, kind).encode("utf-8", "surrogatepass"))
    return mac.hexdigest()


def _check_key(key: bytes) -> None:
    if not isinstance(key, (bytes, bytearray)) or not key:
        raise ValueError("redaction needs a non-empty key (bytes), e.g. derive_key(signing_secret)")


def _resolve(candidates: list[_Candidate]) -> list[_Candidate]:
    """Non-overlapping candidates: longest first, then most specific, then leftmost; in text order."""
    candidates.sort(key=lambda c: (c.start - c.end, c.rank, c.start))
    starts: list[int] = []
    chosen: list[_Candidate] = []  # kept sorted by start
    for cand in candidates:
        i = bisect_left(starts, cand.start)
        if i > 0 and chosen[i - 1].end > cand.start:
            continue
        if i < len(chosen) and chosen[i].start < cand.end:
            continue
        starts.insert(i, cand.start)
        chosen.insert(i, cand)
    return chosen


def _candidates(text: str) -> Iterator[_Candidate]:
    lowered = text.lower()  # only for cheap "is it worth looking" tests: its positions may differ
    if "-----BEGIN" in text:
        yield from _private_keys(text)
    yield from _tokens(text, lowered)
    if "://" in text:
        yield from _url_passwords(text)
    if "@" in text:
        yield from _emails(text)
    if any(word in lowered for word in _LABEL_WORDS):
        yield from _labelled(text)
    yield from _numbers(text)
    yield from _ibans(text)


def _glued(text: str, start: int, joiners: str) -> bool:
    """Whether text[start] continues a word (or a run of `joiners`) instead of starting one."""
    return start > 0 and (text[start - 1].isalnum() or text[start - 1] in joiners)


# Private key blocks, cut off at the end of the text if the END line is missing.
_PRIVATE_KEY = re.compile(
    r"-----BEGIN (?:[A-Z0-9]+ ){0,3}PRIVATE KEY(?: BLOCK)?-----"
    r".*?(?:-----END (?:[A-Z0-9]+ ){0,3}PRIVATE KEY(?: BLOCK)?-----|\Z)", re.DOTALL)


def _private_keys(text: str) -> Iterator[_Candidate]:
    for m in _PRIVATE_KEY.finditer(text):
        yield _Candidate(m.start(), m.end(), "private_key", m.group(), _RANK_PRIVATE_KEY)


class _TokenFormat(NamedTuple):
    kind: str
    needles: tuple[str, ...]  # one must occur in the text (in lower case when `lowered`) to bother; () always
    pattern: re.Pattern[str]  # starts with a literal (fast to search); the value is group "value" or all of it
    joiners: str = "_-"  # characters that, before the match, mean it starts inside a longer word
    lowered: bool = False
    random: bool = False  # must contain a digit and a letter, as random keys do


# Provider formats. Each is a literal prefix then one possessive run of its alphabet. A pattern that
# starts with a literal is searched about as fast as a substring test; the others have needles.
_TOKEN_FORMATS = (
    # OpenAI sk-..., sk-proj-..., sk-svcacct-...; Anthropic sk-ant-...
    _TokenFormat("api_key", (), re.compile(r"sk-[A-Za-z0-9_-]{20,}+"), random=True),
    _TokenFormat("api_key", (),
                 re.compile(r"(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}(?![A-Za-z0-9])"), joiners=""),
    _TokenFormat("api_key", ("aws_secret", "awssecret"), re.compile(
        r"(?i:aws_?secret_?(?:access_?)?key)[\"']?[ \t]*[:=][ \t]*[\"']?"
        r"(?P<value>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])"),
        lowered=True),
    _TokenFormat("token", (),
                 re.compile(r"gh[pousr]_[A-Za-z0-9]{36,}+|github_pat_[A-Za-z0-9_]{22,}+"), joiners="_"),
    _TokenFormat("token", (), re.compile(r"(?:xox[abeoprs]|xapp)-[A-Za-z0-9-]{10,}+"), random=True),
    _TokenFormat("token", ("hooks.slack.com/",), re.compile(
        r"hooks\.slack\.com/(?:services|workflows|triggers)/(?P<value>[A-Za-z0-9/_-]{10,}+)"), joiners=""),
    _TokenFormat("api_key", (), re.compile(r"AIza[A-Za-z0-9_-]{35}(?![A-Za-z0-9_-])")),
    _TokenFormat("api_key", ("_live_", "_test_", "whsec_"),
                 re.compile(r"(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{10,}+|whsec_[A-Za-z0-9]{20,}+"), joiners="_"),
    _TokenFormat("token", (), re.compile(r"eyJ[A-Za-z0-9_-]{8,}+\.[A-Za-z0-9_-]{8,}+\.[A-Za-z0-9_-]*+")),
    _TokenFormat("token", ("bearer",), re.compile(r"(?i:bearer)[ \t]++(?P<value>[A-Za-z0-9._~+/-]{16,}+=*+)"),
                 joiners="", lowered=True, random=True),
    _TokenFormat("token", ("authorization",), re.compile(
        r"(?i:authorization)[\"']?[ \t]*[:=][ \t]*[\"']?(?i:basic)[ \t]++(?P<value>[A-Za-z0-9+/]{8,}+=*+)"),
        joiners="", lowered=True),
)
_HAS_DIGIT = re.compile(r"[0-9]")
_HAS_LETTER = re.compile(r"[A-Za-z]")


def _tokens(text: str, lowered: str) -> Iterator[_Candidate]:
    for fmt in _TOKEN_FORMATS:
        haystack = lowered if fmt.lowered else text
        if fmt.needles and not any(needle in haystack for needle in fmt.needles):
            continue
        for m in fmt.pattern.finditer(text):
            if _glued(text, m.start(), fmt.joiners):
                continue
            group = "value" if "value" in fmt.pattern.groupindex else 0
            start, end = m.span(group)
            value = m.group(group).rstrip("-")  # a dash after a token is punctuation
            end = start + len(value)
            if fmt.random and not (_HAS_DIGIT.search(value) and _HAS_LETTER.search(value)):
                continue  # "sk-learn-compatible-estimators" is not a key
            yield _Candidate(start, end, fmt.kind, value, _RANK_SPECIFIC)


# The password of a URL: scheme://user:password@host
_USERINFO = re.compile(r"[^\s/?#@:<>|]{0,100}+:(?P<value>[^\s/?#@<>|]{1,200}+)@")
_USERINFO_CHARS = re.compile(r"[^\s/?#&=@<>|]*+")


def _url_passwords(text: str) -> Iterator[_Candidate]:
    at = text.find("://")
    while at != -1:
        if at > 0 and text[at - 1].isalnum():
            m = _USERINFO.match(text, at + 3)
            if m:
                yield _Candidate(m.start("value"), m.end("value"), "password", m.group("value"), _RANK_SPECIFIC)
        at = text.find("://", at + 3)


def _in_url_userinfo(text: str, start: int) -> bool:
    """Whether text[start] is in the user part of a URL (https://user@host), not an e-mail address."""
    scheme = text.rfind("://", max(0, start - 300), start)
    return scheme != -1 and _USERINFO_CHARS.fullmatch(text, scheme + 3, start) is not None


# E-mail addresses, found from their "@": the local part is walked back in Python (at most 64
# characters), the domain is dot-separated labels (each starts and ends alphanumeric) and an
# alphabetic TLD.
_LOCAL_PUNCTUATION = "._%+-"
_DOMAIN = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+(?P<tld>[A-Za-z]{2,24})(?![A-Za-z0-9-])")
_FILE_EXTENSIONS = frozenset(  # icon@2x.png is a file, not an address
    "png jpg jpeg gif svg webp ico bmp tif tiff pdf txt log md csv json yaml yml toml xml html htm js ts mjs css "
    "py rb go rs java kt php sh zip gz tgz tar whl".split())
_MAILTO_LABEL = re.compile(r"\|[^<>|\n]{0,320}+>")


def _emails(text: str) -> Iterator[_Candidate]:
    at = text.find("@")
    while at != -1:
        found = _email_at(text, at)
        if found:
            yield found
        at = text.find("@", at + 1)


def _email_at(text: str, at: int) -> _Candidate | None:
    start = at
    while start > 0 and at - start <= 64 and (text[start - 1].isalnum() or text[start - 1] in _LOCAL_PUNCTUATION):
        start -= 1
    if at - start > 64:
        return None  # no such local part
    while start < at and text[start] in "._-":
        start += 1  # _bob@example.com_ is Slack italics; a local part does not start with a dot
    domain = _DOMAIN.match(text, at + 1)
    if start == at or not domain or domain.group("tld").lower() in _FILE_EXTENSIONS:
        return None
    end = domain.end()
    if _in_url_userinfo(text, start):
        return None
    if text.startswith(":", end) and end + 1 < len(text) and (text[end + 1].isalnum() or text[end + 1] in "/~"):
        return None  # git@github.com:org/repo.git
    address = text[start:end]
    if start >= 8 and text.startswith("<mailto:", start - 8):  # Slack's <mailto:address|label>: all of it
        if text.startswith(">", end):
            return _Candidate(start - 8, end + 1, "email", address, _RANK_SPECIFIC)
        label = _MAILTO_LABEL.match(text, end)
        if label:
            return _Candidate(start - 8, label.end(), "email", address, _RANK_SPECIFIC)
    return _Candidate(start, end, "email", address, _RANK_PERSONAL)


# Labelled values: password=..., "api_key": "...", SLACK_BOT_TOKEN=..., secret: ..., found from the
# separator. The label must end with one of these words (max_tokens=, token_count: are not labels).
_LABEL_WORDS = ("pass", "pwd", "secret", "key", "token")
_SEPARATOR = re.compile(r"=>?|:=?")
_LABEL_END = re.compile(
    r"(?i:passw(?:or)?d|passphrase|pwd|secret|(?:api|access|secret|private|signing|client)[_-]?key|apikey|token)\Z")
_LONGEST_LABEL = len("private_key")
_VALUE = re.compile(
    r"[ \t]*+(?:\"(?P<dq>[^\"\r\n]{1,256}+)\"|'(?P<sq>[^'\r\n]{1,256}+)'|(?P<bare>[^\s\"'`<>|]{1,256}+))")
_TRAILING_PUNCTUATION = ".,;:)]}"  # "!" and "?" end many passwords: kept
_NOT_VALUES = frozenset(
    "redacted removed hidden masked rotated revoked expired invalid missing changed deleted unset empty "
    "null none nil true false undefined required optional string example placeholder".split())
_PLACEHOLDER_START = tuple("[<${%*#")
_PLAIN_WORD = re.compile(r"[A-Za-z]+(?:-[A-Za-z]+)*")


def _label_kind(label: str) -> str:
    label = label.lower()
    if label.startswith("pa") or label == "pwd":
        return "password"
    if label == "token":
        return "token"
    if label.endswith("key"):
        return "api_key"
    return "secret"


def _labelled(text: str) -> Iterator[_Candidate]:
    taken = 0  # end of the last value found: separators inside it are part of it
    for sep in _SEPARATOR.finditer(text):
        if sep.start() < taken:
            continue
        before = sep.start()  # walk back over spaces and a closing quote to where the label would end
        while before > 0 and text[before - 1] in " \t":
            before -= 1
        if before > 0 and text[before - 1] in "\"'":
            before -= 1
        label = _LABEL_END.search(text, max(0, before - _LONGEST_LABEL), before)
        if not label:
            continue
        m = _VALUE.match(text, sep.end())
        if not m:
            continue
        quoted = m.group("bare") is None
        group = "bare" if not quoted else ("dq" if m.group("dq") is not None else "sq")
        start, end = m.span(group)
        value = m.group(group)
        if not quoted:
            name_start = label.start()
            while name_start > 0 and (text[name_start - 1].isalnum() or text[name_start - 1] in "_.-"):
                name_start -= 1
            if name_start > 0 and text[name_start - 1] in "?&;":  # a URL parameter ends at the next one
                value = value.split("&", 1)[0]
            value = value.rstrip(_TRAILING_PUNCTUATION)
            end = start + len(value)
        if len(value) < 6 or value.startswith(_PLACEHOLDER_START) or value.lower() in _NOT_VALUES:
            continue
        if len(set(value)) == 1 or value.lower().startswith(("http://", "https://")):
            continue  # xxxxxx, ******, a link to a vault
        if sep.group() == ":" and not quoted and _PLAIN_WORD.fullmatch(value):
            continue  # "token: expired", "password: reset"
        taken = end
        yield _Candidate(start, end, _label_kind(label.group()), value, _RANK_LABELLED)


# Numbers: card, phone and social security numbers. One scan finds each run of at least eight digits
# and "().-" separators (single spaces allowed between); each detector looks only at runs with
# enough digits for it.
_NUMBER_RUN = re.compile(r"[0-9](?:[0-9().-]| (?=[0-9(])){7,}+")
_DIGIT_RUN = re.compile(r"[0-9]++(?:[ -][0-9]++)*+")  # a card's digits: groups checked in Python
_INTERNATIONAL = re.compile(
    r"\+[1-9][0-9]*+(?:[ .-]?+\([0-9]{1,4}\)[ .-]?+[0-9]++)?+(?:[ .-][0-9]++)*+")
_NANP = re.compile(
    r"(?<![\w.+$#/@-])(?:1[-. ])?"
    r"(?:\([2-9][0-9]{2}\)[ ]?[2-9][0-9]{2}[-. ][0-9]{4}|[2-9][0-9]{2}(?P<sep>[-.])[2-9][0-9]{2}(?P=sep)[0-9]{4})"
    r"(?![\w@]|[-.][0-9])")
_SSN = re.compile(r"(?<![\w.+$#/@-])(?!000|666|9)[0-9]{3}-(?!00)[0-9]{2}-(?!0000)[0-9]{4}(?![\w@]|[-.][0-9])")
_GROUP = re.compile(r"[0-9]+")
_BAD_BEFORE_CARD = ".,/#$€£¥+-_@"


def _numbers(text: str) -> Iterator[_Candidate]:
    for run in _NUMBER_RUN.finditer(text):
        start, end = run.span()
        digits = len(run.group().translate(_RUN_SEPARATORS))
        if digits < 8:
            continue
        region = start - 1 if start > 0 and text[start - 1] == "(" else start
        if region > 0 and text[region - 1] == "+":
            yield from _international_phone_at(text, region - 1)
        limit = min(len(text), end + 2)  # room for the lookaheads
        if digits >= 10:
            for m in _NANP.finditer(text, region, limit):
                yield _Candidate(m.start(), m.end(), "phone_number", m.group(), _RANK_PHONE)
        if digits >= 9 and "-" in run.group():
            for m in _SSN.finditer(text, start, limit):
                yield _Candidate(m.start(), m.end(), "ssn", m.group(), _RANK_PERSONAL)
        if digits >= 13:
            yield from _cards(text, start, end)


def _clean_after(text: str, end: int) -> bool:
    """A number ending at `end` is not glued to a word, a decimal, a time, a path, a percent sign."""
    if end < len(text):
        after = text[end]
        if after.isalnum() or after in "_%@":
            return False
        if after in ".,/:-" and end + 1 < len(text) and text[end + 1].isdigit():
            return False
    return True


def _cards(text: str, start: int, end: int) -> Iterator[_Candidate]:
    for m in _DIGIT_RUN.finditer(text, start, end):
        if m.end() - m.start() < 13:
            continue
        groups = [g.span() for g in _GROUP.finditer(text, m.start(), m.end())]
        last = len(groups) - 1
        # Not glued to a word, a decimal point, a path, a currency sign, a ticket # or an id prefix.
        head_ok = not _glued(text, m.start(), _BAD_BEFORE_CARD)
        tail_ok = _clean_after(text, m.end())
        for i in range(len(groups)):  # windows of up to five groups with 13-19 digits
            total = 0
            for j in range(i, min(i + 5, len(groups))):
                total += groups[j][1] - groups[j][0]
                if total > 19:
                    break
                if total < 13:
                    continue
                sizes = [b - a for a, b in groups[i:j + 1]]
                if not _card_layout(sizes):
                    continue
                if j > i and len({text[groups[k][1]] for k in range(i, j)}) != 1:
                    continue  # one kind of separator
                if (i == 0 and not head_ok) or (j == last and not tail_ok):
                    continue
                if (i > 0 or j < last) and not _window_bounded(text, groups, i, j):
                    continue
                first, after = groups[i][0], groups[j][1]
                digits = "".join([text[a:b] for a, b in groups[i:j + 1]])
                if _card_prefix_ok(digits) and _luhn_ok(digits):
                    yield _Candidate(first, after, "card_number", text[first:after], _RANK_PERSONAL)


def _window_bounded(text: str, groups: list[tuple[int, int]], i: int, j: int) -> bool:
    """A card inside a longer run of numbers must be set off by spaces (not joined by dashes)."""
    if i > 0 and text[groups[i][0] - 1] != " ":
        return False
    return j == len(groups) - 1 or text[groups[j][1]] == " "


def _card_layout(sizes: list[int]) -> bool:
    total = sum(sizes)
    if not 13 <= total <= 19:
        return False
    if len(sizes) == 1:
        return True
    if sizes in ([4, 6, 5], [4, 6, 4]):
        return True
    return all(s == 4 for s in sizes[:-1]) and 1 <= sizes[-1] <= 4 and len(sizes) >= 4


def _card_prefix_ok(d: str) -> bool:
    n = len(d)
    p2, p3, p4, p6 = int(d[:2]), int(d[:3]), int(d[:4]), int(d[:6])
    if d[0] == "4":  # Visa
        return n in (13, 16, 19)
    if 51 <= p2 <= 55 or 2221 <= p4 <= 2720:  # Mastercard
        return n == 16
    if p2 in (34, 37):  # American Express
        return n == 15
    if p4 == 6011 or p2 == 65 or 644 <= p3 <= 649 or 622126 <= p6 <= 622925 or p2 == 62:  # Discover, UnionPay
        return 16 <= n <= 19
    if 3528 <= p4 <= 3589 or 2200 <= p4 <= 2204:  # JCB, Mir
        return 16 <= n <= 19
    if 300 <= p3 <= 305 or p2 in (36, 38, 39):  # Diners Club
        return 14 <= n <= 19
    if p4 in (5018, 5020, 5038, 5893, 6304, 6759, 6761, 6762, 6763):  # Maestro
        return 13 <= n <= 19
    return False


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        x = ord(ch) - 48
        if i % 2:
            x = x * 2 - 9 if x > 4 else x * 2
        total += x
    return total % 10 == 0


def _international_phone_at(text: str, plus: int) -> Iterator[_Candidate]:
    m = _INTERNATIONAL.match(text, plus)
    if not m or _glued(text, plus, "+_") or not _clean_after(text, m.end()):
        return
    # Digit groups (end, size); a trunk "(0)" does not count.
    groups = [(g.end(), len(g.group())) for g in _GROUP.finditer(text, plus, m.end())
              if not (g.group() == "0" and text[g.start() - 1:g.end() + 1] == "(0)")]
    counts, total = [], 0
    for group_end, size in groups:
        total += size
        counts.append((total, group_end))
    if text[plus + 1] == "1":  # +1: North American, exactly 11 digits
        ends = [e for n, e in counts if n == 11] if groups[0][1] == 1 or len(groups) == 1 else []
    else:
        ends = [e for n, e in counts if 8 <= n <= 15]
    if not ends or (len(groups) == 1 and total < 10):
        return  # +12345678 is more likely a count than a number
    yield _Candidate(plus, ends[-1], "phone_number", text[plus:ends[-1]], _RANK_PHONE)


# IBANs: country, check digits, then groups of four (optionally separated by one space).
_IBAN = re.compile(r"[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}+(?: ?[A-Z0-9]{1,4})?+(?![A-Za-z0-9])")
_IBAN_START = re.compile(r"[A-Z][A-Z][0-9][0-9]")  # country and check digits: rare in prose
_IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29, "CH": 21,
    "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FO": 18,
    "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23,
    "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27,
    "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29,
    "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "TN": 24, "TR": 26,
    "UA": 29, "VG": 24, "XK": 20,
}


def _ibans(text: str) -> Iterator[_Candidate]:
    for m in _IBAN_START.finditer(text):
        yield from _iban_at(text, m.start())


def _iban_at(text: str, start: int) -> Iterator[_Candidate]:
    m = _IBAN.match(text, start)
    if not m or _glued(text, start, ""):
        return
    value = m.group()
    expected = _IBAN_LENGTHS.get(value[:2])
    compact = value.replace(" ", "")
    if expected is None or len(compact) < expected:
        return
    if len(compact) > expected:  # the IBAN, then more text in groups: cut at its length
        seen = 0
        for i, ch in enumerate(value):
            seen += ch != " "
            if seen == expected:
                break
        if i + 1 < len(value) and value[i + 1] != " ":
            return
        value, compact = value[:i + 1], compact[:expected]
    if _iban_ok(compact):
        yield _Candidate(start, start + len(value), "iban", value, _RANK_PERSONAL)


def _iban_ok(compact: str) -> bool:
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1
