import { useLiveQuery } from "dexie-react-hooks";
import { useCallback, useEffect, useRef, useState, type ReactNode } from "react";
import { useNavigate, useParams } from "react-router";
import { Composer } from "../components/Composer";
import { Conversations } from "../components/Conversations";
import { MessageView, StreamingMessage } from "../components/MessageView";
import { ModelPicker, takesImages, useModels } from "../components/ModelPicker";
import { db, DEFAULT_PARAMS, type Conversation, type Message, type Params } from "../chat/db";
import { lastImage } from "../chat/answer";
import { pick, picksOf, usePicksOf } from "../chat/picks";
import { useChat } from "../chat/useChat";
import { openSocket } from "../chat/ws";

function ParamsPanel({ conversation }: { conversation: Conversation }) {
  const p = usePicksOf(conversation).params;
  const update = (patch: Partial<Params>) => void pick(conversation, { params: { ...p, ...patch } });
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

/** One conversation: its pickers (after `children`, the toolbar's first items), its messages with the
 * answer streaming into it, and its composer. */
function ConversationView({ conversation, messages, children }: { conversation: Conversation; messages: Message[]; children: ReactNode }) {
  const { data: models } = useModels();
  const { model } = usePicksOf(conversation);
  const { streamingSeq, question, send, regenerate, stop } = useChat(conversation, messages);
  const streaming = streamingSeq !== null;
  const bottom = useRef<HTMLDivElement>(null);
  const before = streaming ? messages.filter((m) => m.seq < streamingSeq) : messages;
  // the question being answered, from the stream until the live query has it (the same message, same key)
  const shown = question && !before.some((m) => m.id === question.id) ? [...before.filter((m) => m.seq < question.seq), question] : before;

  // to the end when a message comes; while an answer grows it is kept in view unless the reader scrolled up
  const list = useRef<HTMLDivElement>(null);
  const pinned = useRef(true);
  useEffect(() => {
    pinned.current = true;
    bottom.current?.scrollIntoView({ block: "end" });
  }, [shown.length, streaming]);
  const onScroll = () => {
    const el = list.current;
    if (el) pinned.current = el.scrollHeight - el.scrollTop - el.clientHeight < 48;
  };
  const onGrow = useCallback(() => {
    const el = list.current;
    if (el && pinned.current) el.scrollTop = el.scrollHeight;
  }, []);

  const lastSeq = messages.at(-1)?.seq;
  return (
    <>
      <div className="flex flex-wrap items-center gap-2 border-b border-zinc-200 px-3 py-2 dark:border-zinc-800">
        {children}
        <ModelPicker value={model} onChange={(picked) => void pick(conversation, { model: picked })} />
      </div>
      <ParamsPanel conversation={conversation} />
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
        {streaming ? <StreamingMessage conversationId={conversation.id} onGrow={onGrow} image={lastImage(shown)} /> : null}
        <div ref={bottom} />
      </div>
      <Composer busy={streaming} images={takesImages(models?.data ?? [], model)} model={model} onSend={(text, images) => void send(text, images)} onStop={stop} />
    </>
  );
}

export default function ChatPage() {
  const { id } = useParams();
  const navigate = useNavigate();
  // undefined while it is read, null when there is none: a conversation is shown once read, never the one
  // shown before with the next one's messages
  const read = useLiveQuery(async () => (id ? ((await db.conversations.get(id)) ?? null) : null), [id]);
  const conversation = read && read.id === id ? read : read === null ? null : undefined;
  const history = useLiveQuery(async () => ({ id, messages: id ? await db.history(id) : [] }), [id]);
  const messages = history && history.id === id ? history.messages : undefined;
  const [showList, setShowList] = useState(false);

  const create = async () => {
    const last = await db.conversations.orderBy("updatedAt").last();
    const picks = last ? picksOf(last) : { model: "auto", params: DEFAULT_PARAMS };
    const made = await db.create(picks.model, { ...picks.params });
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

  const toggle = (
    <button type="button" className="rounded border border-zinc-300 px-2 py-1 text-sm md:hidden dark:border-zinc-600" onClick={() => setShowList(!showList)} aria-expanded={showList}>
      Chats
    </button>
  );
  return (
    <div className="flex h-full min-h-0">
      <aside className={`${showList ? "block" : "hidden"} absolute inset-y-12 left-0 z-10 w-64 border-r border-zinc-200 bg-white p-2 md:static md:block dark:border-zinc-800 dark:bg-zinc-950`}>
        <Conversations current={id} onNew={() => void create()} onDeleted={(gone) => gone === id && void navigate("/chat")} />
      </aside>
      <section className="flex min-w-0 flex-1 flex-col" aria-label="Chat">
        {conversation && messages ? (
          <ConversationView key={conversation.id} conversation={conversation} messages={messages}>
            {toggle}
          </ConversationView>
        ) : conversation === null ? (
          <>
            <div className="px-3 py-2 md:hidden">{toggle}</div>
            <div className="m-auto p-4 text-center">
              <h1 className="mb-2 text-xl font-semibold">GroupQwen</h1>
              <button type="button" onClick={() => void create()} className="rounded bg-indigo-600 px-3 py-2 text-white">Start a chat</button>
            </div>
          </>
        ) : null}
      </section>
    </div>
  );
}
