"use client";

import Link from "next/link";
import { usePathname } from "next/navigation";
import { useState } from "react";

/** The admin section's links. Add a section by adding an entry here. */
const items = [
  { href: "/admin", label: "Dashboard" },
  { href: "/admin/posts", label: "Posts" },
  { href: "/admin/tags", label: "Tags" },
];

function isActive(pathname: string, href: string): boolean {
  return href === "/admin" ? pathname === href : pathname === href || pathname.startsWith(`${href}/`);
}

export function AdminNav() {
  const pathname = usePathname();
  const [leaving, setLeaving] = useState(false);

  async function logout() {
    setLeaving(true);
    await fetch("/api/auth/logout", { method: "POST" });
    // A full navigation, so no admin page stays in the router's cache.
    window.location.assign("/login");
  }

  return (
    <nav className="admin-nav" aria-label="Admin">
      <ul>
        {items.map((item) => (
          <li key={item.href}>
            <Link href={item.href} aria-current={isActive(pathname, item.href) ? "page" : undefined}>
              {item.label}
            </Link>
          </li>
        ))}
      </ul>
      <button type="button" className="link-button" onClick={logout} disabled={leaving}>
        Log out
      </button>
    </nav>
  );
}
