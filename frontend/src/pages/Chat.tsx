import { useLiveQuery } from "dexie-react-hooks";
import { useCallback, useEffect, useRef, useState } from "react";
import { useNavigate, useParams } from "react-router";
import { Composer } from "../components/Composer";
import { Conversations } from "../components/Conversations";
import { MessageView, StreamingMessage } from "../components/MessageView";
import { ModelPicker, takesImages, useModels } from "../components/ModelPicker";
import { db, DEFAULT_PARAMS, type Conversation, type Params } from "../chat/db";
import { lastImage } from "../chat/answer";
import { useChat } from "../chat/useChat";
import { openSocket } from "../chat/ws";

function ParamsPanel({ conversation }: { conversation: Conversation }) {
  const p = conversation.params;
  const update = (patch: Partial<Params>) => void db.conversations.update(conversation.id, { params: { ...p, ...patch } });
  const num = (value: string) => (value.trim() === "" ? null : Number(value));
  return (
    <details className="border-b border-zinc-200 px-3 py-1 text-sm dark:border-zinc-800">
      <summary className="cursor-pointer">Parameters</summary>
      <div className="grid gap-2 py-2 sm:grid-cols-3">
        <label className="sm:col-span-3">System prompt
          <textarea value={p.system} onChange={(e) => update({ system: e.target.value })} rows={2} className="mt-1 w-full rounded border border-zinc-300 bg-transparent p-1 dark:border-zinc-600" />
        </label>
        <label>Temperature
          <input type="number" min={0} max={2} step={0.1} value={p.temperature ?? ""} placeholder="default" onChange={(e) => update({ temperature: num(e.target.value) })} className="mt-1 w-full rounded border border-zinc-300 bg-transparent p-1 dark:border-zinc-600" />
        </label>
        <label>Max tokens
          <input type="number" min={1} step={1} value={p.maxTokens ?? ""} placeholder="default" onChange={(e) => update({ maxTokens: num(e.target.value) })} className="mt-1 w-full rounded border border-zinc-300 bg-transparent p-1 dark:border-zinc-600" />
        </label>
        <label>Thinking
          <select value={p.thinking} onChange={(e) => update({ thinking: e.target.value as Params["thinking"] })} className="mt-1 w-full rounded border border-zinc-300 bg-white p-1 dark:border-zinc-600 dark:bg-zinc-900">
            <option value="auto">auto</option>
            <option value="on">on</option>
            <option value="off">off</option>
          </select>
        </label>
      </div>
    </details>
  );
}

export default function ChatPage() {
  const { id } = useParams();
  const navigate = useNavigate();
  const conversation = useLiveQuery(() => (id ? db.conversations.get(id) : undefined), [id]);
  const messages = useLiveQuery(() => (id ? db.history(id) : []), [id]) ?? [];
  const { data: models } = useModels();
  const { streaming, send, regenerate, stop } = useChat(conversation, messages);
  const [showList, setShowList] = useState(false);
  const bottom = useRef<HTMLDivElement>(null);

  const create = async () => {
    const last = await db.conversations.orderBy("updatedAt").last();
    const made = await db.create(last?.model ?? "auto", last ? { ...last.params } : DEFAULT_PARAMS);
    setShowList(false);
    void navigate(`/chat/${made.id}`);
  };

  useEffect(() => {
    if (id) return;
    void db.conversations.orderBy("updatedAt").last().then((last) => {
      if (last) void navigate(`/chat/${last.id}`, { replace: true });
    });
  }, [id, navigate]);

  useEffect(openSocket, []); // the first question does not wait for the WebSocket's handshake

  // to the end when a message comes; while an answer grows it is kept in view unless the reader scrolled up
  const list = useRef<HTMLDivElement>(null);
  const pinned = useRef(true);
  useEffect(() => {
    pinned.current = true;
    bottom.current?.scrollIntoView({ block: "end" });
  }, [messages.length, streaming]);
  const onScroll = () => {
    const el = list.current;
    if (el) pinned.current = el.scrollHeight - el.scrollTop - el.clientHeight < 48;
  };
  const onGrow = useCallback(() => {
    const el = list.current;
    if (el && pinned.current) el.scrollTop = el.scrollHeight;
  }, []);

  const shown = streaming ? messages.filter((m) => m.seq < streaming.seq) : messages;
  const lastSeq = messages.at(-1)?.seq;
  return (
    <div className="flex h-full min-h-0">
      <aside className={`${showList ? "block" : "hidden"} absolute inset-y-12 left-0 z-10 w-64 border-r border-zinc-200 bg-white p-2 md:static md:block dark:border-zinc-800 dark:bg-zinc-950`}>
        <Conversations current={id} onNew={() => void create()} onDeleted={(gone) => gone === id && void navigate("/chat")} />
      </aside>
      <section className="flex min-w-0 flex-1 flex-col" aria-label="Chat">
        <div className="flex flex-wrap items-center gap-2 border-b border-zinc-200 px-3 py-2 dark:border-zinc-800">
          <button type="button" className="rounded border border-zinc-300 px-2 py-1 text-sm md:hidden dark:border-zinc-600" onClick={() => setShowList(!showList)} aria-expanded={showList}>
            Chats
          </button>
          {conversation ? (
            <ModelPicker value={conversation.model} onChange={(model) => void db.conversations.update(conversation.id, { model })} />
          ) : null}
        </div>
        {conversation ? <ParamsPanel conversation={conversation} /> : null}
        {!conversation ? (
          <div className="m-auto p-4 text-center">
            <h1 className="mb-2 text-xl font-semibold">GroupQwen</h1>
            <button type="button" onClick={() => void create()} className="rounded bg-indigo-600 px-3 py-2 text-white">Start a chat</button>
          </div>
        ) : (
          <>
            <div ref={list} onScroll={onScroll} className="min-h-0 flex-1 space-y-3 overflow-y-auto p-3" data-testid="messages" aria-live="polite">
              {shown.map((m, i) => (
                <MessageView
                  key={m.id}
                  message={m}
                  image={m.role === "assistant" ? lastImage(shown.slice(0, i)) : undefined}
                  onEdit={m.role === "user" && !streaming ? (text) => void send(text, m.images ?? [], m.seq) : undefined}
                  onRegenerate={m.role === "assistant" && m.seq === lastSeq && !streaming ? () => void regenerate() : undefined}
                />
              ))}
              {streaming ? <StreamingMessage onGrow={onGrow} image={lastImage(shown)} /> : null}
              <div ref={bottom} />
            </div>
            <Composer busy={streaming !== null} images={takesImages(models?.data ?? [], conversation.model)} onSend={(text, images) => void send(text, images)} onStop={stop} />
          </>
        )}
      </section>
    </div>
  );
}
