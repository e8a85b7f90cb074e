import "fake-indexeddb/auto";
import { describe, expect, it } from "vitest";
import { ChatDb, INTERRUPTED, keepInterrupted, RELOADED, type Message } from "./db";

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

describe("keepInterrupted", () => {
  it("keeps an answer a reload cut off, once, where its question is and nothing took its place", async () => {
    const db = new ChatDb(`test-${Math.random()}`);
    const a = await db.create("auto");
    const b = await db.create("auto");
    await db.messages.put({ id: "q", conversationId: a.id, seq: 0, role: "user", content: "Count" });
    await db.messages.put({ id: "q2", conversationId: b.id, seq: 0, role: "user", content: "Again" });
    await db.messages.put({ id: "r2", conversationId: b.id, seq: 1, role: "assistant", content: "finished" });
    const cut = (id: string, conversationId: string, seq: number): Message => ({
      id, conversationId, seq, role: "assistant", content: "one two", state: "error", error: RELOADED,
    });
    // a: kept; b: its answer ended after all (bfcache); a's seq 3: its question was never stored
    const saved = new Map([[INTERRUPTED, JSON.stringify([cut("x", a.id, 1), cut("y", b.id, 1), cut("z", a.id, 3)])]]);
    const storage = { getItem: (k: string) => saved.get(k) ?? null, removeItem: (k: string) => void saved.delete(k) };
    await keepInterrupted(storage, db);
    expect((await db.history(a.id)).map((m) => [m.content, m.state])).toEqual([["Count", undefined], ["one two", "error"]]);
    expect((await db.history(b.id)).map((m) => m.content)).toEqual(["Again", "finished"]);
    expect(saved.size).toBe(0);
    await keepInterrupted(storage, db); // once: nothing left to keep
    expect(await db.messages.count()).toBe(4);
  });
});
