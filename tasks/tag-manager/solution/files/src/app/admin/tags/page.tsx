import type { Metadata } from "next";
import { getTagsWithCounts } from "@/lib/tags";
import { TagTable } from "./TagTable";

export const dynamic = "force-dynamic";

export const metadata: Metadata = { title: "Tags" };

export default async function AdminTagsPage() {
  const tags = await getTagsWithCounts();
  return (
    <>
      <h1 className="page-title">Tags</h1>
      <p className="muted">
        Rename or delete a tag everywhere it is used. Renaming changes the posts&apos; front matter
        and the tag registry.
      </p>
      <TagTable initialTags={tags} />
    </>
  );
}
