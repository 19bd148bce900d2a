import Link from "next/link";
import type { PostMeta } from "@/lib/posts";
import { formatDate } from "@/lib/format";
import { TagChips } from "@/components/TagChips";

export function PostList({ posts }: { posts: PostMeta[] }) {
  if (posts.length === 0) return <p className="muted">No posts yet.</p>;
  return (
    <ol className="post-list">
      {posts.map((post) => (
        <li key={post.slug} className="post-card">
          <h2>
            <Link href={`/posts/${post.slug}`}>{post.title}</Link>
          </h2>
          <p className="post-date">
            <time dateTime={post.date}>{formatDate(post.date)}</time>
          </p>
          {post.summary ? <p>{post.summary}</p> : null}
          <TagChips tags={post.tags} />
        </li>
      ))}
    </ol>
  );
}
