import type { Metadata } from "next";
import Link from "next/link";
import { notFound } from "next/navigation";
import { PostList } from "@/components/PostList";
import { getPostsByTag, toMeta } from "@/lib/posts";
import { readRegistry } from "@/lib/registry";

export const dynamic = "force-dynamic";

type Props = { params: Promise<{ tag: string }> };

function decode(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment;
  }
}

export async function generateMetadata({ params }: Props): Promise<Metadata> {
  const { tag } = await params;
  return { title: `#${decode(tag)}` };
}

export default async function TagPage({ params }: Props) {
  const tag = decode((await params).tag);
  const [posts, registry] = await Promise.all([getPostsByTag(tag), readRegistry()]);
  if (posts.length === 0) notFound();

  return (
    <>
      <h1 className="page-title">{`#${tag}`}</h1>
      {registry[tag]?.description ? <p className="lead">{registry[tag].description}</p> : null}
      <PostList posts={posts.map(toMeta)} />
      <p>
        <Link href="/tags">← All tags</Link>
      </p>
    </>
  );
}
