import { getAllPosts, listPostSlugs, readPostFile, writePostFrontMatter } from "@/lib/posts";
import { readRegistry, writeRegistry, type TagRegistry } from "@/lib/registry";

/**
 * Tag management for the admin section. Tags live in two places: the `tags` array of each post's
 * front matter and the registry `content/tags.json`. Every change here is written back to both.
 */

export type TagSummary = {
  name: string;
  /** How many posts carry the tag. */
  count: number;
  /** In the registry but used by no post. */
  orphan: boolean;
};

export type TagChange = {
  action: "rename" | "merge" | "delete";
  from: string;
  to: string | null;
  /** How many posts' front matter was rewritten. */
  postsUpdated: number;
};

/** A failure the API reports to the client, with the HTTP status to use. */
export class TagError extends Error {
  constructor(
    message: string,
    readonly status: 400 | 404 | 409,
  ) {
    super(message);
    this.name = "TagError";
  }
}

const MAX_TAG_LENGTH = 64;

/** A tag name from user input: trimmed, non-empty, at most 64 characters, no slash; else null. */
export function parseTagName(value: unknown): string | null {
  if (typeof value !== "string") return null;
  const name = value.trim();
  if (name === "" || name.length > MAX_TAG_LENGTH || /[/\\\u0000-\u001f]/.test(name)) return null;
  return name;
}

// Mutations read every post, then write some back; run them one at a time.
let queue: Promise<unknown> = Promise.resolve();
function serialized<T>(task: () => Promise<T>): Promise<T> {
  const run = queue.then(task, task);
  queue = run.catch(() => undefined);
  return run;
}

/** Every tag, used or registered, with its post count; sorted by name. */
export async function getTagsWithCounts(): Promise<TagSummary[]> {
  const [posts, registry] = await Promise.all([getAllPosts(), readRegistry()]);
  const counts = new Map<string, number>();
  for (const post of posts) {
    for (const tag of post.tags) counts.set(tag, (counts.get(tag) ?? 0) + 1);
  }
  for (const name of Object.keys(registry)) {
    if (!counts.has(name)) counts.set(name, 0);
  }
  return [...counts]
    .map(([name, count]) => ({ name, count, orphan: count === 0 }))
    .sort((a, b) => a.name.localeCompare(b.name));
}

/** Tags listed in the registry that no post uses; sorted by name. */
export async function getOrphanTags(): Promise<string[]> {
  const tags = await getTagsWithCounts();
  return tags.filter((tag) => tag.orphan).map((tag) => tag.name);
}

async function tagExists(name: string, registry: TagRegistry): Promise<boolean> {
  if (Object.hasOwn(registry, name)) return true;
  const posts = await getAllPosts();
  return posts.some((post) => post.tags.includes(name));
}

/**
 * Rewrites the tags of every post with `transform`; writes back only the posts whose tags
 * changed. Returns how many were written.
 */
async function rewritePostTags(transform: (tags: string[]) => string[]): Promise<number> {
  let updated = 0;
  for (const slug of await listPostSlugs()) {
    const file = await readPostFile(slug);
    if (!file || !Array.isArray(file.data.tags)) continue;
    const before = file.data.tags.filter((tag): tag is string => typeof tag === "string");
    const after = [...new Set(transform(before))];
    if (after.length === before.length && after.every((tag, i) => tag === before[i])) continue;
    await writePostFrontMatter(slug, { ...file.data, tags: after });
    updated++;
  }
  return updated;
}

function replaceTag(from: string, to: string) {
  // Keeps the tag's position; a post that already had `to` keeps it once (the Set above).
  return (tags: string[]) => tags.map((tag) => (tag === from ? to : tag));
}

function checkPair(from: string, to: string) {
  const source = parseTagName(from);
  const target = parseTagName(to);
  if (!source) throw new TagError('"from" must be a non-empty tag name', 400);
  if (!target) throw new TagError('"to" must be a non-empty tag name (at most 64 characters, no slash)', 400);
  if (source === target) throw new TagError('"from" and "to" must differ', 400);
  return { source, target };
}

/**
 * Renames tag `from` to `to` in every post and in the registry (the description follows).
 * 404 when `from` does not exist; 409 when `to` already exists (merge instead).
 */
export function renameTag(from: string, to: string): Promise<TagChange> {
  return serialized(async () => {
    const { source, target } = checkPair(from, to);
    const registry = await readRegistry();
    if (!(await tagExists(source, registry))) throw new TagError(`tag not found: ${source}`, 404);
    if (await tagExists(target, registry)) {
      throw new TagError(`tag already exists: ${target} (merge into it instead)`, 409);
    }

    const postsUpdated = await rewritePostTags(replaceTag(source, target));
    if (Object.hasOwn(registry, source)) {
      registry[target] = registry[source];
      delete registry[source];
      await writeRegistry(registry);
    }
    return { action: "rename", from: source, to: target, postsUpdated };
  });
}

/**
 * Merges tag `from` into the existing tag `to`: every post with `from` gets `to` instead (once),
 * and `from` leaves the registry. 404 when either tag does not exist.
 */
export function mergeTags(from: string, to: string): Promise<TagChange> {
  return serialized(async () => {
    const { source, target } = checkPair(from, to);
    const registry = await readRegistry();
    if (!(await tagExists(source, registry))) throw new TagError(`tag not found: ${source}`, 404);
    if (!(await tagExists(target, registry))) {
      throw new TagError(`target tag not found: ${target}`, 404);
    }

    const postsUpdated = await rewritePostTags(replaceTag(source, target));
    if (Object.hasOwn(registry, source)) {
      if (!Object.hasOwn(registry, target)) registry[target] = registry[source];
      delete registry[source];
      await writeRegistry(registry);
    }
    return { action: "merge", from: source, to: target, postsUpdated };
  });
}

/** Removes tag `name` from every post and from the registry. 404 when it does not exist. */
export function deleteTag(name: string): Promise<TagChange> {
  return serialized(async () => {
    const tag = parseTagName(name);
    if (!tag) throw new TagError("name must be a non-empty tag name", 400);
    const registry = await readRegistry();
    if (!(await tagExists(tag, registry))) throw new TagError(`tag not found: ${tag}`, 404);

    const postsUpdated = await rewritePostTags((tags) => tags.filter((t) => t !== tag));
    if (Object.hasOwn(registry, tag)) {
      delete registry[tag];
      await writeRegistry(registry);
    }
    return { action: "delete", from: tag, to: null, postsUpdated };
  });
}
