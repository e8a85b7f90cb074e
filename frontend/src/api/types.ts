/** Wire types of the routes whose bodies the gateway parses by hand (so its OpenAPI schema leaves them
 * open): docs/api.md, docs/telemetry.md, docs/finetune.md. */

export type ContentPart =
  | { type: "text"; text: string }
  | { type: "image_url"; image_url: { url: string } };

export interface ChatMessage {
  role: "system" | "user" | "assistant";
  content: string | ContentPart[];
}

export interface ChatBody {
  model: string;
  messages: ChatMessage[];
  stream: true;
  stream_options: { include_usage: true };
  temperature?: number;
  max_tokens?: number;
  enable_thinking?: boolean;
}

/** What a vision model's answer points at, in pixels of the image sent (`groupqwen.boxes`). */
export interface Box {
  label: string;
  x1: number;
  y1: number;
  x2: number;
  y2: number;
}

export interface Decision {
  route: string;
  model: string;
  reason: string;
  confidence: number | null;
  escalations: number;
  thinking: boolean;
  boxes?: Box[];
}

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

export interface ChatChunk {
  id: string;
  model: string;
  choices: { index: number; delta: { content?: string; reasoning_content?: string }; finish_reason: string | null }[];
  usage?: Usage;
  groupqwen?: Decision;
  error?: { message: string; code?: string };
}

export interface ModelInfo {
  id: string;
  object: "model";
  groupqwen: {
    status: "unloaded" | "loading" | "loaded" | "failed" | "alias";
    error?: string | null;
    resolves_to?: string;
    models?: string[]; // a route's: the models that may answer it
    backend?: string;
    context_length?: number;
    capabilities?: { thinking: boolean; vision: boolean; tools: boolean };
    memory?: { estimated_bytes: number; measured_bytes: number };
    active_requests?: number;
  };
}

export interface ModelList {
  object: "list";
  data: ModelInfo[];
  groupqwen?: { memory: { budget_bytes: number; used_bytes: number } };
}

export interface Percentiles {
  p50: number | null;
  p95: number | null;
  p99: number | null;
}

export interface Breakdown {
  requests: number;
  share: number;
  errors: number;
}

export interface MetricsSummary {
  window_seconds: number;
  requests: number;
  errors: number;
  error_rate: number | null;
  status: Record<string, number>;
  cache: { hit: number; miss: number; bypass: number; hit_rate: number | null };
  escalations: number;
  escalation_rate: number | null;
  tokens: { prompt: number; completion: number; total: number };
  latency_seconds: Percentiles;
  ttft_seconds: Percentiles;
  tokens_per_second_mean: number | null;
  by_model: Record<string, Breakdown>;
  by_route: Record<string, Breakdown>;
  missed?: number;
}

export interface RequestRecord {
  request_id: string;
  model: string;
  route: string;
  status: number;
  finished_at: number;
  latency_s: number;
  ttft_s: number | null;
  completion_tokens: number | null;
  cache: string;
}

export interface HealthCheck {
  status: "ok" | "degraded" | "down";
  critical?: boolean;
  reason?: string | null;
}

export interface HealthReport {
  status: "ok" | "degraded" | "down";
  checks: Record<string, HealthCheck>;
}

export interface Turn {
  role: "system" | "user" | "assistant";
  content: string;
  reasoning?: string | null;
}

export interface ReviewConversation {
  id: string;
  title?: string | null;
  branch: number;
  turns: Turn[];
}

export type ReviewStatus = "pending" | "accepted" | "rejected" | "edited";

export interface ReviewItem {
  key: string;
  status: ReviewStatus;
  conversation: ReviewConversation;
  edited: ReviewConversation | null;
}

export interface ReviewPage {
  counts: Record<ReviewStatus | "total", number>;
  total: number;
  data: ReviewItem[];
}

export interface ImportReport {
  name: string;
  bytes: number;
  formats: string[];
  imported: number;
  conversations: number;
  rejected: Record<string, number>;
  warnings: string[];
}

/** Fine-tuning (docs/finetune.md, "Jobs API"): OpenAI's shapes. */
export interface FileObject {
  id: string;
  object: "file";
  bytes: number;
  filename: string;
  purpose: string;
}

export interface ReviewFiles {
  object: "review.files";
  name: string;
  training_file: FileObject;
  validation_file: FileObject | null;
}

export type JobStatus = "validating_files" | "queued" | "running" | "succeeded" | "failed" | "cancelled";

export interface FineTuningJob {
  id: string;
  object: "fine_tuning.job";
  created_at: number;
  finished_at: number | null;
  model: string;
  fine_tuned_model: string | null;
  status: JobStatus;
  training_file: string;
  validation_file: string | null;
  suffix: string;
  trained_tokens: number | null;
  hyperparameters: Record<string, unknown>;
  error: { code: string; message: string; param: string | null } | null;
}

export interface JobList {
  object: "list";
  data: FineTuningJob[];
  has_more: boolean;
}

export interface JobEvent {
  id: string;
  created_at: number;
  level: string;
  message: string;
  type: "message" | "metrics";
  data: { step?: number; total_steps?: number; train_loss?: number; val_loss?: number; tokens_per_s?: number; eta_s?: number };
}

export interface JobCheckpoint {
  id: string;
  step_number: number;
  created_at: number;
  metrics: { step: number; train_loss: number | null; valid_loss: number | null };
}

export interface Page<T> {
  object: "list";
  data: T[];
  has_more: boolean;
}
