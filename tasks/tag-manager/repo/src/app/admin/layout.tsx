import type { Metadata } from "next";
import { cookies } from "next/headers";
import { redirect } from "next/navigation";
import { AdminNav } from "@/components/AdminNav";
import { isValidSessionToken, SESSION_COOKIE } from "@/lib/auth";

export const dynamic = "force-dynamic";

export const metadata: Metadata = { title: { default: "Admin", template: "%s · Admin · Quillpost" } };

export default async function AdminLayout({ children }: { children: React.ReactNode }) {
  // The proxy already redirects anonymous visitors; this is the second line of defence.
  const store = await cookies();
  if (!(await isValidSessionToken(store.get(SESSION_COOKIE)?.value))) {
    redirect("/login?next=/admin");
  }

  return (
    <div className="admin">
      <AdminNav />
      <div className="admin-body">{children}</div>
    </div>
  );
}
