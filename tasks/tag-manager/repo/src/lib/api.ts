import { NextResponse } from "next/server";

/**
 * The JSON envelope every API route answers with:
 *   success: { "data": ... }            (200 unless told otherwise)
 *   failure: { "error": "message" }     (4xx/5xx)
 */
export function jsonData<T>(data: T, status = 200): NextResponse {
  return NextResponse.json({ data }, { status });
}

export function jsonError(error: string, status: number): NextResponse {
  return NextResponse.json({ error }, { status });
}

/**
 * Parses a request's JSON body. Returns the value, or a 400 response when the body is not JSON
 * or not a JSON object.
 */
export async function readJsonObject(
  request: Request,
): Promise<{ ok: true; value: Record<string, unknown> } | { ok: false; response: NextResponse }> {
  let value: unknown;
  try {
    value = await request.json();
  } catch {
    return { ok: false, response: jsonError("invalid JSON body", 400) };
  }
  if (!value || typeof value !== "object" || Array.isArray(value)) {
    return { ok: false, response: jsonError("body must be a JSON object", 400) };
  }
  return { ok: true, value: value as Record<string, unknown> };
}
