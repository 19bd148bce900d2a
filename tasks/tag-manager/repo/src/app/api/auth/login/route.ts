import { jsonData, jsonError, readJsonObject } from "@/lib/api";
import { isValidPassword, sessionCookieHeader, sessionToken } from "@/lib/auth";

export const dynamic = "force-dynamic";

/** POST { "password": "..." } → 200 { data: { ok: true } } and the session cookie. */
export async function POST(request: Request) {
  const body = await readJsonObject(request);
  if (!body.ok) return body.response;

  const { password } = body.value;
  if (typeof password !== "string" || password === "") {
    return jsonError("password must be a non-empty string", 400);
  }
  if (!(await isValidPassword(password))) {
    return jsonError("invalid password", 401);
  }

  const response = jsonData({ ok: true });
  response.headers.append("Set-Cookie", sessionCookieHeader(await sessionToken()));
  return response;
}
