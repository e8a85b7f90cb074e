import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useState } from "react";
import { getJson, postJson, route } from "../api/client";
import type { ModelInfo, ModelList } from "../api/types";
import { useSettings } from "../settings";

export function useModels() {
  const poll = useSettings((s) => s.modelsPollS);
  return useQuery({ queryKey: ["models"], queryFn: () => getJson<ModelList>(route("/v1/models")), refetchInterval: poll > 0 ? poll * 1000 : false });
}

export function mib(bytes: number | undefined): string {
  return bytes ? `${Math.round(bytes / 2 ** 20)} MiB` : "—";
}

/** Whether `model` (an id or an `auto` route) can take images, per /v1/models. */
export function takesImages(models: ModelInfo[], model: string): boolean {
  const entry = models.find((m) => m.id === model);
  if (!entry) return false;
  if (entry.groupqwen.status === "alias") {
    const vision = (id: string) => models.some((m) => m.id === id && m.groupqwen.capabilities?.vision === true);
    if (model === "auto") return models.some((m) => vision(m.id)); // auto sends images to auto:vision
    return (entry.groupqwen.models ?? []).some(vision); // another route: to its models that take images
  }
  return entry.groupqwen.capabilities?.vision === true;
}

export function ModelPicker({ value, onChange }: { value: string; onChange: (model: string) => void }) {
  const { data, error } = useModels();
  const [open, setOpen] = useState(false);
  const client = useQueryClient();
  const action = useMutation({
    mutationFn: ({ id, verb }: { id: string; verb: "load" | "unload" }) =>
      postJson<ModelInfo>(verb === "load" ? route("/v1/models/{model_id}/load", { model_id: id }) : route("/v1/models/{model_id}/unload", { model_id: id })),
    onSettled: () => client.invalidateQueries({ queryKey: ["models"] }),
  });
  const models = data?.data ?? [];
  const routes = models.filter((m) => m.groupqwen.status === "alias");
  const real = models.filter((m) => m.groupqwen.status !== "alias");
  return (
    <div className="relative flex min-w-0 items-center gap-2">
      <label htmlFor="model" className="sr-only">Model</label>
      <select id="model" value={value} onChange={(e) => onChange(e.target.value)} className="min-w-0 max-w-[60vw] rounded border border-zinc-300 bg-white px-2 py-1 text-sm dark:border-zinc-600 dark:bg-zinc-900">
        {models.some((m) => m.id === value) ? null : <option value={value}>{value}</option>}
        <optgroup label="Routes">
          {routes.map((m) => (
            <option key={m.id} value={m.id}>{m.id}{m.groupqwen.resolves_to ? ` → ${m.groupqwen.resolves_to}` : ""}</option>
          ))}
        </optgroup>
        <optgroup label="Models">
          {real.map((m) => (
            <option key={m.id} value={m.id}>{m.id} ({m.groupqwen.status})</option>
          ))}
        </optgroup>
      </select>
      <button type="button" onClick={() => setOpen(!open)} aria-expanded={open} className="rounded border border-zinc-300 px-2 py-1 text-sm dark:border-zinc-600">
        Models
      </button>
      {error ? <span role="alert" className="text-sm text-red-700 dark:text-red-300">{error.message}</span> : null}
      {open ? (
        <div className="absolute top-full left-0 z-20 mt-1 w-[min(36rem,calc(100vw-2rem))] rounded-lg border border-zinc-200 bg-white p-3 shadow-lg dark:border-zinc-700 dark:bg-zinc-900" data-testid="models-panel">
          {data?.groupqwen ? (
            <p className="mb-2 text-xs text-zinc-600 dark:text-zinc-400">Memory {mib(data.groupqwen.memory.used_bytes)} of {mib(data.groupqwen.memory.budget_bytes)}</p>
          ) : null}
          {action.error ? <p role="alert" className="mb-2 text-sm text-red-700 dark:text-red-300">{action.error.message}</p> : null}
          <ul className="divide-y divide-zinc-200 dark:divide-zinc-700">
            {real.map((m) => {
              const g = m.groupqwen;
              const loaded = g.status === "loaded" || g.status === "loading";
              return (
                <li key={m.id} className="flex flex-wrap items-center gap-2 py-2 text-sm" data-testid={`model-${m.id}`}>
                  <span className="font-medium">{m.id}</span>
                  <span className="rounded bg-zinc-100 px-1.5 text-xs dark:bg-zinc-800" data-testid="model-status">{g.status}</span>
                  <span className="text-xs text-zinc-600 dark:text-zinc-400">
                    {g.backend} · {mib(g.memory?.measured_bytes || g.memory?.estimated_bytes)} · ctx {g.context_length ?? "—"}
                    {g.capabilities?.vision ? " · vision" : ""}{g.capabilities?.thinking ? " · thinking" : ""}
                  </span>
                  <button
                    type="button"
                    disabled={action.isPending}
                    onClick={() => action.mutate({ id: m.id, verb: loaded ? "unload" : "load" })}
                    className="ml-auto rounded border border-zinc-300 px-2 py-0.5 text-xs dark:border-zinc-600"
                    aria-label={`${loaded ? "Unload" : "Load"} ${m.id}`}
                  >
                    {loaded ? "Unload" : "Load"}
                  </button>
                </li>
              );
            })}
          </ul>
        </div>
      ) : null}
    </div>
  );
}
