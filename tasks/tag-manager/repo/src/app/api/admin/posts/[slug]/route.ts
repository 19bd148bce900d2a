import { jsonData, jsonError, readJsonObject } from "@/lib/api";
import { requireAdmin } from "@/lib/auth";
import { getPostBySlug, readPostFile, toMeta, writePostFrontMatter } from "@/lib/posts";

export const dynamic = "force-dynamic";

type Context = { params: Promise<{ slug: string }> };

/** GET → 200 { data: Post } (body included), or 404. */
export async function GET(request: Request, { params }: Context) {
  const denied = await requireAdmin(request);
  if (denied) return denied;

  const { slug } = await params;
  const post = await getPostBySlug(slug);
  if (!post) return jsonError("post not found", 404);
  return jsonData(post);
}

const EDITABLE_FIELDS = ["title", "summary"] as const;

/**
 * PATCH { "title"?: string, "summary"?: string } → 200 { data: PostMeta }.
 * 400 when the body is not a JSON object, has no editable field, or a field is not a non-empty
 * string; 404 when the post does not exist.
 */
export async function PATCH(request: Request, { params }: Context) {
  const denied = await requireAdmin(request);
  if (denied) return denied;

  const body = await readJsonObject(request);
  if (!body.ok) return body.response;

  const changes: Record<string, string> = {};
  for (const field of EDITABLE_FIELDS) {
    const value = body.value[field];
    if (value === undefined) continue;
    if (typeof value !== "string" || value.trim() === "") {
      return jsonError(`${field} must be a non-empty string`, 400);
    }
    changes[field] = value.trim();
  }
  if (Object.keys(changes).length === 0) {
    return jsonError("nothing to update: send title and/or summary", 400);
  }

  const { slug } = await params;
  const file = await readPostFile(slug);
  if (!file) return jsonError("post not found", 404);

  await writePostFrontMatter(slug, { ...file.data, ...changes });
  const post = await getPostBySlug(slug);
  return jsonData(post ? toMeta(post) : null);
}
