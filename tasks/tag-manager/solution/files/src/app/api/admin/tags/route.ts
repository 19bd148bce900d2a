import { jsonData, jsonError, readJsonObject } from "@/lib/api";
import { requireAdmin } from "@/lib/auth";
import { deleteTag, getTagsWithCounts, mergeTags, renameTag, TagError } from "@/lib/tags";

export const dynamic = "force-dynamic";

function failure(error: unknown) {
  if (error instanceof TagError) return jsonError(error.message, error.status);
  throw error;
}

/** GET → 200 { data: { name, count, orphan }[] }, orphans included with count 0. */
export async function GET(request: Request) {
  const denied = await requireAdmin(request);
  if (denied) return denied;

  return jsonData(await getTagsWithCounts());
}

/**
 * PATCH { "action": "rename" | "merge", "from": string, "to": string } → 200 { data: TagChange }.
 * 400 on a bad body, 404 when `from` (or, for a merge, `to`) does not exist, 409 when renaming
 * onto an existing tag.
 */
export async function PATCH(request: Request) {
  const denied = await requireAdmin(request);
  if (denied) return denied;

  const body = await readJsonObject(request);
  if (!body.ok) return body.response;

  const { action, from, to } = body.value;
  if (action !== "rename" && action !== "merge") {
    return jsonError('action must be "rename" or "merge"', 400);
  }
  if (typeof from !== "string" || from.trim() === "") {
    return jsonError('"from" must be a non-empty string', 400);
  }
  if (typeof to !== "string" || to.trim() === "") {
    return jsonError('"to" must be a non-empty string', 400);
  }

  try {
    const change = action === "rename" ? await renameTag(from, to) : await mergeTags(from, to);
    return jsonData(change);
  } catch (error) {
    return failure(error);
  }
}

/** DELETE ?name=<tag> → 200 { data: TagChange }; 400 without a name, 404 for an unknown tag. */
export async function DELETE(request: Request) {
  const denied = await requireAdmin(request);
  if (denied) return denied;

  const name = new URL(request.url).searchParams.get("name");
  if (!name || name.trim() === "") return jsonError('query parameter "name" is required', 400);

  try {
    return jsonData(await deleteTag(name));
  } catch (error) {
    return failure(error);
  }
}
