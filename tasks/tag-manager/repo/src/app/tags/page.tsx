import type { Metadata } from "next";
import Link from "next/link";
import { plural } from "@/lib/format";
import { getAllPosts, getAllTags } from "@/lib/posts";
import { readRegistry } from "@/lib/registry";

export const dynamic = "force-dynamic";

export const metadata: Metadata = { title: "Tags" };

export default async function TagsPage() {
  const [tags, posts, registry] = await Promise.all([getAllTags(), getAllPosts(), readRegistry()]);
  return (
    <>
      <h1 className="page-title">Tags</h1>
      {tags.length === 0 ? (
        <p className="muted">No tags yet.</p>
      ) : (
        <ul className="tag-index">
          {tags.map((tag) => {
            const count = posts.filter((post) => post.tags.includes(tag)).length;
            return (
              <li key={tag}>
                <Link href={`/tags/${encodeURIComponent(tag)}`} className="tag-chip">
                  {`#${tag}`}
                </Link>{" "}
                <span className="muted">{plural(count, "post")}</span>
                {registry[tag]?.description ? <p>{registry[tag].description}</p> : null}
              </li>
            );
          })}
        </ul>
      )}
    </>
  );
}
