/**
 * Runtime shapes of every message the client can receive, checked with zod/mini (small in the bundle).
 *
 * Three protocols: the studio server's typed stream (`/ws/events`, every event with an `offset`), the brief's
 * messages (`/ws/{job_id}`: `progress`; `/ws/monitor`: `system_status`), and ComfyUI's own `/ws?clientId=`
 * events (`{type, data}` text frames and binary preview frames). Objects are loose: a server that adds a field
 * must not break the page; a missing or mistyped field we rely on makes the message malformed (counted, skipped).
 */
import * as z from "zod/mini";

const str = z.string();
const num = z.number();
const optStr = z.optional(z.nullable(z.string()));
const optNum = z.optional(z.nullable(z.number()));

// ---- the studio server's typed stream (/ws/events) ----------------------------------------------------------

export const OutputFileSchema = z.looseObject({
  node_id: z.optional(str),
  kind: z.optional(str),
  path: str,
  filename: z.optional(str),
  size: z.optional(num),
});
export type OutputFile = z.infer<typeof OutputFileSchema>;

export const JobErrorSchema = z.looseObject({
  code: str,
  message: str,
  node_id: optStr,
  node_type: optStr,
  exception_type: optStr,
  traceback: z.optional(z.array(str)),
});
export type JobError = z.infer<typeof JobErrorSchema>;

/** A job as the studio server keeps it (the `snapshot` of a `subscribed` message, `GET /api/jobs`). */
export const JobViewSchema = z.looseObject({
  job_id: str,
  service: str,
  tag: optStr,
  state: str,
  progress: num,
  node_progress: z.optional(num),
  current_node: optStr,
  current_node_type: optStr,
  queue_position: optNum,
  eta_seconds: optNum,
  message: z.optional(str),
  outputs: z.optional(z.array(OutputFileSchema)),
  output_path: optStr,
  error: z.optional(z.nullable(JobErrorSchema)),
  created_at: num,
  started_at: optNum,
  finished_at: optNum,
  updated_at: num,
  offset: z.optional(num),
  preview_offset: optNum,
  /** `GET /api/jobs` adds the file links and the preview link. */
  files: z.optional(z.array(z.looseObject({ name: str, url: str }))),
  preview_url: optStr,
  /** For a job of a pool: the URL of the server that has it (null: waiting for a server, or not a pool's). */
  server: optStr,
});
export type JobView = z.infer<typeof JobViewSchema>;

const at = { offset: num, time: num };

export const StreamEventSchema = z.discriminatedUnion("type", [
  z.looseObject({
    type: z.literal("job_queued"),
    ...at,
    job_id: str,
    service: str,
    position: optNum,
    pending_connection: z.optional(z.boolean()),
  }),
  z.looseObject({ type: z.literal("job_started"), ...at, job_id: str, service: str }),
  /** A pool job was handed to one of the pool's servers (`server`, its URL), or went back to waiting (null). */
  z.looseObject({
    type: z.literal("job_assigned"),
    ...at,
    job_id: str,
    service: str,
    server: z.nullable(str),
    attempt: z.optional(num),
  }),
  z.looseObject({ type: z.literal("node_started"), ...at, job_id: str, node_id: str, node_type: optStr }),
  z.looseObject({
    type: z.literal("progress"),
    ...at,
    job_id: str,
    node_id: optStr,
    value: num,
    max: num,
    percentage: num,
    eta_seconds: optNum,
    text: optStr,
  }),
  z.looseObject({ type: z.literal("preview"), ...at, job_id: str, node_id: optStr, mime: str, url: optStr }),
  z.looseObject({ type: z.literal("node_text"), ...at, job_id: optStr, node_id: str, text: str }),
  z.looseObject({ type: z.literal("node_output"), ...at, job_id: str, node_id: str, output: z.unknown() }),
  z.looseObject({ type: z.literal("text_delta"), ...at, job_id: str, text: str, index: num }),
  z.looseObject({
    type: z.literal("job_completed"),
    ...at,
    job_id: str,
    outputs: z.array(OutputFileSchema),
    ui: z.optional(z.unknown()),
    elapsed_seconds: z.optional(num),
  }),
  z.looseObject({ type: z.literal("job_failed"), ...at, job_id: str, error: JobErrorSchema }),
  z.looseObject({ type: z.literal("job_cancelled"), ...at, job_id: str }),
  z.looseObject({
    type: z.literal("service_state_changed"),
    ...at,
    service: str,
    state: str,
    previous: z.optional(str),
    reason: optStr,
  }),
  z.looseObject({ type: z.literal("queue_changed"), ...at, service: str, queue_remaining: num }),
  z.looseObject({ type: z.literal("service_discovered"), ...at, url: str, kind: str, summary: z.optional(str) }),
]);
export type StreamEvent = z.infer<typeof StreamEventSchema>;

/** The first message of `/ws/events`: where the stream stands, whether the resume worked, else a snapshot. */
export const SubscribedSchema = z.looseObject({
  type: z.literal("subscribed"),
  epoch: str,
  offset: num,
  recovered: z.boolean(),
  since: optNum,
  snapshot: z.optional(z.array(JobViewSchema)),
});
export type Subscribed = z.infer<typeof SubscribedSchema>;

// ---- messages every studio endpoint may send ------------------------------------------------------------------

export const PingSchema = z.looseObject({ type: z.literal("ping"), timestamp: z.optional(str) });
export const PongSchema = z.looseObject({ type: z.literal("pong"), timestamp: z.optional(str) });
export const ServerErrorSchema = z.looseObject({ type: z.literal("error"), code: str, message: str });
export const ConnectionHelloSchema = z.looseObject({
  type: z.literal("connection"),
  job_id: optStr,
  status: str,
  message: z.optional(str),
});

// ---- the brief's messages (/ws/{job_id}, /ws/monitor) ---------------------------------------------------------

export const BriefStatusSchema = z.enum(["queued", "processing", "completed", "failed", "cancelled"]);
export type BriefStatus = z.infer<typeof BriefStatusSchema>;

export const BriefProgressSchema = z.looseObject({
  type: z.literal("progress"),
  job_id: str,
  status: BriefStatusSchema,
  progress: num,
  estimated_remaining: optNum,
  message: z.optional(str),
  output_path: optStr,
  timestamp: z.optional(str),
  offset: z.optional(num),
});
export type BriefProgress = z.infer<typeof BriefProgressSchema>;

export const SystemStatusSchema = z.looseObject({
  type: z.literal("system_status"),
  timestamp: z.optional(num),
  jobs: z.looseObject({ total: num, active: num, completed: num, failed: num, cancelled: z.optional(num) }),
  websockets: z.optional(z.looseObject({ total_connections: num, jobs_with_connections: z.optional(num) })),
  recent_jobs: z.array(
    z.looseObject({
      job_id: str,
      status: BriefStatusSchema,
      progress: num,
      message: z.optional(z.nullable(str)),
      service: z.optional(str),
      tag: optStr,
      current_node: optStr,
      estimated_remaining: optNum,
      output_path: optStr,
    }),
  ),
  offset: z.optional(num),
  epoch: z.optional(str),
});
export type SystemStatus = z.infer<typeof SystemStatusSchema>;

// ---- ComfyUI's own /ws events ----------------------------------------------------------------------------------

const promptId = { prompt_id: str };
export const ComfyEventSchema = z.discriminatedUnion("type", [
  z.looseObject({
    type: z.literal("status"),
    data: z.looseObject({
      status: z.optional(z.looseObject({ exec_info: z.looseObject({ queue_remaining: num }) })),
      sid: optStr,
    }),
  }),
  z.looseObject({ type: z.literal("execution_start"), data: z.looseObject({ ...promptId }) }),
  z.looseObject({
    type: z.literal("execution_cached"),
    data: z.looseObject({ ...promptId, nodes: z.array(str) }),
  }),
  z.looseObject({
    type: z.literal("executing"),
    data: z.looseObject({ prompt_id: optStr, node: optStr, display_node: optStr }),
  }),
  z.looseObject({
    type: z.literal("progress"),
    data: z.looseObject({ value: num, max: num, prompt_id: optStr, node: optStr }),
  }),
  z.looseObject({
    type: z.literal("progress_state"),
    data: z.looseObject({
      ...promptId,
      nodes: z.record(
        str,
        z.looseObject({ value: num, max: num, state: str, node_id: optStr, display_node_id: optStr }),
      ),
    }),
  }),
  z.looseObject({
    type: z.literal("executed"),
    data: z.looseObject({ ...promptId, node: str, output: z.optional(z.unknown()) }),
  }),
  z.looseObject({ type: z.literal("execution_success"), data: z.looseObject({ ...promptId }) }),
  z.looseObject({
    type: z.literal("execution_error"),
    data: z.looseObject({
      ...promptId,
      node_id: optStr,
      node_type: optStr,
      exception_message: z.optional(str),
      exception_type: optStr,
      traceback: z.optional(z.array(str)),
    }),
  }),
  z.looseObject({
    type: z.literal("execution_interrupted"),
    data: z.looseObject({ ...promptId, node_id: optStr, node_type: optStr }),
  }),
]);
export type ComfyEvent = z.infer<typeof ComfyEventSchema>;

/** ComfyUI's binary frames: 4-byte big-endian event type, then its payload. */
export const COMFY_BINARY_PREVIEW = 1;
export const COMFY_BINARY_PROGRESS_TEXT = 3;
export const COMFY_BINARY_PREVIEW_WITH_METADATA = 4;

const PreviewMetadataSchema = z.looseObject({ node_id: optStr, prompt_id: optStr, image_type: optStr });

export interface ComfyPreview {
  type: "binary_preview";
  mime: string;
  image: Uint8Array;
  prompt_id: string | null;
  node_id: string | null;
}

/** A node's progress text (`send_progress_text`): what it says it is doing. */
export interface ComfyProgressText {
  type: "progress_text";
  node_id: string;
  text: string;
}

/** A binary frame, or null when it is not one we understand (counted as malformed). */
export function parseComfyBinary(buf: ArrayBuffer): ComfyPreview | ComfyProgressText | null {
  if (buf.byteLength < 8) return null;
  const view = new DataView(buf);
  const event = view.getUint32(0);
  if (event === COMFY_BINARY_PROGRESS_TEXT) {
    const len = view.getUint32(4);
    if (8 + len > buf.byteLength) return null;
    const utf8 = new TextDecoder();
    return {
      type: "progress_text",
      node_id: utf8.decode(new Uint8Array(buf, 8, len)),
      text: utf8.decode(new Uint8Array(buf, 8 + len)),
    };
  }
  if (event === COMFY_BINARY_PREVIEW) {
    const format = view.getUint32(4);
    const mime = format === 2 ? "image/png" : format === 1 ? "image/jpeg" : null;
    if (!mime) return null;
    return { type: "binary_preview", mime, image: new Uint8Array(buf, 8), prompt_id: null, node_id: null };
  }
  if (event === COMFY_BINARY_PREVIEW_WITH_METADATA) {
    const len = view.getUint32(4);
    if (8 + len > buf.byteLength) return null;
    let meta: unknown;
    try {
      meta = JSON.parse(new TextDecoder().decode(new Uint8Array(buf, 8, len)));
    } catch {
      return null;
    }
    const m = PreviewMetadataSchema.safeParse(meta);
    if (!m.success) return null;
    return {
      type: "binary_preview",
      mime: m.data.image_type ?? "image/jpeg",
      image: new Uint8Array(buf, 8 + len),
      prompt_id: m.data.prompt_id ?? null,
      node_id: m.data.node_id ?? null,
    };
  }
  return null;
}

// ---- one entry point ---------------------------------------------------------------------------------------------

export type Protocol = "studio" | "brief" | "comfyui";

/** Every valid message, tagged with the protocol it came in. */
export type Incoming =
  | { protocol: "studio"; message: StreamEvent }
  | { protocol: "studio"; message: Subscribed }
  | { protocol: "brief"; message: BriefProgress }
  | { protocol: "brief"; message: SystemStatus }
  | { protocol: "comfyui"; message: ComfyEvent }
  | { protocol: "comfyui"; message: ComfyPreview }
  | { protocol: "comfyui"; message: ComfyProgressText }
  | { protocol: Protocol; message: z.infer<typeof PingSchema> }
  | { protocol: Protocol; message: z.infer<typeof PongSchema> }
  | { protocol: Protocol; message: z.infer<typeof ServerErrorSchema> }
  | { protocol: Protocol; message: z.infer<typeof ConnectionHelloSchema> };

export type Parsed = { ok: true; value: Incoming } | { ok: false; reason: string };

function firstIssue(error: { issues: ReadonlyArray<{ path: PropertyKey[]; message: string }> }): string {
  const i = error.issues[0];
  return i ? `${i.path.map(String).join(".") || "(message)"}: ${i.message}` : "invalid";
}

/** Validates one text frame of the given protocol. Never throws. */
export function parseText(protocol: Protocol, text: string): Parsed {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    return { ok: false, reason: "not JSON" };
  }
  if (typeof raw !== "object" || raw === null || typeof (raw as { type?: unknown }).type !== "string") {
    return { ok: false, reason: "no type" };
  }
  const type = (raw as { type: string }).type;
  const common =
    type === "ping"
      ? PingSchema
      : type === "pong"
        ? PongSchema
        : type === "error" && protocol !== "comfyui"
          ? ServerErrorSchema
          : type === "connection"
            ? ConnectionHelloSchema
            : null;
  if (common) {
    const r = common.safeParse(raw);
    return r.success
      ? { ok: true, value: { protocol, message: r.data } as Incoming }
      : { ok: false, reason: firstIssue(r.error) };
  }
  if (protocol === "studio") {
    const schema = type === "subscribed" ? SubscribedSchema : StreamEventSchema;
    const r = schema.safeParse(raw);
    return r.success
      ? { ok: true, value: { protocol, message: r.data } as Incoming }
      : { ok: false, reason: `${type}: ${firstIssue(r.error)}` };
  }
  if (protocol === "brief") {
    const schema = type === "system_status" ? SystemStatusSchema : BriefProgressSchema;
    const r = schema.safeParse(raw);
    return r.success
      ? { ok: true, value: { protocol, message: r.data } as Incoming }
      : { ok: false, reason: `${type}: ${firstIssue(r.error)}` };
  }
  const r = ComfyEventSchema.safeParse(raw);
  return r.success
    ? { ok: true, value: { protocol, message: r.data } }
    : { ok: false, reason: `${type}: ${firstIssue(r.error)}` };
}

/** The protocol a URL speaks: `/ws/events` the typed stream, ComfyUI's `/ws`, else the brief's endpoints. */
export function protocolOf(url: string): Protocol {
  const path = new URL(url, "http://localhost").pathname.replace(/\/+$/, "");
  if (path.endsWith("/ws/events")) return "studio";
  if (path.endsWith("/ws")) return "comfyui";
  return "brief";
}
