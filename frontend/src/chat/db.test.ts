import "fake-indexeddb/auto";
import { describe, expect, it } from "vitest";
import { ChatDb } from "./db";

describe("ChatDb", () => {
  it("keeps messages in order, truncates for regenerate, searches titles and text, deletes whole", async () => {
    const db = new ChatDb(`test-${Math.random()}`);
    const a = await db.create("auto");
    const b = await db.create("auto");
    await db.conversations.update(b.id, { title: "Tides" });
    for (const [seq, content] of ["first", "second", "third"].entries()) {
      await db.messages.put({ id: `${seq}`, conversationId: a.id, seq, role: seq % 2 ? "assistant" : "user", content });
    }
    expect((await db.history(a.id)).map((m) => m.content)).toEqual(["first", "second", "third"]);
    await db.truncate(a.id, 1);
    expect((await db.history(a.id)).map((m) => m.content)).toEqual(["first"]);
    expect((await db.search("FIRST")).map((c) => c.id)).toEqual([a.id]);
    expect((await db.search("tide")).map((c) => c.id)).toEqual([b.id]);
    expect(await db.search("")).toHaveLength(2);
    await db.remove(a.id);
    expect(await db.messages.count()).toBe(0);
    expect(await db.conversations.count()).toBe(1);
  });
});
