import Link from "next/link";
import { getAllPosts, getAllTags } from "@/lib/posts";

export const dynamic = "force-dynamic";

export default async function AdminDashboard() {
  const [posts, tags] = await Promise.all([getAllPosts(), getAllTags()]);
  const latest = posts[0];
  return (
    <>
      <h1 className="page-title">Dashboard</h1>
      <dl className="stats">
        <div>
          <dt>Posts</dt>
          <dd>{posts.length}</dd>
        </div>
        <div>
          <dt>Tags in use</dt>
          <dd>{tags.length}</dd>
        </div>
      </dl>
      {latest ? (
        <p>
          Latest post: <Link href={`/posts/${latest.slug}`}>{latest.title}</Link> ({latest.date})
        </p>
      ) : null}
    </>
  );
}
