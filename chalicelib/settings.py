"""Typed settings, read from the environment once and validated.

This is the only module that reads the environment. Everything else asks `get_settings()`.
Resource names follow one rule, `{app_name}-{stage}-{logical}`, so `app.py` (which Chalice imports when it
packages the app), the CDK stack and the local runtime all agree on them without a second list.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    app_name: str = Field(default="projectionist", pattern=r"^[a-z][a-z0-9-]{1,30}$")
    stage: str = Field(default="dev", pattern=r"^[a-z][a-z0-9]{0,15}$")
    aws_region: str = Field(default="us-east-1", validation_alias="AWS_REGION")
    # None on AWS; the emulator's URL under the local runtime or LocalStack.
    aws_endpoint_url: str | None = Field(default=None, validation_alias="AWS_ENDPOINT_URL")
    # A per-service override, as botocore's own AWS_ENDPOINT_URL_<SERVICE> (e.g. SQS and S3 on LocalStack,
    # DynamoDB on the embedded emulator).
    aws_endpoint_url_dynamodb: str | None = Field(default=None, validation_alias="AWS_ENDPOINT_URL_DYNAMODB")
    aws_endpoint_url_sqs: str | None = Field(default=None, validation_alias="AWS_ENDPOINT_URL_SQS")
    aws_endpoint_url_s3: str | None = Field(default=None, validation_alias="AWS_ENDPOINT_URL_S3")
    # Timeouts for every AWS client, so a dead endpoint fails fast instead of hanging a request.
    aws_connect_timeout: float = Field(default=3.0, gt=0)
    aws_read_timeout: float = Field(default=30.0, gt=0)
    aws_max_attempts: int = Field(default=3, ge=1, le=10)
    # On AWS the stack passes the bucket's generated name (bucket names are global); locally it is derived.
    bucket: str | None = Field(default=None, validation_alias="BUCKET_NAME")
    enable_scheduler: bool = True
    # The key (Fernet, urlsafe base64 of 32 bytes) that encrypts stored secrets such as feeds' API keys.
    secrets_key: SecretStr | None = None
    # The key (any long random string) that signs stream grants; the API and the streamer share it.
    stream_signing_key: SecretStr | None = None
    # Where the API reaches the streamer (its internal URL on AWS; 127.0.0.1 under make run), and where players
    # reach it (the public URL of the stream server; by default the same).
    streamer_url: str | None = None
    streamer_public_url: str | None = None
    # The static token that guards /admin until the first admin account exists (then it stops working).
    admin_token: SecretStr | None = None
    # Accounts (chalicelib/auth/): the HS256 key of access tokens (Secrets Manager on AWS, a key file in the
    # data folder under make run), token lifetimes, Argon2id parameters (hashes are upgraded on login when
    # they change), the password policy, and the brute-force limits.
    jwt_secret: SecretStr | None = None
    access_token_minutes: int = Field(default=15, ge=1, le=60)
    refresh_token_days: int = Field(default=30, ge=1, le=365)
    argon2_time_cost: int = Field(default=3, ge=1, le=20)
    argon2_memory_kib: int = Field(default=65536, ge=8192, le=1048576)
    argon2_parallelism: int = Field(default=4, ge=1, le=16)
    password_min_length: int = Field(default=10, ge=8, le=128)
    login_max_failures: int = Field(default=5, ge=1, le=100)  # per account within the window: then locked
    login_max_failures_per_ip: int = Field(default=30, ge=1, le=10000)
    login_failure_window: int = Field(default=900, ge=10, le=86400)  # seconds
    login_lockout: int = Field(default=900, ge=1, le=86400)  # seconds
    # The largest request body the API reads (bytes); larger ones are a 413.
    max_body_bytes: int = Field(default=64 * 1024, ge=1024, le=6 * 1024 * 1024)
    # On AWS, secrets at rest are envelope-encrypted under this KMS key; without it, under SECRETS_KEY.
    secrets_kms_key_id: str | None = None
    # CloudWatch EMF metrics on stdout (the local runtime turns them off: they are noise in a terminal).
    emit_metrics: bool = True
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    # TMDB: a v4 read access token (sent as a bearer token) or a v3 API key. With neither, `make run` starts
    # the sample TMDB server and points tmdb_base_url at it.
    tmdb_base_url: str = "https://api.themoviedb.org"
    tmdb_token: SecretStr | None = None
    tmdb_api_key: SecretStr | None = None
    tmdb_rate_limit: float = Field(default=40.0, gt=0, le=1000)  # requests per second, across every process
    tmdb_timeout: float = Field(default=10.0, gt=0, le=60)
    tmdb_cache_ttl: int = Field(default=24 * 3600, ge=0)  # seconds; per endpoint overrides in upstreams/tmdb.py
    # The catalog: how many pages of each TMDB list to keep (20 items a page), and the languages whose titles
    # are searchable and whose genre names are kept (English is always kept).
    catalog_list_pages: int = Field(default=2, ge=1, le=25)
    catalog_languages: Annotated[list[str], NoDecode] = Field(default=["en", "fr", "de", "es"], min_length=1)

    # YTS: mirrors tried in order (a failing one is skipped for a cooldown), and one request budget for all.
    yts_mirrors: Annotated[list[str], NoDecode] = Field(
        default=["https://yts.mx", "https://yts.lt", "https://yts.gg", "https://yts.am", "https://yts.ag"],
        min_length=1,
    )
    yts_requests_per_minute: float = Field(default=20.0, gt=0, le=6000)
    yts_timeout: float = Field(default=10.0, gt=0, le=60)
    # Ranking: the quality a user prefers (better ones rank just below it: they cost more to stream), the
    # codecs their players decode, best first, and whether 3D releases may be chosen at all.
    preferred_quality: Literal["480p", "720p", "1080p", "2160p"] = "1080p"
    preferred_codecs: Annotated[list[str], NoDecode] = Field(default=["x264", "x265", "AV1"], min_length=1)
    allow_3d: bool = False
    # The VPN gate in front of torrent-side network work (streamer/vpn.py).
    vpn_required: bool = False
    vpn_interface: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,15}$")
    vpn_expected_egress: str | None = None
    vpn_probe_address: str = "1.1.1.1"
    vpn_check_interval: float = Field(default=30.0, ge=0, le=3600)
    vpn_retry_delay: int = Field(default=60, ge=1, le=900)  # seconds before a job the gate held back comes back
    # Tracker scrapes (BEP 15 retransmits after timeout * 2^n seconds, n up to tracker_retries).
    tracker_timeout: float = Field(default=5.0, gt=0, le=60)
    tracker_retries: int = Field(default=2, ge=0, le=8)
    # Trackers put in the magnets we build and scraped for health (YTS's recommended list by default).
    trackers: Annotated[list[str], NoDecode] = Field(
        default=[
            "udp://open.demonii.com:1337/announce",
            "udp://tracker.opentrackr.org:1337/announce",
            "udp://tracker.openbittorrent.com:80",
            "udp://tracker.coppersurfer.tk:6969",
            "udp://glotorrents.pw:6969/announce",
            "udp://torrent.gresille.org:80/announce",
            "udp://p4p.arenabg.com:1337",
            "udp://tracker.leechers-paradise.org:6969",
        ],
    )

    @field_validator(
        "aws_endpoint_url",
        "aws_endpoint_url_dynamodb",
        "aws_endpoint_url_sqs",
        "aws_endpoint_url_s3",
        "tmdb_token",
        "tmdb_api_key",
        "secrets_key",
        "stream_signing_key",
        "jwt_secret",
        "secrets_kms_key_id",
        "streamer_url",
        "streamer_public_url",
        mode="before",
    )
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("catalog_languages", "yts_mirrors", "preferred_codecs", "trackers", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):  # from the environment: "fr,de" or a JSON list
            text = value.strip()
            return json.loads(text) if text.startswith("[") else [p.strip() for p in text.split(",") if p.strip()]
        return value

    @field_validator("catalog_languages")
    @classmethod
    def _languages(cls, value: list[str]) -> list[str]:
        for language in value:
            if not re.fullmatch(r"[a-z]{2}", language):
                raise ValueError(f"{language!r} is not a two-letter ISO 639-1 language code")
        return ["en", *[language for language in dict.fromkeys(value) if language != "en"]]

    @field_validator("yts_mirrors")
    @classmethod
    def _urls(cls, value: list[str]) -> list[str]:
        for url in value:
            if not re.match(r"^https?://[^/\s]+", url):
                raise ValueError(f"{url!r} is not an http(s) URL")
        return [url.rstrip("/") for url in value]

    def endpoint_url(self, service: str) -> str | None:
        """The endpoint for one AWS service: its own override, else the shared one, else AWS itself."""
        specific = getattr(self, f"aws_endpoint_url_{service}", None)
        return specific or self.aws_endpoint_url

    @property
    def resource_prefix(self) -> str:
        return f"{self.app_name}-{self.stage}"

    def resource_name(self, logical: str) -> str:
        """Physical name of a table, queue or bucket, e.g. `projectionist-dev-catalog`."""
        return f"{self.resource_prefix}-{logical}"

    @property
    def bucket_name(self) -> str:
        return self.bucket or self.resource_name("media")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def reset_settings() -> None:
    """Forget the cached settings (tests and the local runtime change the environment)."""
    get_settings.cache_clear()
