import { describe, expect, it } from "vitest";
import { blocks } from "./blocks";

describe("blocks", () => {
  it("splits at blank lines", () => {
    expect(blocks("# Title\n\nOne\ntwo\n\n\n- a\n- b\n")).toEqual(["# Title", "One\ntwo", "- a\n- b"]);
  });
  it("keeps blank lines inside fenced code, whatever the fence", () => {
    const text = "Before\n\n```python\nx = 1\n\ny = 2\n```\n\n~~~~\n```\n\nstill code\n~~~~\nAfter";
    expect(blocks(text)).toEqual(["Before", "```python\nx = 1\n\ny = 2\n```", "~~~~\n```\n\nstill code\n~~~~\nAfter"]);
  });
  it("keeps an unclosed fence (a streaming answer) in one block", () => {
    expect(blocks("Text\n\n```js\nlet a;\n\nlet b;")).toEqual(["Text", "```js\nlet a;\n\nlet b;"]);
  });
  it("has no blocks for empty text", () => {
    expect(blocks("")).toEqual([]);
    expect(blocks("\n\n")).toEqual([]);
  });
});
