import "fake-indexeddb/auto";
import { describe, expect, it } from "vitest";
import { db } from "./db";
import { pick, picksOf } from "./picks";

describe("picks", () => {
  it("are the ones to send with at once, before IndexedDB has them, and are written through", async () => {
    const conversation = await db.create("auto");
    expect(picksOf(conversation)).toEqual({ model: "auto", params: conversation.params });
    const written = pick(conversation, { model: "qwen" });
    // what a send right after the pick reads: the page's `conversation` is the one read before it
    expect(picksOf(conversation).model).toBe("qwen");
    expect(picksOf(conversation).params).toEqual(conversation.params);
    await written;
    expect((await db.conversations.get(conversation.id))?.model).toBe("qwen");
    await pick(conversation, { params: { ...conversation.params, temperature: 1.2 } });
    expect(picksOf(conversation)).toEqual({ model: "qwen", params: { ...conversation.params, temperature: 1.2 } });
    expect((await db.conversations.get(conversation.id))?.params.temperature).toBe(1.2);
    const other = await db.create("auto");
    expect(picksOf(other).model).toBe("auto"); // each conversation its own
  });
});
