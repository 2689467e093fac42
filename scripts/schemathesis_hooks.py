"""schemathesis hooks for the admin API (loaded through SCHEMATHESIS_HOOKS by
scripts/schemathesis.sh).

`POST /v1/tenants/{id}/bulk` takes NDJSON, which schemathesis has no serializer for: its
generated text bodies go out as they are, as text/plain ones do.

In the stateful run (ARBITER_ST_FRESH_IDEMPOTENCY_KEYS set), every `Idempotency-Key` is a
fresh one. Its scenarios are unrelated requests, but the generator draws the same small
key again for a later one: the admin then answers, as a reused key must, with the first
response (`Idempotent-Replayed: true`), naming a resource an earlier scenario may have
deleted since, which the stateful checks take for a created resource that is gone.
"""

import os
import uuid

import schemathesis

schemathesis.serializer.alias("application/x-ndjson", "text/plain")


@schemathesis.hook
def map_headers(ctx, headers):
    if headers and os.environ.get("ARBITER_ST_FRESH_IDEMPOTENCY_KEYS") and "Idempotency-Key" in headers:
        headers["Idempotency-Key"] = uuid.uuid4().hex
    return headers
