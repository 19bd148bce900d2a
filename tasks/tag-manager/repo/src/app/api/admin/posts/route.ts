import { jsonData } from "@/lib/api";
import { requireAdmin } from "@/lib/auth";
import { getAllPosts, toMeta } from "@/lib/posts";

export const dynamic = "force-dynamic";

/** GET → 200 { data: PostMeta[] }, newest first. */
export async function GET(request: Request) {
  const denied = await requireAdmin(request);
  if (denied) return denied;

  const posts = await getAllPosts();
  return jsonData(posts.map(toMeta));
}
