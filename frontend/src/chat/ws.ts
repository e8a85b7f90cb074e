/** Chat over the gateway's WebSocket (`GET /v1/ws`, docs/api.md "WebSocket"): one socket for every answer
 * of the page; when it drops mid-answer it reconnects and `resume`s, and the answer goes on from the frame
 * after the last one seen (each generation's frames carry a `seq` 1, 2, 3 …). Stop is a `cancel` frame. */
import { ApiError, apiUrl } from "../api/client";
import type { ChatBody, ChatChunk, Decision, Usage } from "../api/types";
import { useSettings } from "../settings";
import { answerHeaders, sseTransport, type ChatTransport, type StreamEvent } from "./transport";

/** A server frame (the fields each `type` has are in docs/api.md). */
export interface Frame {
  type: string;
  id?: string;
  seq?: number;
  session?: string;
  resume_window_s?: number;
  heartbeat_s?: number;
  data?: ChatChunk;
  headers?: Record<string, string>;
  usage?: Usage | null;
  groupqwen?: Decision;
  status?: number;
  error?: { message: string; code?: string | null };
}

/** The socket could not be opened (or said no hello): nothing was sent, another transport may be used. */
export class SocketUnavailable extends Error {}

/** What to do with a generation's frame, given the last `seq` taken: frames a resume sends again are
 * skipped; a missing one would be a gap, which the protocol rules out (the answer is failed, not patched). */
export function order(lastSeq: number, seq: number): "take" | "again" | "gap" {
  if (seq <= lastSeq) return "again";
  return seq === lastSeq + 1 ? "take" : "gap";
}

interface Pending {
  lastSeq: number;
  on: (event: StreamEvent) => void;
  resolve: () => void;
  reject: (reason: unknown) => void;
}

const OPEN_TIMEOUT_MS = 5000;
const NORMAL_CLOSURE = 1000;
const RESUMED_ELSEWHERE = 4001;

function abortError(): DOMException {
  return new DOMException("The answer was stopped", "AbortError");
}

export class ChatSocket {
  private socket: WebSocket | null = null;
  private opening: Promise<WebSocket> | null = null;
  /** The session every generation of this page belongs to: the first hello's token, kept across resumes. */
  private session: string | null = null;
  private resumeWindowMs = 30_000;
  private heartbeatMs = 15_000;
  private lastFrameAt = 0;
  private watchdog: ReturnType<typeof setInterval> | null = null;
  /** During a resume, the new connection's own session: it stays when the resume is refused. */
  private freshSession: string | null = null;
  private readonly pending = new Map<string, Pending>();
  private leaving = false; // the pagehide listener is installed

  constructor(private readonly url: () => string) {}

  /** Streams one answer. Rejects with SocketUnavailable when the socket cannot open (before anything was
   * sent), an ApiError with the server's message, or an AbortError after `signal` aborted. `headers`: the
   * request's cache headers, which the `chat.create` frame carries. */
  async stream(body: ChatBody, signal: AbortSignal, on: (event: StreamEvent) => void, headers: Record<string, string> = {}): Promise<void> {
    // an open socket sends at once, before the page renders what the send changed
    const socket = this.socket?.readyState === WebSocket.OPEN ? this.socket : await this.connect();
    if (signal.aborted) throw abortError();
    const id = crypto.randomUUID();
    const done = new Promise<void>((resolve, reject) => this.pending.set(id, { lastSeq: 0, on, resolve, reject }));
    const stop = () => {
      const pending = this.pending.get(id);
      if (!pending) return;
      this.pending.delete(id); // its later frames are dropped; a resume that leaves it out cancels it too
      if (this.socket?.readyState === WebSocket.OPEN) this.send(this.socket, { type: "cancel", id });
      pending.reject(abortError());
    };
    signal.addEventListener("abort", stop, { once: true });
    this.send(socket, { type: "chat.create", id, body, ...(Object.keys(headers).length ? { headers } : {}) });
    try {
      await done;
    } finally {
      signal.removeEventListener("abort", stop);
    }
  }

  /** The page's socket, opened when it is not (resuming the answers that ran on a dropped one). */
  connect(): Promise<WebSocket> {
    if (this.socket?.readyState === WebSocket.OPEN) return Promise.resolve(this.socket);
    // answers still running on a dropped socket are resumed on the new one
    this.opening ??= this.open(this.pending.size > 0).finally(() => (this.opening = null));
    return this.opening;
  }

  /** A new socket, resolved on its hello; `resume`: first take the session's running answers back. */
  private open(resume: boolean): Promise<WebSocket> {
    return new Promise((resolve, reject) => {
      let socket: WebSocket;
      try {
        socket = new WebSocket(this.url());
      } catch {
        reject(new SocketUnavailable("The WebSocket URL is not valid"));
        return;
      }
      let greeted = false;
      const timer = setTimeout(() => socket.close(), OPEN_TIMEOUT_MS); // a proxy that holds the upgrade
      socket.onmessage = (message: MessageEvent<string>) => {
        this.lastFrameAt = Date.now();
        const frame = JSON.parse(message.data) as Frame;
        if (greeted) {
          this.receive(socket, frame);
          return;
        }
        if (frame.type !== "hello") return;
        greeted = true;
        clearTimeout(timer);
        this.resumeWindowMs = (frame.resume_window_s ?? 30) * 1000;
        this.heartbeatMs = (frame.heartbeat_s ?? 15) * 1000;
        this.socket = socket;
        if (!this.leaving) {
          // the page going away (a reload, a closed tab) is a client that is done: a normal close, which
          // cancels its answers at once; a dropped one would keep them generating for a resume that a new
          // page never sends (its session lived here), holding their models meanwhile
          this.leaving = true;
          addEventListener("pagehide", () => this.socket?.close(NORMAL_CLOSURE, "the page went away"));
        }
        if (resume && this.session !== null) {
          const generations = [...this.pending].map(([id, p]) => ({ id, after_seq: p.lastSeq }));
          this.send(socket, { type: "resume", session: this.session, generations });
          this.freshSession = frame.session ?? null;
        } else {
          this.session = frame.session ?? null;
        }
        this.watch();
        resolve(socket);
      };
      socket.onclose = (event) => {
        clearTimeout(timer);
        if (!greeted) reject(new SocketUnavailable(`The WebSocket closed before its hello (${event.code})`));
        else this.closed(socket, event.code);
      };
    });
  }

  private send(socket: WebSocket, frame: Record<string, unknown>): void {
    socket.send(JSON.stringify(frame));
  }

  private receive(socket: WebSocket, frame: Frame): void {
    if (frame.type === "ping") {
      this.send(socket, { type: "pong" });
      return;
    }
    const pending = frame.id === undefined ? undefined : this.pending.get(frame.id);
    if (frame.type === "error" && frame.error?.code === "resume_expired" && this.freshSession !== null) {
      this.session = this.freshSession;
      this.freshSession = null;
    }
    if (!pending || frame.id === undefined) return; // a stopped answer's late frames, pong, resumed
    if (frame.seq !== undefined) {
      const verdict = order(pending.lastSeq, frame.seq);
      if (verdict === "again") return;
      if (verdict === "gap") {
        this.send(socket, { type: "cancel", id: frame.id });
        this.finish(frame.id, new ApiError(`Frames of the answer are missing (seq ${pending.lastSeq + 1}–${frame.seq - 1})`, 0));
        return;
      }
      pending.lastSeq = frame.seq;
    }
    if (frame.type === "chunk" && frame.data) {
      if (frame.headers) {
        const headers = frame.headers;
        pending.on({ type: "headers", headers: answerHeaders((name) => headers[name] ?? null) });
      }
      pending.on({ type: "chunk", chunk: frame.data });
    } else if (frame.type === "done") {
      const last: ChatChunk = { id: "", model: "", choices: [] };
      if (frame.usage) last.usage = frame.usage;
      if (frame.groupqwen) last.groupqwen = frame.groupqwen;
      pending.on({ type: "chunk", chunk: last });
      this.finish(frame.id, null);
    } else if (frame.type === "cancelled") {
      this.finish(frame.id, abortError());
    } else if (frame.type === "error" && frame.error?.code !== "unknown_id") {
      this.finish(frame.id, new ApiError(frame.error?.message ?? "The answer failed", frame.status ?? 0, frame.error?.code ?? null));
    }
  }

  private finish(id: string, error: unknown): void {
    const pending = this.pending.get(id);
    this.pending.delete(id);
    if (error === null) pending?.resolve();
    else pending?.reject(error);
  }

  /** The server sends a ping every heartbeat: a socket silent for longer than two is dead (a half-open
   * connection), and is closed so that the answers resume on a new one. */
  private watch(): void {
    if (this.watchdog !== null) clearInterval(this.watchdog);
    this.watchdog = setInterval(() => {
      if (Date.now() - this.lastFrameAt > 2.5 * this.heartbeatMs) this.socket?.close(4000, "no heartbeat");
    }, this.heartbeatMs);
  }

  private closed(socket: WebSocket, code: number): void {
    if (socket !== this.socket) return;
    this.socket = null;
    if (this.watchdog !== null) clearInterval(this.watchdog);
    this.watchdog = null;
    if (this.pending.size === 0) return;
    if (code === NORMAL_CLOSURE || code === RESUMED_ELSEWHERE) {
      this.failAll("The gateway closed the connection before the answer's end");
      return;
    }
    void this.reconnect();
  }

  /** Tries again and again (¼ s, ½ s, 1 s, then every 2 s) within the server's resume window. */
  private async reconnect(): Promise<void> {
    const deadline = Date.now() + this.resumeWindowMs;
    for (let delay = 250; this.pending.size > 0; delay = Math.min(delay * 2, 2000)) {
      if (Date.now() + delay > deadline) break;
      await new Promise((resolve) => setTimeout(resolve, delay));
      if (this.socket !== null || this.pending.size === 0) return; // someone else reconnected
      try {
        await this.connect();
        return;
      } catch {
        // not back yet: try again
      }
    }
    this.failAll(`The connection to the gateway was lost and not back within ${this.resumeWindowMs / 1000} s`);
  }

  private failAll(message: string): void {
    for (const id of [...this.pending.keys()]) this.finish(id, new ApiError(message, 0));
  }
}

/** `/v1/ws` of the gateway the settings name (the page's own by default), as a ws:// or wss:// URL. */
export function socketUrl(): string {
  const url = new URL(apiUrl("/v1/ws"), location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.href;
}

const socket = new ChatSocket(socketUrl);
const SSE_AFTER_FAILURE_MS = 60_000;
let socketFailedAt = -Infinity;

/** Opens the WebSocket ahead of the first question (a socket that cannot open: SSE for a minute). */
export function openSocket(): void {
  if (useSettings.getState().apiKey.trim() || Date.now() - socketFailedAt < SSE_AFTER_FAILURE_MS) return;
  socket.connect().catch(() => {
    socketFailedAt = Date.now();
  });
}

/** The chat's transport: the WebSocket, or SSE when the socket cannot open (a proxy that does not pass
 * WebSockets: SSE for the next minute) or an API key is set (a browser cannot send `Authorization` on a
 * WebSocket). */
export const chatTransport: ChatTransport = {
  name: "ws, else sse",
  async stream(body, signal, on, headers) {
    const now = Date.now();
    if (useSettings.getState().apiKey.trim() || now - socketFailedAt < SSE_AFTER_FAILURE_MS) {
      return sseTransport.stream(body, signal, on, headers);
    }
    try {
      await socket.stream(body, signal, on, headers);
    } catch (exc) {
      if (!(exc instanceof SocketUnavailable)) throw exc;
      socketFailedAt = now;
      await sseTransport.stream(body, signal, on, headers);
    }
  },
};
