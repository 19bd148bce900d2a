import type { Metadata } from "next";
import Link from "next/link";
import "./globals.css";

export const metadata: Metadata = {
  title: { default: "Quillpost", template: "%s · Quillpost" },
  description: "Notes on building small, fast websites.",
};

export default function RootLayout({ children }: { children: React.ReactNode }) {
  return (
    <html lang="en">
      <body>
        <header className="site-header">
          <div className="container header-inner">
            <Link href="/" className="site-title">
              Quillpost
            </Link>
            <nav aria-label="Main">
              <ul>
                <li>
                  <Link href="/">Posts</Link>
                </li>
                <li>
                  <Link href="/tags">Tags</Link>
                </li>
                <li>
                  <Link href="/admin">Admin</Link>
                </li>
              </ul>
            </nav>
          </div>
        </header>
        <main className="container">{children}</main>
        <footer className="site-footer">
          <div className="container">Quillpost · written in MDX, served by Next.js</div>
        </footer>
      </body>
    </html>
  );
}
