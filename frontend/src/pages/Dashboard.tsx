import { useQuery } from "@tanstack/react-query";
import { useEffect, useState } from "react";
import { apiUrl, authHeaders, errorOf, errorOfBody, getJson, route } from "../api/client";
import { sseEvents } from "../api/sse";
import type { HealthReport, MetricsSummary } from "../api/types";
import { mib, useModels } from "../components/ModelPicker";
import { Chart, type Series } from "../components/Chart";

const WINDOWS = { "5m": "5 min", "1h": "1 hour", "24h": "24 hours" } as const;
type Window = keyof typeof WINDOWS;
const KEEP = 300; // points on the charts

function pct(value: number | null | undefined): string {
  return value === null || value === undefined ? "—" : `${(value * 100).toFixed(1)}%`;
}
function ms(seconds: number | null | undefined): string {
  return seconds === null || seconds === undefined ? "—" : `${Math.round(seconds * 1000)} ms`;
}

/** Live summaries from /v1/metrics/stream (5 m and 1 h: the gateway's memory). */
function useLive(window: Window, enabled: boolean) {
  const [points, setPoints] = useState<{ at: number; summary: MetricsSummary }[]>([]);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    if (!enabled) return;
    const abort = new AbortController();
    setPoints([]);
    setError(null);
    void (async () => {
      try {
        const response = await fetch(apiUrl(`${route("/v1/metrics/stream")}?window=${window}&interval=2`), { headers: authHeaders(), signal: abort.signal });
        if (!response.ok || !response.body) throw await errorOf(response);
        for await (const event of sseEvents(response.body)) {
          if (event.event === "error") {
            // the key was revoked (or expired) since the stream began: the gateway ended it
            const body = JSON.parse(event.data) as { status: number; error?: { message?: string; code?: string } };
            throw errorOfBody(body, body.status, "");
          }
          if (event.event !== "summary") continue;
          const summary = JSON.parse(event.data) as MetricsSummary;
          setPoints((old) => [...old.slice(-(KEEP - 1)), { at: Date.now() / 1000, summary }]);
        }
      } catch (exc) {
        if (!abort.signal.aborted) setError(exc instanceof Error ? exc.message : String(exc));
      }
    })();
    return () => abort.abort();
  }, [window, enabled]);
  return { points, error };
}

function Stat({ label, value, testid }: { label: string; value: string; testid: string }) {
  return (
    <div className="rounded-lg border border-zinc-200 p-3 dark:border-zinc-800">
      <div className="text-xs text-zinc-600 dark:text-zinc-400">{label}</div>
      <div className="text-lg font-semibold tabular-nums" data-testid={testid}>{value}</div>
    </div>
  );
}

/** Telemetry's model and route of a request that failed before one was decided (docs/telemetry.md): an
 * unknown model, a bad body. Shown as errors, not as a model or route of that name. */
const NO_MODEL = "none";

function Shares({ title, rows }: { title: string; rows: Record<string, { requests: number; share: number }> }) {
  const entries = Object.entries(rows).filter(([name]) => name !== NO_MODEL);
  const failed = rows[NO_MODEL];
  return (
    <div className="rounded-lg border border-zinc-200 p-3 dark:border-zinc-800">
      <h2 className="mb-1 text-sm font-semibold">{title}</h2>
      {entries.length === 0 && !failed ? <p className="text-sm text-zinc-600 dark:text-zinc-400">No requests yet</p> : null}
      <ul className="space-y-1 text-sm">
        {entries.map(([name, row]) => (
          <li key={name}>
            <div className="flex justify-between gap-2"><span className="truncate">{name}</span><span className="tabular-nums">{row.requests} · {pct(row.share)}</span></div>
            <div className="h-1.5 rounded bg-zinc-200 dark:bg-zinc-800"><div className="h-1.5 rounded bg-indigo-600" style={{ width: `${row.share * 100}%` }} /></div>
          </li>
        ))}
      </ul>
      {failed ? (
        <p className="mt-2 text-sm text-red-800 dark:text-red-300" data-testid="failed-before-routing">
          {failed.requests} failed before a model was chosen (unknown model, bad request) · {pct(failed.share)}
        </p>
      ) : null}
    </div>
  );
}

export default function DashboardPage() {
  const [window, setWindow] = useState<Window>("5m");
  const stored = window === "24h";
  const live = useLive(window, !stored);
  const store = useQuery({
    queryKey: ["metrics", "store", window],
    queryFn: () => getJson<MetricsSummary>(`${route("/v1/metrics")}?window=24h&source=store`),
    enabled: stored,
    refetchInterval: 30_000,
  });
  const health = useQuery({ queryKey: ["health"], queryFn: () => getJson<HealthReport>(route("/v1/health")), refetchInterval: 10_000 });
  const { data: models } = useModels();
  const summary = stored ? store.data : live.points.at(-1)?.summary;
  const error = stored ? store.error?.message : live.error;
  const series: Series[] = [
    { label: "requests/s", values: live.points.map((p) => p.summary.requests / p.summary.window_seconds) },
    { label: "p50 latency (s)", values: live.points.map((p) => p.summary.latency_seconds.p50) },
    { label: "p95 TTFT (s)", values: live.points.map((p) => p.summary.ttft_seconds.p95) },
  ];
  const memory = models?.groupqwen?.memory;
  return (
    <div className="space-y-4 overflow-y-auto p-4" style={{ maxHeight: "100%" }}>
      <div className="flex flex-wrap items-center gap-3">
        <h1 className="text-xl font-semibold">Dashboard</h1>
        <div role="group" aria-label="Time window" className="flex gap-1">
          {(Object.keys(WINDOWS) as Window[]).map((w) => (
            <button key={w} type="button" aria-pressed={w === window} onClick={() => setWindow(w)} className={`rounded border px-2 py-1 text-sm ${w === window ? "border-indigo-600 bg-indigo-600 text-white" : "border-zinc-300 dark:border-zinc-600"}`}>
              {WINDOWS[w]}
            </button>
          ))}
        </div>
        <span className="text-xs text-zinc-600 dark:text-zinc-400">{stored ? "from the database" : "live"}</span>
      </div>
      {error ? <p role="alert" className="rounded bg-red-50 p-2 text-sm text-red-800 dark:bg-red-950 dark:text-red-200">{error}</p> : null}
      <div className="grid grid-cols-2 gap-2 md:grid-cols-4">
        <Stat label="Requests" value={summary ? String(summary.requests) : "—"} testid="stat-requests" />
        <Stat label="Requests/s" value={summary ? (summary.requests / summary.window_seconds).toFixed(3) : "—"} testid="stat-rps" />
        <Stat label="Error rate" value={pct(summary?.error_rate)} testid="stat-errors" />
        <Stat label="Cache hit rate" value={pct(summary?.cache.hit_rate)} testid="stat-hit-rate" />
        <Stat label="Latency p50 / p95" value={`${ms(summary?.latency_seconds.p50)} / ${ms(summary?.latency_seconds.p95)}`} testid="stat-latency" />
        <Stat label="TTFT p50 / p95" value={`${ms(summary?.ttft_seconds.p50)} / ${ms(summary?.ttft_seconds.p95)}`} testid="stat-ttft" />
        <Stat label="Tokens/s (mean)" value={summary?.tokens_per_second_mean?.toFixed(1) ?? "—"} testid="stat-tps" />
        <Stat label="Escalation rate" value={pct(summary?.escalation_rate)} testid="stat-escalations" />
      </div>
      {!stored ? <Chart series={series} /> : null}
      <div className="grid gap-2 md:grid-cols-2">
        <Shares title="Share per model" rows={summary?.by_model ?? {}} />
        <Shares title="Share per route" rows={summary?.by_route ?? {}} />
      </div>
      <div className="grid gap-2 md:grid-cols-2">
        <div className="rounded-lg border border-zinc-200 p-3 dark:border-zinc-800">
          <h2 className="mb-1 text-sm font-semibold">Memory</h2>
          <p className="text-sm">{memory ? `${mib(memory.used_bytes)} used of ${mib(memory.budget_bytes)}` : "—"}</p>
          <ul className="text-sm">
            {(models?.data ?? []).filter((m) => m.groupqwen.status !== "alias").map((m) => (
              <li key={m.id} className="flex justify-between gap-2"><span className="truncate">{m.id} ({m.groupqwen.status})</span><span className="tabular-nums">{mib(m.groupqwen.memory?.measured_bytes || m.groupqwen.memory?.estimated_bytes)}</span></li>
            ))}
          </ul>
        </div>
        <div className="rounded-lg border border-zinc-200 p-3 dark:border-zinc-800">
          <h2 className="mb-1 text-sm font-semibold">Health: <span data-testid="health-status">{health.data?.status ?? health.error?.message ?? "…"}</span></h2>
          <ul className="text-sm">
            {Object.entries(health.data?.checks ?? {}).map(([name, check]) => (
              <li key={name} className="flex justify-between gap-2">
                <span>{name}</span>
                <span className={check.status === "ok" ? "text-green-800 dark:text-green-300" : "text-red-800 dark:text-red-300"}>{check.status}{check.reason ? `: ${check.reason}` : ""}</span>
              </li>
            ))}
          </ul>
        </div>
      </div>
    </div>
  );
}
