/** Sending, streaming, stopping, regenerating and editing in one conversation. */
import { useQueryClient } from "@tanstack/react-query";
import { useCallback } from "react";
import { create } from "zustand";
import { ApiError } from "../api/client";
import { chatBody, emptyDraft, fold, titleOf, type Draft } from "./answer";
import { db, INTERRUPTED, RELOADED, type Conversation, type Message } from "./db";
import { picksOf } from "./picks";
import type { ChatTransport } from "./transport";
import { chatTransport } from "./ws";

/** An answer streaming into a conversation: its place among the messages, its text so far, its stop, and
 * the question it answers (shown from here in the frame of the key, before IndexedDB has it). */
export interface Stream {
  seq: number;
  draft: Draft;
  abort: AbortController;
  question: Message | null;
}

/** The answers streaming now, by conversation id, apart from the page's state: only the streaming message
 * re-renders per update (at most once a frame), not the page with its pickers and composer; and an answer
 * stays in its own conversation while the page shows another. */
export const useStreams = create<{ byConversation: Record<string, Stream> }>(() => ({ byConversation: {} }));

/** The answer streaming into conversation `id` now, if one is. */
function streamOf(id: string): Stream | undefined {
  return useStreams.getState().byConversation[id];
}

function setStream(id: string, stream: Stream | null): void {
  useStreams.setState(({ byConversation }) => {
    const next = Object.fromEntries(Object.entries(byConversation).filter(([other]) => other !== id));
    return { byConversation: stream ? { ...next, [id]: stream } : next };
  });
}

/** How many messages the last answer left in each conversation: a live list shorter than that is behind.
 * Kept beside the streams, not in a component: an answer may end while its conversation is not shown. */
const settled = new Map<string, number>();

/** The answers streaming now as they would be kept if the page went (a reload), by conversation. */
const drafts = new Map<string, () => Message>();
let keeping = false;

/** On `pagehide`: what the answers have so far, for `keepInterrupted` when the page comes back. */
function keepDrafts(): void {
  if (drafts.size) sessionStorage.setItem(INTERRUPTED, JSON.stringify([...drafts.values()].map((draft) => draft())));
}

/** After the frame that is being drawn now has been painted. */
function afterPaint(then: () => void): void {
  requestAnimationFrame(() => setTimeout(then, 0));
}

/** `live`: the conversation's messages as the page shows them (its live query), which spares a read of the
 * history before the question leaves when they are surely current. */
export function useChat(conversation: Conversation | undefined, live?: Message[], transport: ChatTransport = chatTransport) {
  const streamingSeq = useStreams((state) => (conversation ? (state.byConversation[conversation.id]?.seq ?? null) : null));
  const question = useStreams((state) => (conversation ? (state.byConversation[conversation.id]?.question ?? null) : null));
  // a request may load (or swap out) models: the picker's statuses are re-read once it has an answer
  const client = useQueryClient();

  /** The history as the page shows it when that is surely current, else null (read it from the store). */
  const shown = useCallback(
    (id: string): Message[] | null => {
      const floor = settled.get(id) ?? 1; // an empty list may be another's
      return live && live.length >= floor && live.every((m) => m.conversationId === id) ? live : null;
    },
    [live],
  );

  /** Streams the answer to `history` into `conv`; `store`: the question's writes, begun once the request
   * has left and done before the answer's. `fresh`: a new answer is wanted, not the cache's (regenerate). */
  const answer = useCallback(
    async (conv: Conversation, history: Message[], store: () => Promise<unknown>, fresh = false) => {
      const question = history.at(-1) ?? null;
      const seq = history.length;
      const abort = new AbortController();
      const picks = picksOf(conv);
      let draft = emptyDraft(performance.now());
      // one render per frame however fast chunks come
      let frame: number | null = null;
      const show = () => {
        frame = null;
        setStream(conv.id, { seq, draft, abort, question });
      };
      // the request leaves first, the page renders while it is on its way
      const headers: Record<string, string> = fresh ? { "cache-control": "no-cache" } : {};
      const streamed = transport.stream(chatBody(picks.model, picks.params, history), abort.signal, (event) => {
        const first = draft.firstTokenAt === null;
        draft = fold(draft, event, performance.now());
        // before the first token (the headers, the role chunk) nothing is shown: no frame for it to wait behind
        if (draft.firstTokenAt === null) return;
        if (first) {
          show(); // the first token: at once, its model's new status only once it is painted
          afterPaint(() => void client.invalidateQueries({ queryKey: ["models"] }));
        } else frame ??= requestAnimationFrame(show);
      }, headers);
      const stored = store();
      show();
      // the answer as it stands: kept when the stream ends, or (marked cut off) when the page goes away
      const answer = (state: Message["state"], error: string | undefined): Message => ({
        id: crypto.randomUUID(),
        conversationId: conv.id,
        seq,
        role: "assistant",
        content: draft.content,
        reasoning: draft.reasoning || undefined,
        meta: draft.meta,
        state,
        error,
      });
      drafts.set(conv.id, () => answer("error", RELOADED));
      if (!keeping) {
        addEventListener("pagehide", keepDrafts);
        keeping = true;
      }
      let state: Message["state"] = "done";
      let error: string | undefined;
      try {
        await streamed;
      } catch (exc) {
        if (abort.signal.aborted) state = "stopped";
        else {
          state = "error";
          error = exc instanceof ApiError || exc instanceof Error ? exc.message : String(exc);
        }
      } finally {
        if (frame !== null) cancelAnimationFrame(frame);
        drafts.delete(conv.id);
      }
      const message = answer(state, error);
      try {
        await stored;
        await db.messages.put(message);
        settled.set(conv.id, seq + 1);
        await db.conversations.update(conv.id, { updatedAt: Date.now() });
      } finally {
        setStream(conv.id, null);
        void client.invalidateQueries({ queryKey: ["models"] });
      }
    },
    [transport, client],
  );

  const send = useCallback(
    async (text: string, images: string[] = [], editSeq?: number) => {
      if (!conversation || streamOf(conversation.id)) return;
      const id = conversation.id;
      const known = shown(id);
      const all = known ?? (await db.history(id));
      const history = editSeq === undefined ? all : all.slice(0, editSeq);
      const seq = history.length;
      const message: Message = { id: crypto.randomUUID(), conversationId: id, seq, role: "user", content: text };
      if (images.length) message.images = images;
      // the request leaves first; the question is stored while the answer is on its way
      const store = () =>
        db.transaction("rw", db.messages, db.conversations, async () => {
          if (editSeq !== undefined) await db.truncate(id, editSeq);
          await db.messages.put(message);
          if (seq === 0 && conversation.title === "New chat") await db.conversations.update(id, { title: titleOf(text) });
        });
      await answer(conversation, [...history, message], store);
    },
    [conversation, shown, answer],
  );

  const regenerate = useCallback(async () => {
    if (!conversation || streamOf(conversation.id)) return;
    const history = shown(conversation.id) ?? (await db.history(conversation.id));
    const last = history.at(-1);
    if (last?.role !== "assistant") return;
    await answer(conversation, history.slice(0, -1), () => db.truncate(conversation.id, last.seq), true);
  }, [conversation, shown, answer]);

  const stop = useCallback(() => {
    if (conversation) streamOf(conversation.id)?.abort.abort();
  }, [conversation]);

  return { streamingSeq, question, send, regenerate, stop };
}
