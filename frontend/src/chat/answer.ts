/** Folding a stream's events into the answer shown on the page (pure: unit-tested). */
import type { ChatBody, ChatMessage, ContentPart } from "../api/types";
import type { AnswerMeta, Message, Params } from "./db";
import type { StreamEvent } from "./transport";

export interface Draft {
  content: string;
  reasoning: string;
  meta: AnswerMeta;
  startedAt: number;
  firstTokenAt: number | null;
  lastTokenAt: number | null;
}

export function emptyDraft(startedAt: number): Draft {
  return {
    content: "",
    reasoning: "",
    startedAt,
    firstTokenAt: null,
    lastTokenAt: null,
    meta: {
      model: null,
      route: null,
      cache: null,
      cacheSimilarity: null,
      escalations: null,
      promptTokens: null,
      completionTokens: null,
      ttftMs: null,
      tokensPerSecond: null,
      requestId: null,
    },
  };
}

/** The draft after `event`, received at `now` (ms). */
export function fold(draft: Draft, event: StreamEvent, now: number): Draft {
  if (event.type === "headers") {
    const h = event.headers;
    return { ...draft, meta: { ...draft.meta, ...h } };
  }
  const { chunk } = event;
  let { content, reasoning, firstTokenAt, lastTokenAt } = draft;
  const meta = { ...draft.meta };
  for (const choice of chunk.choices) {
    const text = (choice.delta.content ?? "") + (choice.delta.reasoning_content ?? "");
    content += choice.delta.content ?? "";
    reasoning += choice.delta.reasoning_content ?? "";
    if (text) {
      firstTokenAt ??= now;
      lastTokenAt = now;
    }
  }
  if (chunk.groupqwen) {
    meta.model = chunk.groupqwen.model;
    meta.route = chunk.groupqwen.route;
    meta.escalations = chunk.groupqwen.escalations;
    if (chunk.groupqwen.boxes?.length) meta.boxes = chunk.groupqwen.boxes;
  }
  if (chunk.usage) {
    meta.promptTokens = chunk.usage.prompt_tokens;
    meta.completionTokens = chunk.usage.completion_tokens;
  }
  if (firstTokenAt !== null) meta.ttftMs = firstTokenAt - draft.startedAt;
  if (meta.completionTokens && firstTokenAt !== null && lastTokenAt !== null && lastTokenAt > firstTokenAt) {
    meta.tokensPerSecond = ((meta.completionTokens - 1) * 1000) / (lastTokenAt - firstTokenAt);
  }
  return { content, reasoning, meta, startedAt: draft.startedAt, firstTokenAt, lastTokenAt };
}

/** The request body for `history` (oldest first) with the conversation's parameters. */
export function chatBody(model: string, params: Params, history: Message[]): ChatBody {
  const messages: ChatMessage[] = [];
  if (params.system.trim()) messages.push({ role: "system", content: params.system });
  for (const m of history) {
    if (m.role === "assistant" && m.state === "error") continue;
    if (m.images?.length) {
      const parts: ContentPart[] = [{ type: "text", text: m.content }];
      for (const url of m.images) parts.push({ type: "image_url", image_url: { url } });
      messages.push({ role: m.role, content: parts });
    } else {
      messages.push({ role: m.role, content: m.content });
    }
  }
  const body: ChatBody = { model, messages, stream: true, stream_options: { include_usage: true } };
  if (params.temperature !== null) body.temperature = params.temperature;
  if (params.maxTokens !== null) body.max_tokens = params.maxTokens;
  if (params.thinking !== "auto") body.enable_thinking = params.thinking === "on";
  return body;
}

/** A conversation's title from its first question. */
export function titleOf(text: string): string {
  const line = text.trim().split("\n")[0] ?? "";
  return line.length > 48 ? `${line.slice(0, 47)}…` : line || "New chat";
}

/** The last image a user message of `history` attached: the one the gateway maps an answer's boxes to. */
export function lastImage(history: Pick<Message, "role" | "images">[]): string | undefined {
  for (const message of [...history].reverse()) {
    if (message.role === "user" && message.images?.length) return message.images.at(-1);
  }
  return undefined;
}
