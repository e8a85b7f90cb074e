import { useLiveQuery } from "dexie-react-hooks";
import { useState } from "react";
import { Link } from "react-router";
import { db } from "../chat/db";

export function Conversations({ current, onNew, onDeleted }: { current?: string; onNew: () => void; onDeleted: (id: string) => void }) {
  const [query, setQuery] = useState("");
  const [renaming, setRenaming] = useState<string | null>(null);
  const [title, setTitle] = useState("");
  const list = useLiveQuery(() => db.search(query), [query]) ?? [];
  return (
    <nav aria-label="Conversations" className="flex h-full flex-col gap-2">
      <button type="button" onClick={onNew} className="rounded bg-indigo-600 px-3 py-1.5 text-sm text-white">New chat</button>
      <label htmlFor="search" className="sr-only">Search conversations</label>
      <input id="search" type="search" placeholder="Search" value={query} onChange={(e) => setQuery(e.target.value)} className="rounded border border-zinc-300 bg-transparent px-2 py-1 text-sm dark:border-zinc-600" />
      <ul className="min-h-0 flex-1 overflow-y-auto text-sm" data-testid="conversation-list">
        {list.map((c) => (
          <li key={c.id} className={`group flex items-center gap-1 rounded px-2 py-1 ${c.id === current ? "bg-zinc-200 dark:bg-zinc-800" : ""}`}>
            {renaming === c.id ? (
              <form
                className="flex-1"
                onSubmit={(e) => {
                  e.preventDefault();
                  void db.conversations.update(c.id, { title: title.trim() || c.title });
                  setRenaming(null);
                }}
              >
                <label htmlFor={`rename-${c.id}`} className="sr-only">New title</label>
                <input id={`rename-${c.id}`} autoFocus value={title} onChange={(e) => setTitle(e.target.value)} onBlur={() => setRenaming(null)} className="w-full rounded border border-zinc-300 bg-transparent px-1 dark:border-zinc-600" />
              </form>
            ) : (
              <Link to={`/chat/${c.id}`} className="min-w-0 flex-1 truncate" aria-current={c.id === current ? "page" : undefined}>{c.title}</Link>
            )}
            <button type="button" aria-label={`Rename ${c.title}`} title="Rename" onClick={() => { setTitle(c.title); setRenaming(c.id); }} className="px-1 text-xs text-zinc-600 dark:text-zinc-400">✎</button>
            <button
              type="button"
              aria-label={`Delete ${c.title}`}
              title="Delete"
              onClick={() => {
                if (confirm(`Delete "${c.title}"?`)) void db.remove(c.id).then(() => onDeleted(c.id));
              }}
              className="px-1 text-xs text-zinc-600 dark:text-zinc-400"
            >
              ✕
            </button>
          </li>
        ))}
      </ul>
    </nav>
  );
}
