"""What every PynamoDB model shares: table names, region and endpoint come from the settings, lazily.

A model declares `class Meta(TableMeta): logical_name = "jobs"`; the physical table name
(`projectionist-dev-jobs`), region and endpoint are looked up in the settings when PynamoDB asks for them,
so one set of models serves every stage and every endpoint (AWS, the local emulator, LocalStack).
"""

from __future__ import annotations

from typing import Any

from chalicelib.settings import get_settings


class _SettingsBacked(type):
    @property
    def table_name(cls) -> str:
        return get_settings().resource_name(cls.logical_name)  # type: ignore[attr-defined]

    @property
    def region(cls) -> str:
        return get_settings().aws_region

    @property
    def host(cls) -> str | None:
        return get_settings().endpoint_url("dynamodb")

    @property
    def connect_timeout_seconds(cls) -> float:
        return get_settings().aws_connect_timeout

    @property
    def read_timeout_seconds(cls) -> float:
        return get_settings().aws_read_timeout


class TableMeta(metaclass=_SettingsBacked):
    logical_name: str = ""
    billing_mode = "PAY_PER_REQUEST"
    max_retry_attempts = 3


def table_schema(model: Any) -> dict[str, Any]:
    """The table's keys, GSIs and TTL attribute, as infra code needs them (CDK, provisioning, tests)."""
    from pynamodb.attributes import TTLAttribute

    schema = model._get_schema()
    ttl = [attr.attr_name for attr in model.get_attributes().values() if isinstance(attr, TTLAttribute)]
    return {
        "logical_name": model.Meta.logical_name,
        "key_schema": schema["key_schema"],
        "attribute_definitions": schema["attribute_definitions"],
        "global_secondary_indexes": schema["global_secondary_indexes"],
        "ttl_attribute": ttl[0] if ttl else None,
    }


_connection: Any = None


def connection() -> Any:
    """A PynamoDB connection for transactions, built once from the settings like the models' own."""
    global _connection
    if _connection is None:
        from pynamodb.connection import Connection

        settings = get_settings()
        _connection = Connection(
            region=settings.aws_region,
            host=settings.endpoint_url("dynamodb"),
            connect_timeout_seconds=settings.aws_connect_timeout,
            read_timeout_seconds=settings.aws_read_timeout,
        )
    return _connection


def reset_connection() -> None:
    global _connection
    _connection = None


def update_if(item: Any, actions: list[Any], condition: Any) -> bool:
    """Apply `actions` to `item` if `condition` holds: True if applied, False if another writer changed the
    item first (DynamoDB's conditional check failed). Any other failure raises."""
    from pynamodb.exceptions import UpdateError

    try:
        item.update(actions=actions, condition=condition)
        return True
    except UpdateError as exc:
        if getattr(exc, "cause_response_code", None) == "ConditionalCheckFailedException":
            return False
        raise


def checked_start_key(value: Any, names: set[str], field: str = "cursor") -> dict[str, Any] | None:
    """A pagination cursor's DynamoDB start key, checked before it reaches DynamoDB: only the table's and its
    indexes' key attributes, each a short string. Anything else is the client's doing: a 400, never a 500."""
    from chalicelib.errors import ValidationError

    if value is None:
        return None
    ok = isinstance(value, dict) and 0 < len(value) <= 4 and set(value) <= names
    if ok:
        for attribute in value.values():
            string = attribute.get("S") if isinstance(attribute, dict) and set(attribute) == {"S"} else None
            ok = ok and isinstance(string, str) and 0 < len(string.encode()) <= 1024
    if not ok:
        raise ValidationError("cursor is not one this API returned", details={"field": field})
    return dict(value)
