import { NextResponse } from "next/server";

/**
 * Admin authentication: one shared password (env ADMIN_PASSWORD, "quillpost-admin" when unset).
 * Logging in sets the cookie below to the hex SHA-256 of "quillpost:" + the password.
 */
export const SESSION_COOKIE = "quillpost_session";
export const DEFAULT_ADMIN_PASSWORD = "quillpost-admin";

export function getAdminPassword(): string {
  return process.env.ADMIN_PASSWORD || DEFAULT_ADMIN_PASSWORD;
}

async function sha256Hex(text: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return Array.from(new Uint8Array(digest), (byte) => byte.toString(16).padStart(2, "0")).join("");
}

/** The session token for a password (the admin password by default). */
export async function sessionToken(password: string = getAdminPassword()): Promise<string> {
  return sha256Hex(`quillpost:${password}`);
}

function constantTimeEqual(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}

export async function isValidSessionToken(token: string | undefined | null): Promise<boolean> {
  if (!token) return false;
  return constantTimeEqual(token, await sessionToken());
}

export async function isValidPassword(password: string): Promise<boolean> {
  return constantTimeEqual(await sessionToken(password), await sessionToken());
}

function readCookie(request: Request, name: string): string | undefined {
  const header = request.headers.get("cookie");
  if (!header) return undefined;
  for (const part of header.split(";")) {
    const index = part.indexOf("=");
    if (index === -1) continue;
    if (part.slice(0, index).trim() === name) {
      const value = part.slice(index + 1).trim();
      try {
        return decodeURIComponent(value);
      } catch {
        return value;
      }
    }
  }
  return undefined;
}

/** Whether the request carries a valid admin session cookie. */
export async function isAdminRequest(request: Request): Promise<boolean> {
  return isValidSessionToken(readCookie(request, SESSION_COOKIE));
}

/**
 * For admin route handlers: a 401 response when the request is not logged in, else null.
 *
 *   const denied = await requireAdmin(request);
 *   if (denied) return denied;
 */
export async function requireAdmin(request: Request): Promise<NextResponse | null> {
  if (await isAdminRequest(request)) return null;
  return NextResponse.json({ error: "unauthorized" }, { status: 401 });
}

/** The Set-Cookie value that logs a browser in. */
export function sessionCookieHeader(token: string): string {
  return `${SESSION_COOKIE}=${token}; HttpOnly; Path=/; SameSite=Lax`;
}

/** The Set-Cookie value that logs a browser out. */
export function clearedSessionCookieHeader(): string {
  return `${SESSION_COOKIE}=; HttpOnly; Path=/; SameSite=Lax; Max-Age=0`;
}
