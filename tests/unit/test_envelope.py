"""The job envelope on the wire."""

from __future__ import annotations

import json

import pytest

from chalicelib.errors import InvalidEnvelopeError
from chalicelib.jobs.envelope import Envelope


def test_an_envelope_round_trips_through_its_body() -> None:
    sent = Envelope(name="catalog.refresh_show", args={"show_id": 1399}, batch_id="b1")
    received = Envelope.parse(sent.to_body())
    assert received == sent
    assert received.attempt == 1 and received.id and received.correlation_id
    assert received.enqueued_at.tzinfo is not None


@pytest.mark.parametrize(
    "body, says",
    [
        ("", "empty"),
        ("not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        (json.dumps({"args": {}}), "name"),
        (json.dumps({"name": "NoDots"}), "name"),
        (json.dumps({"name": "a.b", "attempt": 0}), "attempt"),
        (json.dumps({"name": "a.b", "surprise": 1}), "surprise"),
        (json.dumps({"name": "a.b", "args": [1]}), "args"),
    ],
)
def test_a_body_that_is_not_an_envelope_is_refused_with_the_reason(body: str, says: str) -> None:
    with pytest.raises(InvalidEnvelopeError, match=says) as caught:
        Envelope.parse(body)
    assert caught.value.permanent
