/** How a chat answer streams to the page: SSE over `POST /v1/chat/completions` here, the WebSocket
 * (`GET /v1/ws`) in ws.ts, both behind one interface. */
import { ApiError, errorOf, authHeaders, apiUrl, route } from "../api/client";
import { sseEvents } from "../api/sse";
import type { ChatBody, ChatChunk } from "../api/types";

/** What the response headers say about the answer (docs/api.md): final before the first delta. */
export interface AnswerHeaders {
  model: string | null;
  route: string | null;
  cache: string | null;
  cacheSimilarity: number | null;
  escalations: number | null;
  requestId: string | null;
}

export type StreamEvent = { type: "headers"; headers: AnswerHeaders } | { type: "chunk"; chunk: ChatChunk };

export interface ChatTransport {
  readonly name: string;
  /** Streams one answer; resolves when it is complete, rejects with an ApiError (the server's message), or
   * with an AbortError once `signal` aborts (the server then stops generating). `headers`: the request's
   * cache headers (docs/api.md: `cache-control`, `x-groupqwen-cache-ttl`, …). */
  stream(body: ChatBody, signal: AbortSignal, on: (event: StreamEvent) => void, headers?: Record<string, string>): Promise<void>;
}

function number(value: string | null): number | null {
  return value === null || value === "" || Number.isNaN(Number(value)) ? null : Number(value);
}

/** The answer's headers, read by `get` (HTTP's headers, or the `headers` of a WebSocket's first chunk). */
export function answerHeaders(get: (name: string) => string | null): AnswerHeaders {
  return {
    model: get("x-groupqwen-model"),
    route: get("x-groupqwen-route"),
    cache: get("x-groupqwen-cache"),
    cacheSimilarity: number(get("x-groupqwen-cache-similarity")),
    escalations: number(get("x-groupqwen-escalations")),
    requestId: get("x-request-id"),
  };
}

export const sseTransport: ChatTransport = {
  name: "sse",
  async stream(body, signal, on, headers = {}) {
    let response: Response;
    try {
      response = await fetch(apiUrl(route("/v1/chat/completions")), {
        method: "POST",
        headers: { "content-type": "application/json", ...headers, ...authHeaders() },
        body: JSON.stringify(body),
        signal,
      });
    } catch (exc) {
      if (signal.aborted) throw exc;
      throw new ApiError("The gateway cannot be reached", 0);
    }
    if (!response.ok) throw await errorOf(response);
    if (response.body === null) throw new ApiError("The gateway sent no body", response.status);
    on({ type: "headers", headers: answerHeaders((name) => response.headers.get(name)) });
    for await (const event of sseEvents(response.body)) {
      if (event.data === "[DONE]") return;
      const chunk = JSON.parse(event.data) as ChatChunk;
      if (chunk.error) throw new ApiError(chunk.error.message, response.status, chunk.error.code ?? null);
      on({ type: "chunk", chunk });
    }
    throw new ApiError("The answer was cut off before its end (the connection closed)", 0);
  },
};
