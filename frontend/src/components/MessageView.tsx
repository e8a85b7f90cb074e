import { useLayoutEffect, useState } from "react";
import type { Box } from "../api/types";
import type { AnswerMeta, Message } from "../chat/db";
import { useStreams } from "../chat/useChat";
import { LazyMarkdown as Markdown } from "./LazyMarkdown";

function fmt(value: number | null, digits = 0, unit = ""): string | null {
  return value === null || !Number.isFinite(value) ? null : `${value.toFixed(digits)}${unit}`;
}

export function Footer({ meta }: { meta: AnswerMeta }) {
  const cache = meta.cache ? `cache ${meta.cache}${meta.cacheSimilarity !== null ? ` (${meta.cacheSimilarity.toFixed(3)})` : ""}` : null;
  const items = [
    meta.model && `model ${meta.model}`,
    meta.route && `route ${meta.route}`,
    cache,
    meta.escalations !== null && `escalations ${meta.escalations}`,
    meta.completionTokens !== null && `${meta.completionTokens} tokens`,
    fmt(meta.tokensPerSecond, 1, " tok/s"),
    meta.ttftMs !== null && `TTFT ${fmt(meta.ttftMs, 0, " ms")}`,
  ].filter(Boolean);
  return (
    <p className="mt-1 text-xs text-zinc-600 dark:text-zinc-400" data-testid="answer-footer">
      {items.join(" · ")}
    </p>
  );
}

/** `url` with the boxes an answer points at drawn over it (`boxes` are in the image's own pixels). */
export function BoxedImage({ url, boxes }: { url: string; boxes: Box[] }) {
  const [size, setSize] = useState<{ width: number; height: number } | null>(null);
  const names = boxes.map((b) => b.label || "a box").join(", ");
  return (
    <figure className="relative mb-2 inline-block max-w-full" data-testid="answer-boxes">
      <img
        src={url}
        alt={`The image the answer points at: ${names}`}
        className="block max-h-80 max-w-full"
        onLoad={(e) => setSize({ width: e.currentTarget.naturalWidth, height: e.currentTarget.naturalHeight })}
      />
      {size ? (
        <svg viewBox={`0 0 ${size.width} ${size.height}`} className="pointer-events-none absolute inset-0 h-full w-full" aria-hidden="true">
          {boxes.map((b, i) => (
            <g key={i} data-testid="answer-box" data-label={b.label} data-box={`${b.x1},${b.y1},${b.x2},${b.y2}`}>
              <rect x={b.x1} y={b.y1} width={b.x2 - b.x1} height={b.y2 - b.y1} fill="none" stroke="#e11d48" strokeWidth={Math.max(2, size.width / 200)} />
              {b.label ? (
                <text x={b.x1 + 4} y={b.y1 + Math.max(14, size.height / 30)} fill="#e11d48" fontSize={Math.max(12, size.height / 30)}>
                  {b.label}
                </text>
              ) : null}
            </g>
          ))}
        </svg>
      ) : null}
    </figure>
  );
}

interface Props {
  message: Pick<Message, "role" | "content" | "reasoning" | "images" | "meta" | "state" | "error">;
  streaming?: boolean;
  /** The conversation's last image before this answer: its boxes are drawn on it. */
  image?: string;
  onEdit?: (text: string) => void;
  onRegenerate?: () => void;
}

export function MessageView({ message, streaming = false, image, onEdit, onRegenerate }: Props) {
  const [editing, setEditing] = useState(false);
  const [text, setText] = useState(message.content);
  const user = message.role === "user";
  return (
    <article
      className={`group rounded-lg px-3 py-2 ${user ? "ml-auto max-w-[85%] bg-indigo-50 dark:bg-indigo-950" : "max-w-full"}`}
      data-testid={user ? "user-message" : "assistant-message"}
      data-state={streaming ? "streaming" : (message.state ?? "done")}
      data-request-id={message.meta?.requestId ?? undefined}
      aria-busy={streaming}
    >
      {message.reasoning ? (
        <details className="mb-2 rounded border border-zinc-200 px-2 py-1 text-sm dark:border-zinc-700" open={streaming && !message.content}>
          <summary className="cursor-pointer text-zinc-700 dark:text-zinc-300">Thinking</summary>
          <div className="whitespace-pre-wrap text-zinc-700 dark:text-zinc-300">{message.reasoning}</div>
        </details>
      ) : null}
      {message.images?.length ? (
        <div className="mb-2 flex flex-wrap gap-2">
          {message.images.map((url, i) => (
            <img key={i} src={url} alt={`attachment ${i + 1}`} className="h-20 w-20 rounded object-cover" />
          ))}
        </div>
      ) : null}
      {editing ? (
        <form
          onSubmit={(e) => {
            e.preventDefault();
            setEditing(false);
            onEdit?.(text);
          }}
        >
          <label className="sr-only" htmlFor="edit-message">Edit message</label>
          <textarea id="edit-message" value={text} onChange={(e) => setText(e.target.value)} className="w-full rounded border border-zinc-300 bg-transparent p-2 dark:border-zinc-600" rows={3} />
          <div className="mt-1 flex gap-2 text-sm">
            <button type="submit" className="rounded bg-indigo-600 px-2 py-1 text-white">Save and send</button>
            <button type="button" onClick={() => setEditing(false)} className="rounded px-2 py-1">Cancel</button>
          </div>
        </form>
      ) : user ? (
        <div className="whitespace-pre-wrap break-words">{message.content}</div>
      ) : (
        <Markdown text={message.content} />
      )}
      {!user && image && message.meta?.boxes?.length ? <BoxedImage url={image} boxes={message.meta.boxes} /> : null}
      {message.state === "error" ? (
        <p role="alert" className="mt-1 rounded bg-red-50 px-2 py-1 text-sm text-red-800 dark:bg-red-950 dark:text-red-200" data-testid="answer-error">
          {message.error}
        </p>
      ) : null}
      {message.state === "stopped" ? <p className="text-xs text-zinc-600 dark:text-zinc-400">Stopped</p> : null}
      {message.meta && !user ? <Footer meta={message.meta} /> : null}
      {!streaming && (onEdit || onRegenerate) ? (
        <div className="mt-1 flex gap-3 text-xs">
          {onEdit ? <button type="button" onClick={() => { setText(message.content); setEditing(true); }} className="text-zinc-700 underline dark:text-zinc-300">Edit</button> : null}
          {onRegenerate ? <button type="button" onClick={onRegenerate} className="text-zinc-700 underline dark:text-zinc-300">Regenerate</button> : null}
        </div>
      ) : null}
    </article>
  );
}

/** The answer streaming into `conversationId` (useStreams), re-rendered on its own as it grows; `onGrow`
 * after each update is on the page. */
export function StreamingMessage({ conversationId, onGrow, image }: { conversationId: string; onGrow: () => void; image?: string }) {
  const draft = useStreams((state) => state.byConversation[conversationId]?.draft);
  useLayoutEffect(onGrow, [draft, onGrow]);
  if (!draft) return null;
  return <MessageView streaming image={image} message={{ role: "assistant", content: draft.content, reasoning: draft.reasoning, meta: draft.meta }} />;
}
