import { PostList } from "@/components/PostList";
import { getAllPosts, toMeta } from "@/lib/posts";

// Content is read from disk on every request, so edits show up without a rebuild.
export const dynamic = "force-dynamic";

export default async function HomePage() {
  const posts = await getAllPosts();
  return (
    <>
      <h1 className="page-title">Latest posts</h1>
      <PostList posts={posts.map(toMeta)} />
    </>
  );
}
