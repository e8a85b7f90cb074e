import { ApiError, errorOfBody, request } from "../api/client";

/** POSTs `file` as the raw body with upload progress (fetch reports none); the server's error message on
 * failure. */
export function upload<T>(url: string, file: File, headers: Record<string, string>, onProgress: (sent: number) => void): Promise<T> {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", url);
    for (const [k, v] of Object.entries(headers)) xhr.setRequestHeader(k, v);
    xhr.setRequestHeader("content-type", "application/octet-stream");
    xhr.upload.onprogress = (e) => onProgress(e.loaded);
    xhr.onerror = () => reject(new ApiError("The upload failed: the gateway cannot be reached", 0));
    xhr.onload = () => {
      let body: { error?: { message?: string; code?: string } } = {};
      try {
        body = JSON.parse(xhr.responseText) as typeof body;
      } catch {
        // not JSON
      }
      if (xhr.status >= 200 && xhr.status < 300) resolve(body as T);
      else reject(errorOfBody(body, xhr.status, xhr.statusText));
    };
    xhr.send(file);
  });
}

/** Fetches `path` (with the API key) and saves it as `filename`: a plain link would send no key. */
export async function download(path: string, filename: string): Promise<void> {
  const blob = await (await request(path)).blob();
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = filename;
  link.click();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}
