import { promises as fs } from "node:fs";
import path from "node:path";
import { CONTENT_DIR } from "@/lib/posts";

/**
 * The tag registry, `content/tags.json`: one entry per tag with its description.
 * A tag may be listed here and used by no post.
 */
export const REGISTRY_PATH = path.join(CONTENT_DIR, "tags.json");

export type TagEntry = { description: string };
export type TagRegistry = Record<string, TagEntry>;

export async function readRegistry(): Promise<TagRegistry> {
  let raw: string;
  try {
    raw = await fs.readFile(REGISTRY_PATH, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return {};
    throw error;
  }
  const parsed: unknown = JSON.parse(raw);
  if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) return {};
  const registry: TagRegistry = {};
  for (const [name, entry] of Object.entries(parsed as Record<string, unknown>)) {
    const description =
      entry && typeof entry === "object" && typeof (entry as TagEntry).description === "string"
        ? (entry as TagEntry).description
        : "";
    registry[name] = { description };
  }
  return registry;
}

/** Writes the registry back, keys sorted, two-space indented. */
export async function writeRegistry(registry: TagRegistry): Promise<void> {
  const sorted: TagRegistry = {};
  for (const name of Object.keys(registry).sort((a, b) => a.localeCompare(b))) {
    sorted[name] = registry[name];
  }
  await fs.writeFile(REGISTRY_PATH, `${JSON.stringify(sorted, null, 2)}\n`, "utf8");
}
