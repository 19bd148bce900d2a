"use client";

import { useRouter } from "next/navigation";
import { useState, type KeyboardEvent } from "react";

/**
 * Edits a post's title in place: PATCH /api/admin/posts/<slug>, then router.refresh() so the
 * server-rendered table shows the new title without a full page reload.
 */
export function EditTitle({ slug, title }: { slug: string; title: string }) {
  const router = useRouter();
  const [editing, setEditing] = useState(false);
  const [value, setValue] = useState(title);
  const [pending, setPending] = useState(false);
  const [error, setError] = useState<string | null>(null);

  async function save() {
    setPending(true);
    setError(null);
    try {
      const response = await fetch(`/api/admin/posts/${encodeURIComponent(slug)}`, {
        method: "PATCH",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ title: value }),
      });
      const body = (await response.json().catch(() => null)) as { error?: string } | null;
      if (!response.ok) {
        setError(body?.error ?? `save failed (${response.status})`);
        return;
      }
      setEditing(false);
      router.refresh();
    } catch {
      setError("network error, try again");
    } finally {
      setPending(false);
    }
  }

  function onKeyDown(event: KeyboardEvent<HTMLInputElement>) {
    if (event.key === "Enter") {
      event.preventDefault();
      void save();
    } else if (event.key === "Escape") {
      setEditing(false);
      setValue(title);
    }
  }

  if (!editing) {
    return (
      <button
        type="button"
        onClick={() => {
          setValue(title);
          setEditing(true);
        }}
      >
        Edit title
      </button>
    );
  }

  return (
    <span className="inline-edit">
      <input
        aria-label={`New title for ${slug}`}
        value={value}
        autoFocus
        disabled={pending}
        onChange={(event) => setValue(event.target.value)}
        onKeyDown={onKeyDown}
      />
      <button type="button" onClick={() => void save()} disabled={pending}>
        Save
      </button>
      <button type="button" onClick={() => setEditing(false)} disabled={pending}>
        Cancel
      </button>
      {error ? (
        <span role="alert" className="error">
          {error}
        </span>
      ) : null}
    </span>
  );
}
