/** The model and parameters picked for each conversation, kept in memory and written through to IndexedDB:
 * a question sent right after a pick goes with it (the page's live query of the conversation may not have
 * seen the write yet), and sending never waits on an IndexedDB read. */
import { create } from "zustand";
import { db, type Conversation, type Params } from "./db";

export interface Picks {
  model: string;
  params: Params;
}

/** The picks made on this page, by conversation id; a conversation not in it has its stored ones. */
export const usePicks = create<{ byConversation: Record<string, Picks> }>(() => ({ byConversation: {} }));

/** What `conversation` (as stored, or as the page last read it) is to be asked with now. */
export function picksOf(conversation: Conversation): Picks {
  return usePicks.getState().byConversation[conversation.id] ?? stored(conversation);
}

/** The picks of `conversation`, re-rendered when one is made. */
export function usePicksOf(conversation: Conversation): Picks {
  const picked = usePicks((state) => state.byConversation[conversation.id]);
  return picked ?? stored(conversation);
}

/** Picks `patch` for `conversation`: in memory at once, in IndexedDB when the write is done. */
export function pick(conversation: Conversation, patch: Partial<Picks>): Promise<unknown> {
  const next = { ...picksOf(conversation), ...patch };
  usePicks.setState((state) => ({ byConversation: { ...state.byConversation, [conversation.id]: next } }));
  return db.conversations.update(conversation.id, patch);
}

function stored(conversation: Conversation): Picks {
  return { model: conversation.model, params: conversation.params };
}
