import { describe, expect, it } from "vitest";
import { chatBody, emptyDraft, fold, lastImage, titleOf } from "./answer";
import { DEFAULT_PARAMS, type Message } from "./db";
import type { ChatChunk } from "../api/types";

const chunk = (content: string, extra: Partial<ChatChunk> = {}): ChatChunk => ({
  id: "c",
  model: "m",
  choices: [{ index: 0, delta: { content }, finish_reason: null }],
  ...extra,
});

describe("fold", () => {
  it("accumulates content and reasoning, and measures TTFT and tokens/s from the first token", () => {
    let d = emptyDraft(1000);
    d = fold(d, { type: "headers", headers: { model: "a", route: "auto:fast", cache: "miss", cacheSimilarity: null, escalations: 0, requestId: "r" } }, 1001);
    d = fold(d, { type: "chunk", chunk: chunk("") }, 1010); // the role chunk: no token yet
    d = fold(d, { type: "chunk", chunk: { id: "c", model: "m", choices: [{ index: 0, delta: { reasoning_content: "hmm" }, finish_reason: null }] } }, 1100);
    d = fold(d, { type: "chunk", chunk: chunk("Hi") }, 1200);
    d = fold(d, { type: "chunk", chunk: chunk(" there") }, 1300);
    d = fold(d, { type: "chunk", chunk: { ...chunk(""), groupqwen: { route: "auto:fast", model: "b", reason: "", confidence: null, escalations: 1, thinking: false } } }, 1300);
    d = fold(d, { type: "chunk", chunk: { id: "c", model: "m", choices: [], usage: { prompt_tokens: 3, completion_tokens: 3, total_tokens: 6 } } }, 1301);
    expect(d.content).toBe("Hi there");
    expect(d.reasoning).toBe("hmm");
    expect(d.meta.ttftMs).toBe(100);
    expect(d.meta.model).toBe("b"); // the final decision wins over the headers
    expect(d.meta.escalations).toBe(1);
    expect(d.meta.cache).toBe("miss");
    expect(d.meta.tokensPerSecond).toBeCloseTo(10); // 2 tokens after the first in 200 ms
    expect(d.meta.boxes).toBeUndefined();
  });

  it("keeps the boxes a vision model's answer points at", () => {
    const boxes = [{ label: "cat", x1: 10, y1: 20, x2: 110, y2: 220 }];
    const decision = { route: "auto:vision", model: "v", reason: "", confidence: null, escalations: 0, thinking: false, boxes };
    const d = fold(emptyDraft(0), { type: "chunk", chunk: { ...chunk("the cat"), groupqwen: decision } }, 5);
    expect(d.meta.boxes).toEqual(boxes);
  });
});

describe("lastImage", () => {
  it("is the last image of the last user message that has any", () => {
    expect(lastImage([])).toBeUndefined();
    expect(
      lastImage([
        { role: "user", images: ["a", "b"] },
        { role: "assistant" },
        { role: "user", images: [] },
        { role: "assistant", images: ["not a user's"] },
      ]),
    ).toBe("b");
  });
});

describe("chatBody", () => {
  const msg = (seq: number, role: Message["role"], content: string, extra: Partial<Message> = {}): Message => ({ id: String(seq), conversationId: "c", seq, role, content, ...extra });
  it("sends the system prompt, images as parts, skips failed answers, and only the parameters set", () => {
    const body = chatBody("auto", { ...DEFAULT_PARAMS, system: "Be brief", thinking: "off", maxTokens: 50 }, [
      msg(0, "user", "look", { images: ["data:image/png;base64,AA=="] }),
      msg(1, "assistant", "", { state: "error", error: "boom" }),
      msg(2, "user", "again"),
    ]);
    expect(body.messages).toEqual([
      { role: "system", content: "Be brief" },
      { role: "user", content: [{ type: "text", text: "look" }, { type: "image_url", image_url: { url: "data:image/png;base64,AA==" } }] },
      { role: "user", content: "again" },
    ]);
    expect(body.enable_thinking).toBe(false);
    expect(body.max_tokens).toBe(50);
    expect(body.temperature).toBe(0.5); // a new chat's: the hottest the cache reuses by default
    expect("temperature" in chatBody("auto", { ...DEFAULT_PARAMS, temperature: null }, [])).toBe(false);
  });
});

describe("titleOf", () => {
  it("takes the first line, shortened", () => {
    expect(titleOf("  What is X?\nmore")).toBe("What is X?");
    expect(titleOf("a".repeat(60))).toHaveLength(48);
    expect(titleOf("   ")).toBe("New chat");
  });
});
