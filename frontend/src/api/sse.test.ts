import { describe, expect, it } from "vitest";
import { SseParser, sseEvents } from "./sse";

describe("SseParser", () => {
  it("joins data lines, names events, ignores comments", () => {
    const p = new SseParser();
    expect(p.feed(": hi\nevent: summary\ndata: {\"a\":\ndata: 1}\n\n")).toEqual([{ event: "summary", data: '{"a":\n1}' }]);
  });
  it("handles any line ending and frames cut anywhere", () => {
    const p = new SseParser();
    const text = "data: one\r\n\r\ndata: two\r\rdata:three\n\n";
    const out = [];
    for (const ch of text) out.push(...p.feed(ch));
    expect(out.map((e) => e.data)).toEqual(["one", "two", "three"]);
    expect(out.every((e) => e.event === "message")).toBe(true);
  });
  it("dispatches nothing for a blank block", () => {
    expect(new SseParser().feed("\n\nevent: x\n\n")).toEqual([]);
  });
});

describe("sseEvents", () => {
  it("decodes UTF-8 split across network chunks", async () => {
    const bytes = new TextEncoder().encode("data: héllo ✓\n\n");
    const body = new ReadableStream<Uint8Array>({
      start(c) {
        for (const b of bytes) c.enqueue(new Uint8Array([b]));
        c.close();
      },
    });
    const out = [];
    for await (const e of sseEvents(body)) out.push(e.data);
    expect(out).toEqual(["héllo ✓"]);
  });
});
