"use client";

import { useRouter } from "next/navigation";
import { useMemo, useState, type KeyboardEvent } from "react";
import styles from "./TagTable.module.css";

export type TagRow = { name: string; count: number; orphan: boolean };

type SortKey = "name" | "count";
type Sort = { key: SortKey; direction: "ascending" | "descending" } | null;
type Message = { kind: "status" | "error"; text: string } | null;

const API = "/api/admin/tags";

function compare(a: TagRow, b: TagRow, key: SortKey): number {
  const byName = a.name.localeCompare(b.name);
  return key === "count" ? a.count - b.count || byName : byName;
}

async function errorOf(response: Response): Promise<string> {
  const body = (await response.json().catch(() => null)) as { error?: string } | null;
  return body?.error ?? `request failed (${response.status})`;
}

/**
 * The tag manager's table. Sorting is client-side; renames and deletes go through
 * /api/admin/tags, then the table reloads its rows from the API (no page reload).
 */
export function TagTable({ initialTags }: { initialTags: TagRow[] }) {
  const router = useRouter();
  const [tags, setTags] = useState(initialTags);
  const [sort, setSort] = useState<Sort>(null);
  const [editing, setEditing] = useState<string | null>(null);
  const [draft, setDraft] = useState("");
  const [pending, setPending] = useState(false);
  const [message, setMessage] = useState<Message>(null);

  const rows = useMemo(() => {
    if (!sort) return tags;
    const sign = sort.direction === "ascending" ? 1 : -1;
    return [...tags].sort((a, b) => sign * compare(a, b, sort.key));
  }, [tags, sort]);

  function toggleSort(key: SortKey) {
    setSort((current) =>
      current?.key === key
        ? { key, direction: current.direction === "ascending" ? "descending" : "ascending" }
        : { key, direction: "ascending" },
    );
  }

  function ariaSort(key: SortKey) {
    return sort?.key === key ? sort.direction : "none";
  }

  function onHeaderKey(event: KeyboardEvent<HTMLTableCellElement>, key: SortKey) {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      toggleSort(key);
    }
  }

  async function reload() {
    const response = await fetch(API, { cache: "no-store" });
    if (!response.ok) throw new Error(await errorOf(response));
    const body = (await response.json()) as { data: TagRow[] };
    setTags(body.data);
    router.refresh();
  }

  /** Sends one mutation, reloads the rows, and reports the outcome. Returns the response. */
  async function mutate(url: string, init: RequestInit, done: string): Promise<Response | null> {
    setPending(true);
    setMessage(null);
    try {
      const response = await fetch(url, init);
      if (response.ok) {
        setEditing(null);
        await reload();
        setMessage({ kind: "status", text: done });
      }
      return response;
    } catch {
      setMessage({ kind: "error", text: "network error, try again" });
      return null;
    } finally {
      setPending(false);
    }
  }

  function patch(action: "rename" | "merge", from: string, to: string, done: string) {
    return mutate(
      API,
      {
        method: "PATCH",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ action, from, to }),
      },
      done,
    );
  }

  async function saveRename(from: string) {
    const to = draft.trim();
    if (to === "") {
      setMessage({ kind: "error", text: "a tag name cannot be empty" });
      return;
    }
    if (to === from) {
      setEditing(null);
      return;
    }
    const response = await patch("rename", from, to, `Renamed "${from}" to "${to}".`);
    if (!response || response.ok) return;
    if (
      response.status === 409 &&
      window.confirm(`The tag "${to}" already exists. Merge "${from}" into it?`)
    ) {
      const merged = await patch("merge", from, to, `Merged "${from}" into "${to}".`);
      if (merged && !merged.ok) setMessage({ kind: "error", text: await errorOf(merged) });
      return;
    }
    setMessage({ kind: "error", text: await errorOf(response) });
  }

  async function remove(tag: TagRow) {
    const posts = tag.count === 1 ? "1 post" : `${tag.count} posts`;
    if (!window.confirm(`Delete the tag "${tag.name}"? It will be removed from ${posts}.`)) return;
    const response = await mutate(
      `${API}?name=${encodeURIComponent(tag.name)}`,
      { method: "DELETE" },
      `Deleted "${tag.name}".`,
    );
    if (response && !response.ok) setMessage({ kind: "error", text: await errorOf(response) });
  }

  function startRename(name: string) {
    setDraft(name);
    setEditing(name);
    setMessage(null);
  }

  function onInputKey(event: KeyboardEvent<HTMLInputElement>, name: string) {
    if (event.key === "Enter") {
      event.preventDefault();
      void saveRename(name);
    } else if (event.key === "Escape") {
      setEditing(null);
    }
  }

  return (
    <>
      <table className="admin-table" aria-label="Tags">
        <thead>
          <tr>
            <th
              scope="col"
              className={styles.sortable}
              aria-sort={ariaSort("name")}
              tabIndex={0}
              title="Sort by name"
              onClick={() => toggleSort("name")}
              onKeyDown={(event) => onHeaderKey(event, "name")}
            >
              Name
            </th>
            <th
              scope="col"
              className={`num ${styles.sortable}`}
              aria-sort={ariaSort("count")}
              tabIndex={0}
              title="Sort by post count"
              onClick={() => toggleSort("count")}
              onKeyDown={(event) => onHeaderKey(event, "count")}
            >
              Posts
            </th>
            <th scope="col">Actions</th>
          </tr>
        </thead>
        <tbody>
          {rows.map((tag) => {
            const isEditing = editing === tag.name;
            return (
              <tr
                key={tag.name}
                data-tag={tag.name}
                className={tag.orphan ? styles.orphan : undefined}
                title={tag.orphan ? "Orphan: in the registry, used by no post" : undefined}
              >
                <td>
                  {isEditing ? (
                    <input
                      aria-label={`New name for ${tag.name}`}
                      value={draft}
                      autoFocus
                      disabled={pending}
                      onChange={(event) => setDraft(event.target.value)}
                      onKeyDown={(event) => onInputKey(event, tag.name)}
                    />
                  ) : (
                    tag.name
                  )}
                </td>
                <td className="num">{tag.count}</td>
                <td>
                  <div className={styles.actions}>
                    {isEditing ? (
                      <>
                        <button type="button" disabled={pending} onClick={() => void saveRename(tag.name)}>
                          Save
                        </button>
                        <button type="button" disabled={pending} onClick={() => setEditing(null)}>
                          Cancel
                        </button>
                      </>
                    ) : (
                      <>
                        <button type="button" disabled={pending} onClick={() => startRename(tag.name)}>
                          Rename
                        </button>
                        <button
                          type="button"
                          className="danger"
                          disabled={pending}
                          onClick={() => void remove(tag)}
                        >
                          Delete
                        </button>
                      </>
                    )}
                  </div>
                </td>
              </tr>
            );
          })}
        </tbody>
      </table>
      {rows.length === 0 ? <p className="muted">No tags.</p> : null}
      <p className={styles.legend}>
        Italic rows are orphans: listed in <code>content/tags.json</code> but used by no post.
      </p>
      <p
        className={`${styles.message} ${message?.kind === "error" ? "error" : ""}`}
        role={message?.kind === "error" ? "alert" : "status"}
      >
        {message?.text}
      </p>
    </>
  );
}
