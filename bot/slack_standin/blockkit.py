"""Block Kit checks shared by the Slack stand-in: schema limits and mentions.

Slack validates the blocks of messages and modals and refuses what breaks its
rules (``invalid_blocks`` for messages, ``invalid_arguments`` for views), and
the stand-in must do the same so the bot cannot rely on something slack.com
would reject.  It also records which mentions a message would ping, so tests
can prove that text a person typed pinged no one.
"""

from __future__ import annotations

import re
from typing import Any

# Limits from https://api.slack.com/reference/block-kit/blocks
MAX_MESSAGE_BLOCKS = 50
MAX_VIEW_BLOCKS = 100
MAX_SECTION_TEXT = 3000
MAX_SECTION_FIELDS = 10
MAX_SECTION_FIELD_TEXT = 2000
MAX_HEADER_TEXT = 150
MAX_BLOCK_ID = 255
KNOWN_BLOCK_TYPES = frozenset(
    {"actions", "context", "divider", "file", "header", "image", "input", "markdown",
     "rich_text", "section", "table", "video"}
)

# Special mentions that notify people.  ``<!date^...>`` and friends are
# formatting, not mentions, so the pattern lists the pinging forms only.
MENTION_PATTERN = re.compile(r"<(!(?:channel|here|everyone)|!subteam\^[A-Z0-9]+|@[UW][A-Z0-9]+)(?:\|[^>]*)?>")
BARE_MASS_MENTION = re.compile(r"(?<![<\w])@(channel|here|everyone)\b")


def find_mentions(text: str | None, blocks: list | None, attachments: list | None,
                  bare_names: dict[str, str] | None = None) -> list[str]:
    """Every notifying mention in a message, normalised as ``<!here>`` / ``<@U…>``.

    Mentions are parsed from the raw text, from mrkdwn text objects anywhere
    in the blocks (plain_text never pings), from rich_text broadcast/user
    elements and from attachment text.  ``bare_names`` is set when the caller
    asked Slack to link names (``link_names``), which turns ``@here`` or
    ``@alice`` typed verbatim into real pings.
    """
    found: list[str] = []

    def scan(value: str) -> None:
        found.extend(f"<{m}>" for m in MENTION_PATTERN.findall(value))
        if bare_names is not None:
            found.extend(f"<!{m}>" for m in BARE_MASS_MENTION.findall(value))
            for name, user_id in bare_names.items():
                if re.search(rf"(?<![<\w])@{re.escape(name)}\b", value):
                    found.append(f"<@{user_id}>")

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, dict):
            kind = node.get("type")
            if kind == "mrkdwn" and isinstance(node.get("text"), str):
                scan(node["text"])
            elif kind == "broadcast":
                found.append(f"<!{node.get('range')}>")
            elif kind == "user" and node.get("user_id"):
                found.append(f"<@{node['user_id']}>")
            elif kind == "usergroup" and node.get("usergroup_id"):
                found.append(f"<!subteam^{node['usergroup_id']}>")
            for value in node.values():
                walk(value)

    if text:
        scan(text)
    walk(blocks or [])
    for attachment in attachments or []:
        if isinstance(attachment, dict):
            for key in ("pretext", "text"):
                if isinstance(attachment.get(key), str):
                    scan(attachment[key])
            for field in attachment.get("fields") or []:
                if isinstance(field, dict) and isinstance(field.get("value"), str):
                    scan(field["value"])
            walk(attachment.get("blocks") or [])
    return list(dict.fromkeys(found))


def text_object_problems(obj: Any, pointer: str, max_chars: int, plain_only: bool = False) -> list[str]:
    """Problems with one text object (type, emptiness, length), Slack-style."""
    allowed = ("plain_text",) if plain_only else ("plain_text", "mrkdwn")
    if not isinstance(obj, dict) or obj.get("type") not in allowed:
        return [f"must be a text object of type {' or '.join(allowed)} [json-pointer:{pointer}]"]
    text = obj.get("text")
    if not isinstance(text, str) or not text:
        return [f"must be more than 0 characters [json-pointer:{pointer}/text]"]
    if len(text) > max_chars:
        return [f"must be less than {max_chars + 1} characters [json-pointer:{pointer}/text]"]
    return []


def _elements_problems(block: dict, pointer: str, most: int) -> list[str]:
    elements = block.get("elements")
    if not isinstance(elements, list) or not elements:
        return [f"missing required field: elements [json-pointer:{pointer}]"]
    if len(elements) > most:
        return [f"no more than {most} items allowed [json-pointer:{pointer}/elements]"]
    return []


def block_problems(blocks: Any, max_blocks: int, pointer: str) -> list[str]:
    """Check Block Kit rules Slack enforces; returns Slack-style problem strings."""
    if not isinstance(blocks, list):
        return [f"must be an array [json-pointer:{pointer}]"]
    problems: list[str] = []
    if len(blocks) > max_blocks:
        problems.append(f"no more than {max_blocks} items allowed [json-pointer:{pointer}]")
    seen_ids: set[str] = set()
    for index, block in enumerate(blocks):
        at = f"{pointer}/{index}"
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            problems.append(f"missing required field: type [json-pointer:{at}]")
            continue
        kind = block["type"]
        if kind not in KNOWN_BLOCK_TYPES:
            problems.append(f"unsupported type: {kind} [json-pointer:{at}/type]")
        block_id = block.get("block_id")
        if block_id is not None:
            if len(str(block_id)) > MAX_BLOCK_ID:
                problems.append(f"must be less than {MAX_BLOCK_ID + 1} characters [json-pointer:{at}/block_id]")
            if block_id in seen_ids:
                problems.append(f"duplicate block_id: {block_id} [json-pointer:{at}/block_id]")
            seen_ids.add(block_id)
        if kind == "section":
            if "text" not in block and "fields" not in block:
                problems.append(f"must provide either text or fields [json-pointer:{at}]")
            if "text" in block:
                problems += text_object_problems(block["text"], f"{at}/text", MAX_SECTION_TEXT)
            fields = block.get("fields", [])
            if not isinstance(fields, list) or len(fields) > MAX_SECTION_FIELDS:
                problems.append(f"no more than {MAX_SECTION_FIELDS} items allowed [json-pointer:{at}/fields]")
            else:
                for n, field in enumerate(fields):
                    problems += text_object_problems(field, f"{at}/fields/{n}", MAX_SECTION_FIELD_TEXT)
        elif kind == "header":
            problems += text_object_problems(block.get("text"), f"{at}/text", MAX_HEADER_TEXT, plain_only=True)
        elif kind == "input":
            problems += text_object_problems(block.get("label"), f"{at}/label", 2000, plain_only=True)
            if not isinstance(block.get("element"), dict):
                problems.append(f"missing required field: element [json-pointer:{at}]")
        elif kind == "actions":
            problems += _elements_problems(block, at, 25)
        elif kind == "context":
            problems += _elements_problems(block, at, 10)
    return problems
