"""Settings read from the environment (and an optional .env file), validated once at start-up."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SLACK_API_URL = "https://slack.com/api/"


# Only for a bot with no Slack secrets at all (command-line tools, tests): fingerprints made with it
# are recognisable by anyone who has this source code.
LOCAL_REDACTION_KEY = b"warroom-local-redaction-key"


class SettingsError(Exception):
    """A missing or malformed setting; the message is one line a person can act on."""


class Settings(BaseSettings):
    """Everything the bot needs to run; tests build their own instead of reading the environment."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    slack_bot_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_api_url: str = SLACK_API_URL
    # Seconds a Slack Web API call may take before it is given up and retried (twice).
    slack_api_timeout: float = Field(default=10.0, gt=0, le=60)
    database_url: str = "sqlite:///warroom.db"
    warroom_host: str = "127.0.0.1"
    warroom_port: int = Field(default=3000, ge=1, le=65535)
    # Channel id (C…) where every new real incident is announced; empty means no announcement.
    warroom_announce_channel: str = ""
    # Channel id where stakeholder updates are posted besides the war room; empty: war room only.
    warroom_updates_channel: str = ""
    # The team's policy file; the one shipped at the top of the repository by default.
    warroom_playbook: str = ""
    # The folder of drill scenarios (`scenarios/` beside the code if empty).
    warroom_scenarios: str = ""
    # How often the reminder ticker asks the database what is due (a duration: 5s, 1m).
    warroom_tick: str = "5s"
    # Keys the hashes of values redacted from what people type (secrets, personal data). Set it
    # (the same on every replica) so fingerprints survive rotating Slack's secrets; by default it
    # is derived from the signing secret (or the app token in Socket Mode).
    warroom_redaction_key: SecretStr | None = None
    # `warroom serve`'s log lines: one JSON object a line (json), or plain text (text).
    warroom_log_format: Literal["json", "text"] = "json"
    # How long ids of handled Slack deliveries (event ids, command trigger ids) are kept, so a
    # redelivery is recognised: Slack retries a failed event over about 5 minutes. At least 1h.
    warroom_event_retention: str = "24h"
    # How long a command's room (declare) or room message (note, decision) is left to the process
    # that acknowledged it before another process opens or posts it: that one died in between. A
    # message still waiting its turn in its room at half this is left to that takeover too
    # (commands.log). Over twice what a Slack call can take with its retries (bot.after_ack); at least 1s.
    warroom_repost_after: str = "2m"
    # Pin `warroom serve` to this one CPU (its number, as `taskset -c` takes it); empty: not pinned.
    # One interpreter runs one thread at a time, so its threads spread over several CPUs mostly
    # wake each other across them; on the 2-core benchmark machine pinning cut the context
    # switches a command by three quarters (docs/deploy.md "Speed"). Give each process its own CPU.
    warroom_cpu: int | None = Field(default=None, ge=0)

    @field_validator("warroom_cpu", mode="before")
    @classmethod
    def _empty_cpu_is_unpinned(cls, value):
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("warroom_tick")
    @classmethod
    def _tick_is_a_duration(cls, value: str) -> str:
        from bot.playbook import parse_duration

        parse_duration(value)
        return value

    @field_validator("warroom_event_retention")
    @classmethod
    def _retention_outlasts_slack_retries(cls, value: str) -> str:
        return _duration_at_least(value, "1h", "keep handled Slack delivery ids at least 1h (Slack redelivers a "
                                  "failed event for about 5 minutes); the default is 24h")

    @field_validator("warroom_repost_after")
    @classmethod
    def _repost_after_leaves_time_to_post(cls, value: str) -> str:
        return _duration_at_least(value, "1s", "leave the process that acknowledged a command at least 1s to "
                                  "post its message; the default is 2m")

    @property
    def repost_after(self):
        from bot.playbook import parse_duration

        return parse_duration(self.warroom_repost_after)

    @property
    def event_retention(self):
        from bot.playbook import parse_duration

        return parse_duration(self.warroom_event_retention)

    @property
    def tick(self):
        from bot.playbook import parse_duration

        return parse_duration(self.warroom_tick)

    @property
    def redaction_key(self) -> bytes:
        from bot.redaction import derive_key

        for secret in (self.warroom_redaction_key, self.slack_signing_secret, self.slack_app_token):
            if secret is not None and secret.get_secret_value():
                return derive_key(secret.get_secret_value())
        return LOCAL_REDACTION_KEY

    @field_validator("slack_api_url")
    @classmethod
    def _api_url_ends_with_slash(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL such as https://slack.com/api/")
        # slack_sdk joins base_url and the method name by plain concatenation.
        return value if value.endswith("/") else value + "/"

    @field_validator("database_url")
    @classmethod
    def _database_url_is_supported(cls, value: str) -> str:
        if not value.startswith(("sqlite", "postgresql")):
            raise ValueError("must be a sqlite:/// or postgresql+psycopg:// URL")
        if value.startswith("postgresql://") or value.startswith("postgres://"):
            # psycopg 3 is the driver we ship; plain postgresql:// would ask for psycopg2.
            value = "postgresql+psycopg://" + value.split("://", 1)[1]
        return value

    def require_slack_credentials(self, socket_mode: bool = False) -> None:
        """Fail with one clear line when a token that serving needs is missing."""
        needed = {"SLACK_BOT_TOKEN": self.slack_bot_token}
        if socket_mode:
            needed["SLACK_APP_TOKEN"] = self.slack_app_token
        else:
            needed["SLACK_SIGNING_SECRET"] = self.slack_signing_secret
        for name, value in needed.items():
            if value is None or not value.get_secret_value():
                raise SettingsError(
                    f"{name} is not set: export it from your Slack app's settings "
                    "(or run `warroom sandbox` to try the bot without Slack)"
                )


def load_settings(**overrides) -> Settings:
    """Build settings from the environment, turning validation errors into one readable line."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"]).upper()
            problems.append(f"{field}: {error['msg']}")
        raise SettingsError("invalid settings: " + "; ".join(problems)) from None


def _duration_at_least(value: str, minimum: str, advice: str) -> str:
    """`value` if it is a duration (5s, 2m, 24h) of at least `minimum`; else a ValueError with `advice`."""
    from bot.playbook import parse_duration

    if parse_duration(value) < parse_duration(minimum):
        raise ValueError(f"{value!r} is too short: {advice}")
    return value
