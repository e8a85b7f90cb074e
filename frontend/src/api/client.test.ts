import { describe, expect, it } from "vitest";
import { forThePage } from "./client";

describe("forThePage", () => {
  it("says where the page's key goes after a refused key, and leaves other errors as the server said", () => {
    const missing = "You didn't provide an API key.";
    expect(forThePage(missing, 401, false)).toBe(`${missing} Enter an API key in Settings.`);
    expect(forThePage("Incorrect API key provided: gq-0123.****.", 401, true)).toBe(
      "Incorrect API key provided: gq-0123.****. Check the API key in Settings.",
    );
    expect(forThePage("Missing scope: admin (this key has: chat).", 403, true)).toBe("Missing scope: admin (this key has: chat).");
  });
});
