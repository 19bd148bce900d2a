import type { Metadata } from "next";
import { LoginForm } from "./LoginForm";

export const dynamic = "force-dynamic";

export const metadata: Metadata = { title: "Log in" };

type Props = { searchParams: Promise<{ next?: string | string[] }> };

/** Only same-site paths are followed after logging in. */
function safeNext(next: string | string[] | undefined): string {
  const value = Array.isArray(next) ? next[0] : next;
  if (!value || !value.startsWith("/") || value.startsWith("//") || value.startsWith("/\\")) {
    return "/admin";
  }
  return value;
}

export default async function LoginPage({ searchParams }: Props) {
  const { next } = await searchParams;
  return (
    <section className="login">
      <h1 className="page-title">Log in</h1>
      <p className="muted">The admin section needs the admin password.</p>
      <LoginForm next={safeNext(next)} />
    </section>
  );
}
