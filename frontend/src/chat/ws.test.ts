import { describe, expect, it } from "vitest";
import { order } from "./ws";

describe("order", () => {
  it("takes the next frame, skips what a resume sends again, and calls a hole a gap", () => {
    expect(order(0, 1)).toBe("take");
    expect(order(3, 4)).toBe("take");
    expect(order(3, 3)).toBe("again");
    expect(order(3, 1)).toBe("again");
    expect(order(3, 5)).toBe("gap");
  });
});
