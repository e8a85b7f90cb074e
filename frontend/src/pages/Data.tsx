import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useCallback, useEffect, useMemo, useState } from "react";
import { useNavigate, useParams } from "react-router";
import { apiUrl, authHeaders, getJson, postJson, route } from "../api/client";
import type { ImportReport, ReviewItem, ReviewPage, ReviewStatus } from "../api/types";
import { download, upload } from "../data/upload";

const NAME = /^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$/;
const PII = /(\[[A-Z][A-Z_]*\])/g; // the curation's placeholders: [EMAIL], [PHONE_2], [USER_NAME] …

function Highlighted({ text }: { text: string }) {
  return (
    <>
      {text.split(PII).map((part, i) =>
        i % 2 === 1 ? <mark key={i} className="rounded bg-amber-200 px-0.5 text-amber-950" title="personal data replaced">{part}</mark> : part,
      )}
    </>
  );
}

function Upload({ name, onDone }: { name: string; onDone: (report: ImportReport) => void }) {
  const [progress, setProgress] = useState<number | null>(null);
  const [phase, setPhase] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const send = async (file: File) => {
    setError(null);
    setPhase("Uploading");
    try {
      const url = apiUrl(`${route("/v1/review/{name}/import", { name })}?filename=${encodeURIComponent(file.name)}&languages=`);
      const report = await upload<ImportReport>(url, file, authHeaders(), (sent) => {
        setProgress(sent / file.size);
        if (sent >= file.size) setPhase("Importing and curating");
      });
      setPhase(null);
      onDone(report);
    } catch (exc) {
      setPhase(null);
      setError(exc instanceof Error ? exc.message : String(exc));
    } finally {
      setProgress(null);
    }
  };
  return (
    <div className="rounded-lg border border-dashed border-zinc-300 p-3 dark:border-zinc-600">
      <label className="block text-sm">Upload a ChatGPT, Claude or Perplexity export (.zip, .json, .md)
        <input type="file" accept=".zip,.json,.md,.markdown" className="mt-1 block w-full text-sm" onChange={(e) => { const f = e.target.files?.[0]; if (f) void send(f); }} />
      </label>
      {phase ? (
        <div className="mt-2" role="status">
          <span className="text-sm">{phase}…</span>
          {progress !== null ? <progress className="w-full" max={1} value={progress} aria-label="Upload progress" /> : null}
        </div>
      ) : null}
      {error ? <p role="alert" className="mt-2 text-sm text-red-800 dark:text-red-300">{error}</p> : null}
    </div>
  );
}

function Build({ name }: { name: string }) {
  const [format, setFormat] = useState("openai");
  const [thinking, setThinking] = useState("drop");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const save = async (path: string, filename: string) => {
    setError(null);
    setBusy(true);
    try {
      await download(path, filename);
    } catch (exc) {
      setError(exc instanceof Error ? exc.message : String(exc));
    } finally {
      setBusy(false);
    }
  };
  const field = "ml-1 rounded border border-zinc-300 bg-white px-1 py-0.5 dark:border-zinc-600 dark:bg-zinc-900";
  return (
    <div className="flex flex-wrap items-center gap-2 rounded-lg border border-zinc-200 p-2 text-sm dark:border-zinc-800">
      <span className="font-semibold">Training set</span>
      <label>Format
        <select value={format} onChange={(e) => setFormat(e.target.value)} className={field}>
          <option value="openai">OpenAI messages</option>
          <option value="sharegpt">ShareGPT</option>
          <option value="chatml">ChatML text</option>
        </select>
      </label>
      <label>Reasoning
        <select value={thinking} onChange={(e) => setThinking(e.target.value)} className={field}>
          <option value="drop">drop</option>
          <option value="keep">keep</option>
        </select>
      </label>
      <button type="button" disabled={busy} onClick={() => void save(`${route("/v1/review/{name}/build", { name })}?format=${format}&thinking=${thinking}`, `${name}-${format}.zip`)} className="rounded bg-indigo-600 px-2 py-1 text-white">
        Build and download
      </button>
      <button type="button" disabled={busy} onClick={() => void save(route("/v1/review/{name}/export", { name }), `${name}.jsonl`)} className="rounded border border-zinc-300 px-2 py-1 dark:border-zinc-600">
        Reviewed JSONL
      </button>
      {error ? <p role="alert" className="w-full text-red-800 dark:text-red-300">{error}</p> : null}
    </div>
  );
}

function Item({ item, active, onDecide }: { item: ReviewItem; active: boolean; onDecide: (verdict: "accept" | "reject" | "edit", turns?: ReviewItem["conversation"]["turns"]) => void }) {
  const [editing, setEditing] = useState(false);
  const shown = item.edited ?? item.conversation;
  const [turns, setTurns] = useState(shown.turns);
  return (
    <li className={`rounded-lg border p-3 ${active ? "border-indigo-600" : "border-zinc-200 dark:border-zinc-800"}`} data-testid="review-item" data-key={item.key} aria-current={active}>
      <div className="mb-2 flex flex-wrap items-center gap-2 text-sm">
        <span className="font-semibold">{shown.title ?? item.key}</span>
        <span className="rounded bg-zinc-100 px-1.5 text-xs dark:bg-zinc-800">{item.status}</span>
        <span className="ml-auto flex gap-1">
          <button type="button" onClick={() => onDecide("accept")} className="rounded bg-green-700 px-2 py-0.5 text-white">Accept</button>
          <button type="button" onClick={() => onDecide("reject")} className="rounded bg-red-700 px-2 py-0.5 text-white">Reject</button>
          <button type="button" onClick={() => setEditing(!editing)} className="rounded border border-zinc-300 px-2 py-0.5 dark:border-zinc-600">Edit</button>
        </span>
      </div>
      <ol className="space-y-1 text-sm">
        {turns.map((t, i) => (
          <li key={i}>
            <span className="font-medium">{t.role}: </span>
            {editing ? (
              <textarea aria-label={`${t.role} turn ${i + 1}`} value={t.content} onChange={(e) => setTurns(turns.map((u, j) => (j === i ? { ...u, content: e.target.value } : u)))} className="w-full rounded border border-zinc-300 bg-transparent p-1 dark:border-zinc-600" />
            ) : (
              <span className="whitespace-pre-wrap"><Highlighted text={t.content} /></span>
            )}
          </li>
        ))}
      </ol>
      {editing ? <button type="button" onClick={() => { setEditing(false); onDecide("edit", turns); }} className="mt-2 rounded bg-indigo-600 px-2 py-1 text-sm text-white">Save edit</button> : null}
    </li>
  );
}

export default function DataPage() {
  const { name } = useParams();
  const navigate = useNavigate();
  const [draftName, setDraftName] = useState(name ?? "my-chats");
  const [status, setStatus] = useState<ReviewStatus | "all">("pending");
  const [active, setActive] = useState(0);
  const [report, setReport] = useState<ImportReport | null>(null);
  const client = useQueryClient();
  const page = useQuery({
    queryKey: ["review", name, status],
    queryFn: () => getJson<ReviewPage>(`${route("/v1/review/{name}", { name: name ?? "" })}?status=${status}&limit=50`),
    enabled: Boolean(name),
    retry: false,
  });
  const decide = useMutation({
    mutationFn: (body: { key: string; verdict: string; conversation?: unknown }) => postJson(route("/v1/review/{name}/decisions", { name: name ?? "" }), body),
    onSettled: () => client.invalidateQueries({ queryKey: ["review", name] }),
  });
  const items = useMemo(() => page.data?.data ?? [], [page.data]);
  const onDecide = useCallback(
    (item: ReviewItem, verdict: "accept" | "reject" | "edit", turns?: ReviewItem["conversation"]["turns"]) =>
      decide.mutate({ key: item.key, verdict, ...(turns ? { conversation: { turns } } : {}) }),
    [decide],
  );
  useEffect(() => {
    const keys = (e: KeyboardEvent) => {
      if (e.target instanceof HTMLInputElement || e.target instanceof HTMLTextAreaElement || e.target instanceof HTMLSelectElement) return;
      const item = items[active];
      if (e.key === "j") setActive((a) => Math.min(a + 1, items.length - 1));
      else if (e.key === "k") setActive((a) => Math.max(a - 1, 0));
      else if (item && e.key === "a") onDecide(item, "accept");
      else if (item && e.key === "r") onDecide(item, "reject");
    };
    window.addEventListener("keydown", keys);
    return () => window.removeEventListener("keydown", keys);
  }, [items, active, onDecide]);
  const valid = NAME.test(draftName);
  return (
    <div className="mx-auto max-w-4xl space-y-4 overflow-y-auto p-4" style={{ maxHeight: "100%" }}>
      <h1 className="text-xl font-semibold">Fine-tuning data</h1>
      <form className="flex flex-wrap items-end gap-2" onSubmit={(e) => { e.preventDefault(); if (valid) void navigate(`/data/${draftName}`); }}>
        <label className="text-sm">Dataset
          <input value={draftName} onChange={(e) => setDraftName(e.target.value)} aria-invalid={!valid} className="ml-2 rounded border border-zinc-300 bg-transparent px-2 py-1 dark:border-zinc-600" />
        </label>
        <button type="submit" disabled={!valid} className="rounded border border-zinc-300 px-2 py-1 text-sm dark:border-zinc-600">Open</button>
        {!valid ? <span className="text-sm text-red-800 dark:text-red-300">1–64 of A–Z a–z 0–9 . _ -, not starting with a dot</span> : null}
      </form>
      {name ? (
        <>
          <Upload name={name} onDone={(r) => { setReport(r); void client.invalidateQueries({ queryKey: ["review", name] }); }} />
          {report ? (
            <p role="status" className="text-sm" data-testid="import-report">
              Imported {report.imported} conversations ({report.formats.join(", ")}), {report.conversations} kept after curation
              {Object.keys(report.rejected).length ? `; dropped: ${Object.entries(report.rejected).map(([k, v]) => `${k} ${v}`).join(", ")}` : ""}.
            </p>
          ) : null}
          {page.error ? <p className="text-sm text-zinc-700 dark:text-zinc-300">{page.error.message}</p> : null}
          {decide.error ? <p role="alert" className="text-sm text-red-800 dark:text-red-300">{decide.error.message}</p> : null}
          {page.data ? (
            <>
              <div className="flex flex-wrap items-center gap-2 text-sm">
                {(["pending", "accepted", "rejected", "edited", "all"] as const).map((s) => (
                  <button key={s} type="button" aria-pressed={s === status} onClick={() => { setStatus(s); setActive(0); }} className={`rounded border px-2 py-0.5 ${s === status ? "border-indigo-600 bg-indigo-600 text-white" : "border-zinc-300 dark:border-zinc-600"}`}>
                    {s} <span data-testid={`count-${s}`}>{s === "all" ? page.data.counts.total : page.data.counts[s]}</span>
                  </button>
                ))}
              </div>
              <Build name={name} />
              <p className="text-xs text-zinc-600 dark:text-zinc-400">Keys: j / k move, a accepts, r rejects. Highlighted: personal data replaced by curation.</p>
              <ul className="space-y-2">
                {items.map((item, i) => (
                  <Item key={`${item.key}-${item.status}`} item={item} active={i === active} onDecide={(verdict, turns) => onDecide(item, verdict, turns)} />
                ))}
              </ul>
            </>
          ) : null}
        </>
      ) : null}
    </div>
  );
}
