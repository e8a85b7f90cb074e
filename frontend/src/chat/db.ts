/** Chat history in IndexedDB (Dexie): conversations and their messages, images included. */
import Dexie, { type EntityTable } from "dexie";
import type { Box } from "../api/types";

export interface Params {
  system: string;
  temperature: number | null;
  maxTokens: number | null;
  thinking: "auto" | "on" | "off";
}

/** A new chat samples at 0.5, the hottest the cache reuses by default (`cache.max_temperature`): asked again,
 * a question is answered from the cache, which is what the gateway is for; Regenerate asks for a new answer. */
export const DEFAULT_PARAMS: Params = { system: "", temperature: 0.5, maxTokens: null, thinking: "auto" };

export interface Conversation {
  id: string;
  title: string;
  model: string;
  params: Params;
  createdAt: number;
  updatedAt: number;
}

/** What the footer under an answer shows. */
export interface AnswerMeta {
  model: string | null;
  route: string | null;
  cache: string | null;
  cacheSimilarity: number | null;
  escalations: number | null;
  promptTokens: number | null;
  completionTokens: number | null;
  ttftMs: number | null;
  tokensPerSecond: number | null;
  requestId: string | null;
  boxes?: Box[];
}

export interface Message {
  id: string;
  conversationId: string;
  seq: number;
  role: "user" | "assistant";
  content: string;
  reasoning?: string;
  images?: string[]; // data URLs
  meta?: AnswerMeta;
  state?: "done" | "stopped" | "error";
  error?: string;
}

export class ChatDb extends Dexie {
  conversations!: EntityTable<Conversation, "id">;
  messages!: EntityTable<Message, "id">;

  constructor(name = "groupqwen") {
    super(name);
    this.version(1).stores({
      conversations: "id, updatedAt",
      messages: "id, conversationId, [conversationId+seq]",
    });
  }

  async history(conversationId: string): Promise<Message[]> {
    return this.messages.where("[conversationId+seq]").between([conversationId, Dexie.minKey], [conversationId, Dexie.maxKey]).toArray();
  }

  async create(model: string, params: Params = DEFAULT_PARAMS): Promise<Conversation> {
    const now = Date.now();
    const conversation = { id: crypto.randomUUID(), title: "New chat", model, params, createdAt: now, updatedAt: now };
    await this.conversations.add(conversation);
    return conversation;
  }

  async remove(conversationId: string): Promise<void> {
    await this.transaction("rw", this.conversations, this.messages, async () => {
      await this.messages.where("conversationId").equals(conversationId).delete();
      await this.conversations.delete(conversationId);
    });
  }

  /** Messages from `seq` on are dropped (regenerate, edit-and-resend). */
  async truncate(conversationId: string, seq: number): Promise<void> {
    await this.messages.where("[conversationId+seq]").between([conversationId, seq], [conversationId, Dexie.maxKey]).delete();
  }

  /** Conversations, newest first, whose title or messages contain `query` (case-insensitive). */
  async search(query: string): Promise<Conversation[]> {
    const all = await this.conversations.orderBy("updatedAt").reverse().toArray();
    const needle = query.trim().toLowerCase();
    if (!needle) return all;
    const hits = new Set<string>();
    await this.messages.each((m) => {
      if (m.content.toLowerCase().includes(needle)) hits.add(m.conversationId);
    });
    return all.filter((c) => c.title.toLowerCase().includes(needle) || hits.has(c.id));
  }
}

export const db = new ChatDb();

/** Where the chat leaves, on `pagehide`, what the answers streaming then had (a reload ends them): the tab's
 * sessionStorage, written at once, where an IndexedDB write begun as the page goes may never finish. */
export const INTERRUPTED = "groupqwen.interrupted";
export const RELOADED = "The page was reloaded before this answer ended: Regenerate asks again";

/** The answers a reload cut off (`INTERRUPTED`), kept in their conversations as they were, unless a
 * message has taken their place by now or their question was never stored. */
export async function keepInterrupted(storage: Pick<Storage, "getItem" | "removeItem"> = sessionStorage, into: ChatDb = db): Promise<void> {
  const saved = storage.getItem(INTERRUPTED);
  if (saved === null) return;
  storage.removeItem(INTERRUPTED);
  const answers = JSON.parse(saved) as Message[];
  await into.transaction("rw", into.messages, async () => {
    for (const answer of answers) {
      const at = (seq: number) => into.messages.where("[conversationId+seq]").equals([answer.conversationId, seq]).count();
      if ((await at(answer.seq)) === 0 && (await at(answer.seq - 1)) > 0) await into.messages.put(answer);
    }
  });
}
