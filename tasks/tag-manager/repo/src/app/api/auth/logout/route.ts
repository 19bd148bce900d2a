import { jsonData } from "@/lib/api";
import { clearedSessionCookieHeader } from "@/lib/auth";

export const dynamic = "force-dynamic";

/** POST → 200 { data: { ok: true } } and an expired session cookie. */
export async function POST() {
  const response = jsonData({ ok: true });
  response.headers.append("Set-Cookie", clearedSessionCookieHeader());
  return response;
}
