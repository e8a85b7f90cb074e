import { keepPreviousData, useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useState, type FormEvent } from "react";
import { useNavigate, useParams } from "react-router";
import { getJson, postJson, request, route } from "../api/client";
import type { FileObject, FineTuningJob, JobCheckpoint, JobEvent, JobList, JobStatus, Page, ReviewFiles } from "../api/types";
import { db, DEFAULT_PARAMS } from "../chat/db";
import { Chart } from "../components/Chart";
import { useModels } from "../components/ModelPicker";

const ACTIVE: JobStatus[] = ["validating_files", "queued", "running"];
const field = "mt-1 block w-full rounded border border-zinc-300 bg-white px-2 py-1 dark:border-zinc-600 dark:bg-zinc-900";

function message(exc: unknown): string {
  return exc instanceof Error ? exc.message : String(exc);
}

/** The training file (and validation file) a job starts from: a reviewed dataset built on the gateway, or
 * a JSONL file uploaded as it is. */
async function trainingFiles(source: "dataset" | "file", name: string, file: File | null): Promise<[string, string | null]> {
  if (source === "dataset") {
    const built = await postJson<ReviewFiles>(route("/v1/review/{name}/files", { name }));
    return [built.training_file.id, built.validation_file?.id ?? null];
  }
  if (!file) throw new Error("Choose a JSONL file to train on");
  const form = new FormData();
  form.append("purpose", "fine-tune");
  form.append("file", file);
  const stored = (await (await request(route("/v1/files"), { method: "POST", body: form })).json()) as FileObject;
  return [stored.id, null];
}

function StartForm({ onStarted }: { onStarted: (job: FineTuningJob) => void }) {
  const { data: models } = useModels();
  const bases = (models?.data ?? []).filter((m) => m.groupqwen.status !== "alias" && m.groupqwen.backend === "llamacpp" && !m.id.startsWith("ft:"));
  const [base, setBase] = useState("");
  const [source, setSource] = useState<"dataset" | "file">("dataset");
  const [name, setName] = useState("");
  const [file, setFile] = useState<File | null>(null);
  const [suffix, setSuffix] = useState("custom");
  const [epochs, setEpochs] = useState(3);
  const start = useMutation({
    mutationFn: async () => {
      const [training, validation] = await trainingFiles(source, name.trim(), file);
      return postJson<FineTuningJob>(route("/v1/fine_tuning/jobs"), {
        model: base || bases[0]?.id,
        training_file: training,
        validation_file: validation,
        suffix,
        hyperparameters: { n_epochs: epochs },
      });
    },
    onSuccess: onStarted,
  });
  const submit = (e: FormEvent) => {
    e.preventDefault();
    start.mutate();
  };
  return (
    <form onSubmit={submit} className="grid gap-2 rounded-lg border border-zinc-200 p-3 text-sm sm:grid-cols-2 dark:border-zinc-800" aria-label="Start a fine-tuning job">
      <h2 className="font-semibold sm:col-span-2">Start a fine-tuning job</h2>
      <label>Base model
        <select value={base || bases[0]?.id || ""} onChange={(e) => setBase(e.target.value)} className={field}>
          {bases.map((m) => <option key={m.id} value={m.id}>{m.id}</option>)}
        </select>
      </label>
      <fieldset className="flex flex-wrap items-end gap-3">
        <legend>Training data</legend>
        <label className="flex items-center gap-1"><input type="radio" name="source" checked={source === "dataset"} onChange={() => setSource("dataset")} /> Reviewed dataset</label>
        <label className="flex items-center gap-1"><input type="radio" name="source" checked={source === "file"} onChange={() => setSource("file")} /> JSONL file</label>
      </fieldset>
      {source === "dataset" ? (
        <label>Dataset name (the Data page's)
          <input value={name} onChange={(e) => setName(e.target.value)} required className={field} placeholder="my-chats" />
        </label>
      ) : (
        <label>Training file (OpenAI messages, one per line)
          <input type="file" accept=".jsonl,.json" onChange={(e) => setFile(e.target.files?.[0] ?? null)} className="mt-1 block w-full" />
        </label>
      )}
      <label>Suffix (in the model's name)
        <input value={suffix} onChange={(e) => setSuffix(e.target.value)} className={field} />
      </label>
      <label>Epochs
        <input type="number" min={1} max={100} value={epochs} onChange={(e) => setEpochs(Number(e.target.value))} className={field} />
      </label>
      <div className="flex items-end">
        <button type="submit" disabled={start.isPending || bases.length === 0} className="rounded bg-indigo-700 px-3 py-1 text-white disabled:opacity-60">
          {start.isPending ? "Starting…" : "Start training"}
        </button>
      </div>
      {models && bases.length === 0 ? <p className="sm:col-span-2">No model here can be fine-tuned: a base model is a GGUF served by llama.cpp on this machine.</p> : null}
      {start.error ? <p role="alert" className="text-red-800 sm:col-span-2 dark:text-red-300">{message(start.error)}</p> : null}
    </form>
  );
}

function JobDetail({ id }: { id: string }) {
  const client = useQueryClient();
  const navigate = useNavigate();
  const live = (status: JobStatus | undefined) => (status && ACTIVE.includes(status) ? 2000 : false);
  const job = useQuery({
    queryKey: ["job", id],
    queryFn: () => getJson<FineTuningJob>(route("/v1/fine_tuning/jobs/{job_id}", { job_id: id })),
    refetchInterval: (q) => live(q.state.data?.status),
  });
  const status = job.data?.status;
  // read again when the status changes: what the job wrote last comes before its final status
  const events = useQuery({
    queryKey: ["job-events", id, status],
    placeholderData: keepPreviousData,
    queryFn: () => getJson<Page<JobEvent>>(`${route("/v1/fine_tuning/jobs/{job_id}/events", { job_id: id })}?limit=1000`),
    refetchInterval: live(status),
  });
  const checkpoints = useQuery({
    queryKey: ["job-checkpoints", id, status],
    placeholderData: keepPreviousData,
    queryFn: () => getJson<Page<JobCheckpoint>>(route("/v1/fine_tuning/jobs/{job_id}/checkpoints", { job_id: id })),
    refetchInterval: live(status),
  });
  const cancel = useMutation({
    mutationFn: () => postJson<FineTuningJob>(route("/v1/fine_tuning/jobs/{job_id}/cancel", { job_id: id })),
    onSettled: () => client.invalidateQueries({ queryKey: ["job", id] }),
  });
  const chat = async (model: string) => {
    const made = await db.create(model, DEFAULT_PARAMS);
    void navigate(`/chat/${made.id}`);
  };
  if (job.error) return <p role="alert" className="text-sm text-red-800 dark:text-red-300">{message(job.error)}</p>;
  if (!job.data) return <p className="text-sm">Loading…</p>;
  const j = job.data;
  const all = [...(events.data?.data ?? [])].reverse(); // oldest first
  const metrics = all.filter((e) => e.type === "metrics");
  const train = metrics.filter((e) => e.data.train_loss !== undefined);
  const last = train.at(-1)?.data;
  const series = [
    { label: "train loss by step", values: train.map((e) => e.data.train_loss ?? null) },
    { label: "validation loss by evaluation", values: metrics.filter((e) => e.data.val_loss !== undefined).map((e) => e.data.val_loss ?? null) },
  ].filter((s) => s.values.length > 0); // no validation set: no validation chart
  return (
    <section className="space-y-3" aria-label={`Job ${j.id}`}>
      <div className="flex flex-wrap items-center gap-2 text-sm">
        <h2 className="font-semibold break-all">{j.id}</h2>
        <span className="rounded bg-zinc-100 px-1.5 dark:bg-zinc-800" data-testid="job-status">{j.status}</span>
        <span>{j.model} → {j.fine_tuned_model ?? `ft:${j.model}:${j.suffix}:…`}</span>
        {last ? <span className="tabular-nums" data-testid="job-progress">step {last.step}/{last.total_steps} · loss {last.train_loss?.toFixed(4)}</span> : null}
        <span className="ml-auto flex gap-2">
          {ACTIVE.includes(j.status) ? (
            <button type="button" onClick={() => cancel.mutate()} disabled={cancel.isPending} className="rounded bg-red-700 px-2 py-1 text-white">Cancel</button>
          ) : null}
          {j.fine_tuned_model ? (
            <button type="button" onClick={() => void chat(j.fine_tuned_model as string)} className="rounded bg-indigo-700 px-2 py-1 text-white">Chat with this model</button>
          ) : null}
        </span>
      </div>
      {j.error ? <p role="alert" className="text-sm text-red-800 dark:text-red-300">{j.error.code}: {j.error.message}</p> : null}
      {cancel.error ? <p role="alert" className="text-sm text-red-800 dark:text-red-300">{message(cancel.error)}</p> : null}
      <Chart series={series} />
      <div className="grid gap-3 md:grid-cols-2">
        <div className="rounded-lg border border-zinc-200 p-2 text-sm dark:border-zinc-800">
          <h3 className="mb-1 font-semibold">Checkpoints</h3>
          <ul data-testid="checkpoints">
            {(checkpoints.data?.data ?? []).map((c) => (
              <li key={c.id} className="tabular-nums">step {c.step_number} · train {c.metrics.train_loss?.toFixed(4) ?? "—"} · validation {c.metrics.valid_loss?.toFixed(4) ?? "—"}</li>
            ))}
          </ul>
        </div>
        <div className="rounded-lg border border-zinc-200 p-2 text-sm dark:border-zinc-800">
          <h3 className="mb-1 font-semibold">Events</h3>
          <ol className="max-h-64 overflow-y-auto break-words" data-testid="events" tabIndex={0} aria-label="Events, oldest first">
            {all.filter((e) => e.type === "message").slice(-100).map((e) => (
              <li key={e.id} className={e.level === "error" ? "text-red-800 dark:text-red-300" : ""}>{e.message}</li>
            ))}
          </ol>
        </div>
      </div>
    </section>
  );
}

export default function JobsPage() {
  const { id } = useParams();
  const navigate = useNavigate();
  const client = useQueryClient();
  const jobs = useQuery({
    queryKey: ["jobs"],
    queryFn: () => getJson<JobList>(`${route("/v1/fine_tuning/jobs")}?limit=100`),
    refetchInterval: 3000,
  });
  const started = (job: FineTuningJob) => {
    void client.invalidateQueries({ queryKey: ["jobs"] });
    void navigate(`/jobs/${job.id}`);
  };
  return (
    <div className="mx-auto h-full max-w-5xl space-y-3 overflow-y-auto p-3">
      <h1 className="text-lg font-semibold">Fine-tuning</h1>
      <StartForm onStarted={started} />
      {jobs.error ? <p role="alert" className="text-sm text-red-800 dark:text-red-300">{message(jobs.error)}</p> : null}
      <nav aria-label="Jobs">
        <ul className="divide-y divide-zinc-200 rounded-lg border border-zinc-200 text-sm dark:divide-zinc-800 dark:border-zinc-800">
          {(jobs.data?.data ?? []).map((j) => (
            <li key={j.id}>
              <button type="button" onClick={() => void navigate(`/jobs/${j.id}`)} aria-current={j.id === id} className={`flex w-full flex-wrap gap-2 px-2 py-1 text-left ${j.id === id ? "bg-zinc-100 dark:bg-zinc-800" : ""}`}>
                <span className="break-all">{j.fine_tuned_model ?? j.id}</span>
                <span className="ml-auto">{j.status}</span>
              </button>
            </li>
          ))}
          {jobs.data?.data.length === 0 ? <li className="px-2 py-1">No jobs yet.</li> : null}
        </ul>
      </nav>
      {id ? <JobDetail id={id} /> : null}
    </div>
  );
}
