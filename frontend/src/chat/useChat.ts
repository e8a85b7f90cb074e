/** Sending, streaming, stopping, regenerating and editing in one conversation. */
import { useQueryClient } from "@tanstack/react-query";
import { useCallback, useRef, useState } from "react";
import { create } from "zustand";
import { ApiError } from "../api/client";
import { chatBody, emptyDraft, fold, titleOf, type Draft } from "./answer";
import { db, type Conversation, type Message } from "./db";
import type { ChatTransport } from "./transport";
import { chatTransport } from "./ws";

/** Where the streaming answer's place is among the messages; its text is in `useDraft`. */
export interface Streaming {
  seq: number;
}

/** The answer as it streams in, apart from the page's state: only the streaming message re-renders per
 * update (at most once a frame), not the page with its conversation, pickers and composer. */
export const useDraft = create<{ draft: Draft | null }>(() => ({ draft: null }));

/** `live`: the conversation's messages as the page shows them (its live query), which spares a read of the
 * history before the question leaves when they are surely current. */
export function useChat(conversation: Conversation | undefined, live?: Message[], transport: ChatTransport = chatTransport) {
  const [streaming, setStreaming] = useState<Streaming | null>(null);
  const controller = useRef<AbortController | null>(null);
  // how many messages the last answer left in its conversation: a live list shorter than that is behind
  const settled = useRef<{ id: string; count: number } | null>(null);
  // a request may load (or swap out) models: the picker's statuses are re-read once it has an answer
  const client = useQueryClient();

  const answer = useCallback(
    async (conv: Conversation, history: Message[]) => {
      const seq = history.length;
      const abort = new AbortController();
      controller.current = abort;
      let draft = emptyDraft(performance.now());
      // one render per frame however fast chunks come
      let frame: number | null = null;
      const show = () => {
        frame = null;
        useDraft.setState({ draft });
      };
      // the request leaves first, the page renders while it is on its way
      const streamed = transport.stream(chatBody(conv.model, conv.params, history), abort.signal, (event) => {
        const first = draft.firstTokenAt === null;
        draft = fold(draft, event, performance.now());
        if (first && draft.firstTokenAt !== null) {
          show(); // the first token: at once
          void client.invalidateQueries({ queryKey: ["models"] }); // its model is loaded now
        } else frame ??= requestAnimationFrame(show);
      });
      useDraft.setState({ draft });
      setStreaming({ seq });
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
        controller.current = null;
        if (frame !== null) cancelAnimationFrame(frame);
      }
      const message: Message = {
        id: crypto.randomUUID(),
        conversationId: conv.id,
        seq,
        role: "assistant",
        content: draft.content,
        reasoning: draft.reasoning || undefined,
        meta: draft.meta,
        state,
        error,
      };
      await db.messages.put(message);
      settled.current = { id: conv.id, count: seq + 1 };
      await db.conversations.update(conv.id, { updatedAt: Date.now() });
      setStreaming(null);
      useDraft.setState({ draft: null });
      void client.invalidateQueries({ queryKey: ["models"] });
    },
    [transport, client],
  );

  const send = useCallback(
    async (text: string, images: string[] = [], editSeq?: number) => {
      if (!conversation || controller.current) return;
      const id = conversation.id;
      const floor = settled.current?.id === id ? settled.current.count : 1; // an empty list may be another's
      const current = live && live.length >= floor && live.every((m) => m.conversationId === id);
      let history = current ? live : await db.history(id);
      const seq = editSeq ?? history.length;
      if (editSeq !== undefined) {
        await db.truncate(conversation.id, editSeq);
        history = history.slice(0, editSeq);
      }
      const message: Message = { id: crypto.randomUUID(), conversationId: conversation.id, seq, role: "user", content: text };
      if (images.length) message.images = images;
      // the conversation as stored: a model or parameter picked just now was written before this read (one
      // IndexedDB queue) but may not have reached `conversation`, the page's last render, yet
      const asStored = (await db.conversations.get(id)) ?? conversation;
      // the request leaves first; the question is stored while the answer is on its way
      const stored = db.transaction("rw", db.messages, db.conversations, async () => {
        await db.messages.put(message);
        if (seq === 0 && conversation.title === "New chat") {
          await db.conversations.update(conversation.id, { title: titleOf(text) });
        }
      });
      await Promise.all([stored, answer(asStored, [...history, message])]);
    },
    [conversation, live, answer],
  );

  const regenerate = useCallback(async () => {
    if (!conversation || controller.current) return;
    const history = await db.history(conversation.id);
    const last = history.at(-1);
    if (last?.role !== "assistant") return;
    await db.truncate(conversation.id, last.seq);
    await answer((await db.conversations.get(conversation.id)) ?? conversation, history.slice(0, -1));
  }, [conversation, answer]);

  const stop = useCallback(() => controller.current?.abort(), []);

  return { streaming, send, regenerate, stop };
}
