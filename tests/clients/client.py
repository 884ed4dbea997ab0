"""An integrator's script through the Python client openapi-python-client
generates from openapi/docket.json (tests/it/contract.rs runs it against a
live server): reads, a filter, cursor paging to the end, a typed problem,
an idempotent creation. Exits non-zero on the first broken promise."""

import os
import sys
import uuid

from docket_client import AuthenticatedClient
from docket_client.api.data import matters_list
from docket_client.api.org import org_get
from docket_client.api.tokens import tokens_create_service, tokens_list
from docket_client.models import (
    MattersListStatus,
    Org,
    PageRecord,
    PageToken,
    Problem,
    ProblemCode,
    ServiceTokenCreate,
    TokenSecret,
)
from docket_client.types import UNSET, Unset


def check(ok: bool, what: str) -> None:
    if not ok:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)


def main() -> None:
    client = AuthenticatedClient(
        base_url=os.environ["DOCKET_URL"] + "/api/v1",
        token=os.environ["DOCKET_TOKEN"],
        verify_ssl=False,
    )
    org = org_get.sync(client=client)
    check(isinstance(org, Org) and org.slug == "smith-jones", f"org: {org!r}")

    page = matters_list.sync(client=client, status=MattersListStatus.OPEN, limit=5)
    check(isinstance(page, PageRecord), f"matters: {page!r}")

    seen: list[str] = []
    cursor: str | Unset = UNSET
    pages = 0
    while True:
        tokens = tokens_list.sync(client=client, limit=2, cursor=cursor)
        check(isinstance(tokens, PageToken), f"tokens page: {tokens!r}")
        assert isinstance(tokens, PageToken)
        seen.extend(t.id for t in tokens.items)
        pages += 1
        if isinstance(tokens.next_cursor, Unset):
            break
        cursor = tokens.next_cursor
    check(pages > 1 and len(seen) == len(set(seen)), f"paged {pages} pages, {len(seen)} tokens")

    bad = tokens_list.sync_detailed(client=client, cursor="zzz")
    check(bad.status_code == 400 and isinstance(bad.parsed, Problem), f"bad cursor: {bad.content!r}")
    assert isinstance(bad.parsed, Problem)
    check(bad.parsed.code == ProblemCode.INVALID_CURSOR and bad.parsed.field == "cursor", f"{bad.parsed!r}")

    key = str(uuid.uuid4())
    body = ServiceTokenCreate(name="python client", role="staff")
    first = tokens_create_service.sync(client=client, body=body, idempotency_key=key)
    again = tokens_create_service.sync_detailed(client=client, body=body, idempotency_key=key)
    check(isinstance(first, TokenSecret), f"create: {first!r}")
    assert isinstance(first, TokenSecret)
    check(isinstance(again.parsed, TokenSecret), f"replay: {again.content!r}")
    assert isinstance(again.parsed, TokenSecret)
    check(again.parsed.record.id == first.record.id, "the retry replays the first creation")
    check(again.headers.get("idempotent-replayed") == "true", "the replay says so")
    print("python client: ok")


if __name__ == "__main__":
    main()
