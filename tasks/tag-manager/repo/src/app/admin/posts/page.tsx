import type { Metadata } from "next";
import Link from "next/link";
import { getAllPosts } from "@/lib/posts";
import { EditTitle } from "./EditTitle";

export const dynamic = "force-dynamic";

export const metadata: Metadata = { title: "Posts" };

export default async function AdminPostsPage() {
  const posts = await getAllPosts();
  return (
    <>
      <h1 className="page-title">Posts</h1>
      <table className="admin-table">
        <thead>
          <tr>
            <th scope="col">Title</th>
            <th scope="col">Date</th>
            <th scope="col">Tags</th>
            <th scope="col">Actions</th>
          </tr>
        </thead>
        <tbody>
          {posts.map((post) => (
            <tr key={post.slug}>
              <td>
                <Link href={`/posts/${post.slug}`}>{post.title}</Link>
              </td>
              <td className="nowrap">{post.date}</td>
              <td>{post.tags.join(", ")}</td>
              <td>
                <EditTitle slug={post.slug} title={post.title} />
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </>
  );
}
