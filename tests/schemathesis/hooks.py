"""Schemathesis hooks for Herald's conformance run (tests/api/conformance.rs)."""

import uuid

import schemathesis


def _valid_key(value):
    return isinstance(value, str) and 1 <= len(value) <= 255 and all(
        "!" <= c <= "~" for c in value
    )


@schemathesis.hook
def map_headers(context, headers):
    # Generated Idempotency-Keys repeat across different requests, which Herald rightly refuses
    # (422, key reused): give each request with a valid key a key of its own. Invalid keys stay,
    # so their refusal is still checked.
    if headers and _valid_key(headers.get("Idempotency-Key")):
        headers["Idempotency-Key"] = uuid.uuid4().hex
    return headers
