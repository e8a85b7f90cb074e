import { describe, expect, it } from "vitest";
import type { ModelInfo } from "../api/types";
import { takesImages } from "./ModelPicker";

function model(id: string, vision: boolean): ModelInfo {
  return { id, object: "model", groupqwen: { status: "unloaded", capabilities: { thinking: false, vision, tools: false } } };
}

function route(id: string, models: string[]): ModelInfo {
  return { id, object: "model", groupqwen: { status: "alias", models } };
}

describe("takesImages", () => {
  const models = [model("small", false), model("seeing", true), route("auto", ["small"]), route("auto:fast", ["small"]), route("auto:vision", ["seeing"])];

  it("says a model takes images by its capabilities", () => {
    expect(takesImages(models, "seeing")).toBe(true);
    expect(takesImages(models, "small")).toBe(false);
    expect(takesImages(models, "unknown")).toBe(false);
  });

  it("lets auto take images where any model sees (the gateway sends them to auto:vision), another route where one of its models does", () => {
    expect(takesImages(models, "auto")).toBe(true);
    expect(takesImages(models, "auto:vision")).toBe(true);
    expect(takesImages(models, "auto:fast")).toBe(false);
    expect(takesImages([model("small", false), route("auto", ["small"])], "auto")).toBe(false);
  });
});
