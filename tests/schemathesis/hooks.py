"""Schemathesis hooks for Herald's conformance run (tests/api/conformance.rs)."""

import os
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


@schemathesis.hook
def filter_case(context, case):
    # The run's own token must outlive the run, or every later request would only test 401s:
    # never revoke it.
    own = os.environ.get("HERALD_CONFORMANCE_TOKEN_ID")
    if case.method.upper() == "DELETE" and case.path.endswith("/tokens/{id}"):
        return str((case.path_parameters or {}).get("id")) != own
    return True
