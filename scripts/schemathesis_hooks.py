"""schemathesis hooks for the admin API (loaded through SCHEMATHESIS_HOOKS by
scripts/schemathesis.sh).

`POST /v1/tenants/{id}/bulk` takes NDJSON, which schemathesis has no serializer for: its
generated text bodies go out as they are, as text/plain ones do.
"""

import schemathesis

schemathesis.serializer.alias("application/x-ndjson", "text/plain")
