import { promises as fs } from "node:fs";
import path from "node:path";
import matter from "gray-matter";

/** Where the blog's content lives: `content/posts/*.mdx` and `content/tags.json`. */
export const CONTENT_DIR = path.join(process.cwd(), "content");
export const POSTS_DIR = path.join(CONTENT_DIR, "posts");

const POST_EXTENSION = ".mdx";
const SLUG_PATTERN = /^[a-z0-9]+(?:-[a-z0-9]+)*$/;

export type Post = {
  slug: string;
  title: string;
  /** "YYYY-MM-DD" */
  date: string;
  summary: string;
  tags: string[];
  /** The MDX body, without the front matter. */
  content: string;
};

/** A post without its body, as the lists and the admin API show it. */
export type PostMeta = Omit<Post, "content">;

/** Front matter as it is stored: whatever YAML the file holds. */
export type FrontMatter = Record<string, unknown>;

export type PostFile = {
  slug: string;
  data: FrontMatter;
  content: string;
};

export function isValidSlug(slug: string): boolean {
  return SLUG_PATTERN.test(slug);
}

function postPath(slug: string): string {
  return path.join(POSTS_DIR, `${slug}${POST_EXTENSION}`);
}

/** Slugs of every post on disk, in file-name order. */
export async function listPostSlugs(): Promise<string[]> {
  const entries = await fs.readdir(POSTS_DIR);
  return entries
    .filter((name) => name.endsWith(POST_EXTENSION))
    .map((name) => name.slice(0, -POST_EXTENSION.length))
    .filter(isValidSlug)
    .sort();
}

/**
 * Reads one post's raw front matter and body, or null when there is no such post.
 * Files are read on every call, so a change on disk shows up at once.
 */
export async function readPostFile(slug: string): Promise<PostFile | null> {
  if (!isValidSlug(slug)) return null;
  let raw: string;
  try {
    raw = await fs.readFile(postPath(slug), "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw error;
  }
  // Passing options (even empty ones) turns off gray-matter's in-memory cache, whose
  // parsed objects are shared between calls.
  const parsed = matter(raw, {});
  return { slug, data: { ...parsed.data }, content: parsed.content };
}

/** Replaces a post's front matter, keeping its body. Throws if the post does not exist. */
export async function writePostFrontMatter(slug: string, data: FrontMatter): Promise<void> {
  const file = await readPostFile(slug);
  if (!file) throw new Error(`post not found: ${slug}`);
  await fs.writeFile(postPath(slug), matter.stringify(file.content, data), "utf8");
}

function asString(value: unknown, fallback: string): string {
  return typeof value === "string" ? value : fallback;
}

function asDate(value: unknown): string {
  if (value instanceof Date && !Number.isNaN(value.getTime())) {
    return value.toISOString().slice(0, 10);
  }
  return typeof value === "string" ? value : "";
}

/** The tags of a post's front matter: strings only, without duplicates. */
export function tagsOf(data: FrontMatter): string[] {
  if (!Array.isArray(data.tags)) return [];
  const tags = data.tags.filter((tag): tag is string => typeof tag === "string" && tag !== "");
  return [...new Set(tags)];
}

function toPost(file: PostFile): Post {
  const { slug, data, content } = file;
  return {
    slug,
    title: asString(data.title, slug),
    date: asDate(data.date),
    summary: asString(data.summary, ""),
    tags: tagsOf(data),
    content,
  };
}

export function toMeta(post: Post): PostMeta {
  const { content: _content, ...meta } = post;
  return meta;
}

/** Every post, newest first. */
export async function getAllPosts(): Promise<Post[]> {
  const slugs = await listPostSlugs();
  const files = await Promise.all(slugs.map(readPostFile));
  return files
    .filter((file): file is PostFile => file !== null)
    .map(toPost)
    .sort((a, b) => b.date.localeCompare(a.date) || a.slug.localeCompare(b.slug));
}

export async function getPostBySlug(slug: string): Promise<Post | null> {
  const file = await readPostFile(slug);
  return file ? toPost(file) : null;
}

/** Every tag used by at least one post, sorted by name. */
export async function getAllTags(): Promise<string[]> {
  const posts = await getAllPosts();
  const tags = new Set(posts.flatMap((post) => post.tags));
  return [...tags].sort((a, b) => a.localeCompare(b));
}

/** Posts carrying `tag`, newest first. */
export async function getPostsByTag(tag: string): Promise<Post[]> {
  const posts = await getAllPosts();
  return posts.filter((post) => post.tags.includes(tag));
}
