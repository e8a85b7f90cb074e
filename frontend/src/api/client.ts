/** The gateway's HTTP API: URLs checked against its OpenAPI schema, auth, and its error JSON as errors. */
import type { paths } from "./schema";
import { useSettings } from "../settings";

export class ApiError extends Error {
  readonly status: number;
  readonly code: string | null;
  readonly param: string | null;

  constructor(message: string, status: number, code: string | null = null, param: string | null = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.param = param;
  }
}

type PathParams<P extends string> = P extends `${string}{${infer Name}}${infer Rest}`
  ? { [K in Name | keyof PathParams<Rest>]: string }
  : Record<never, never>;

/** A path of the gateway's schema with its `{params}` filled in (escaped); a path the gateway does not
 * serve does not compile. */
export function route<P extends keyof paths & string>(path: P, params?: PathParams<P>): string {
  const values = (params ?? {}) as Record<string, string>;
  return path.replace(/\{(\w+)(?::path)?\}/g, (_, name: string) => encodeURIComponent(values[name] ?? ""));
}

export function apiUrl(path: string): string {
  return useSettings.getState().gatewayUrl.replace(/\/+$/, "") + path;
}

export function authHeaders(): Record<string, string> {
  const key = useSettings.getState().apiKey.trim();
  return key ? { authorization: `Bearer ${key}` } : {};
}

/** `message` with what the page's user does about a refused key (401): the server's own message asks for an
 * `Authorization` header, which the page sends from the API key in Settings. */
export function forThePage(message: string, status: number, keySet: boolean): string {
  if (status !== 401) return message;
  return `${message} ${keySet ? "Check the API key in Settings." : "Enter an API key in Settings."}`;
}

function keySet(): boolean {
  return useSettings.getState().apiKey.trim() !== "";
}

/** An OpenAI-style error body. */
type ErrorBody = { error?: { message?: string; code?: string; param?: string } };

/** The server's own message from an OpenAI-style error body, else the status line (a 401's says where the
 * page's key goes). */
export async function errorOf(response: Response): Promise<ApiError> {
  const text = await response.text().catch(() => "");
  const status = response.status;
  try {
    const body = JSON.parse(text) as ErrorBody;
    if (body.error?.message) return errorOfBody(body, status, response.statusText);
  } catch {
    // not JSON: fall through
  }
  return new ApiError(forThePage(text.trim() || `${status} ${response.statusText}`, status, keySet()), status);
}

/** `errorOf` for a body already read (an XMLHttpRequest's, an event's). */
export function errorOfBody(body: ErrorBody, status: number, statusText: string): ApiError {
  const message = forThePage(body.error?.message ?? `${status} ${statusText}`, status, keySet());
  return new ApiError(message, status, body.error?.code ?? null, body.error?.param ?? null);
}

export async function request(path: string, init: RequestInit = {}): Promise<Response> {
  let response: Response;
  try {
    response = await fetch(apiUrl(path), { ...init, headers: { ...authHeaders(), ...init.headers } });
  } catch (exc) {
    if (exc instanceof DOMException && exc.name === "AbortError") throw exc;
    throw new ApiError(`The gateway at ${apiUrl("") || location.origin} cannot be reached`, 0);
  }
  if (!response.ok) throw await errorOf(response);
  return response;
}

export async function getJson<T>(path: string, init: RequestInit = {}): Promise<T> {
  return (await (await request(path, init)).json()) as T;
}

export async function postJson<T>(path: string, body: unknown = {}): Promise<T> {
  return getJson<T>(path, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
}
