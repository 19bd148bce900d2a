import Link from "next/link";

export function TagChips({ tags }: { tags: string[] }) {
  if (tags.length === 0) return null;
  return (
    <ul className="tag-chips" aria-label="Tags">
      {tags.map((tag) => (
        <li key={tag}>
          <Link href={`/tags/${encodeURIComponent(tag)}`} className="tag-chip">
            {`#${tag}`}
          </Link>
        </li>
      ))}
    </ul>
  );
}
