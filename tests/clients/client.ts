// An integrator's script typed by the types openapi-typescript generates
// from openapi/docket.json (`tsc --strict`), run with node's fetch against a
// live server by tests/it/contract.rs. Exits non-zero on the first broken promise.
import type { components, paths } from "./docket";

// Node's globals, declared here so the check needs no @types/node.
declare const process: { env: Record<string, string | undefined>; exit(code: number): never };

type Org = components["schemas"]["Org"];
type Problem = components["schemas"]["Problem"];
type TokenPage = paths["/tokens"]["get"]["responses"]["200"]["content"]["application/json"];
type TokenQuery = NonNullable<paths["/tokens"]["get"]["parameters"]["query"]>;
type MatterStatus = NonNullable<NonNullable<paths["/matters"]["get"]["parameters"]["query"]>["status"]>;
type ServiceToken = components["schemas"]["ServiceTokenCreate"];
type TokenSecret = components["schemas"]["TokenSecret"];

const base = `${process.env.DOCKET_URL}/api/v1`;
const auth = { authorization: `Bearer ${process.env.DOCKET_TOKEN}` };

function check(ok: boolean, what: string): void {
  if (!ok) {
    console.error(`FAILED: ${what}`);
    process.exit(1);
  }
}

async function get<T>(path: string, headers: Record<string, string> = {}): Promise<[number, T, Headers]> {
  const r = await fetch(base + path, { headers: { ...auth, ...headers } });
  const text = await r.text();
  return [r.status, (text ? JSON.parse(text) : null) as T, r.headers];
}

function query(q: TokenQuery): string {
  const params = new URLSearchParams();
  if (q.limit !== undefined) params.set("limit", String(q.limit));
  if (q.cursor !== undefined) params.set("cursor", q.cursor);
  return params.toString();
}

async function main(): Promise<void> {
  const [status, org, headers] = await get<Org>("/org");
  check(status === 200 && org.slug === "smith-jones", `org: ${status}`);
  const etag = headers.get("etag") ?? "";
  const [unchanged] = await get<null>("/org", { "if-none-match": etag });
  check(unchanged === 304, `If-None-Match: ${unchanged}`);
  check(headers.get("ratelimit-remaining") !== null, "RateLimit-Remaining");

  const open: MatterStatus = "Open";
  const [listed] = await get<unknown>(`/matters?status=${open}`);
  check(listed === 200, `matters: ${listed}`);

  const seen = new Set<string>();
  let cursor: string | undefined;
  let pages = 0;
  do {
    const [s, page] = await get<TokenPage>(`/tokens?${query({ limit: 2, cursor })}`);
    check(s === 200, `tokens page: ${s}`);
    for (const t of page.items) {
      check(!seen.has(t.id), `token ${t.id} twice`);
      seen.add(t.id);
    }
    cursor = page.next_cursor;
    pages += 1;
  } while (cursor !== undefined);
  check(pages > 1, `paged ${pages} pages`);

  const [bad, problem] = await get<Problem>("/matters?status=Bogus");
  const code: Problem["code"] = problem.code;
  check(bad === 400 && code === "bad-request" && problem.field === "status", `filter: ${JSON.stringify(problem)}`);

  const body: ServiceToken = { name: "typescript client", role: "staff" };
  const create = () =>
    fetch(`${base}/tokens/service`, {
      method: "POST",
      headers: { ...auth, "content-type": "application/json", "idempotency-key": "ts-client-1" },
      body: JSON.stringify(body),
    });
  const first = await create();
  const again = await create();
  check(first.status === 201 && again.status === 201, `create: ${first.status} ${again.status}`);
  const [a, b] = [(await first.json()) as TokenSecret, (await again.json()) as TokenSecret];
  check(a.record.id === b.record.id, "the retry replays the first creation");
  check(first.headers.get("location") === `/api/v1/tokens/${a.record.id}`, "Location on 201");
  console.log("typescript client: ok");
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
