/**
 * The console's REST client: JSON over /autopilot/api with the server's auth, and ETags, so
 * that polling a run that has not changed costs a 304 and no re-render.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

export interface Controls {
  stop: boolean;
  resume: boolean;
  where: string | null;
  note?: string;
}

export interface Run {
  id: string;
  objective: string;
  status: string;
  agent: string;
  model: string | null;
  data: string | null;
  target: string | null;
  iterations_done: number;
  max_iters: number;
  best_iteration: number | null;
  best_score: number | null;
  started_at: string;
  finished_at: string | null;
  duration_s: number | null;
  reason: string | null;
  error: string | null;
  controls: Controls;
}

export interface RunPage {
  runs: Run[];
  next_offset: number | null;
  home: string;
}

export interface ErrorEntry {
  source: string;
  iteration: number | null;
  message: string;
}

/** A free-text note of the user's (the notebook panel's "Add hint"). */
export interface Note {
  iteration: number;
  text: string;
  at: string;
}

export interface RunDetail extends Run {
  spec: Record<string, unknown>;
  llm: { requests: number; failed: number; prompt_tokens: number; completion_tokens: number };
  errors: ErrorEntry[];
  /** The path of the notebook whose kernel started (or last resumed) the run, if any. */
  notebook: string | null;
  notes: Note[];
}

/** A candidate's code, as ``iterations/N/code`` gives it. */
export interface Code {
  iteration: number;
  files: Record<string, string>;
  main: string;
  recipe: Record<string, unknown>;
}

export interface Sandbox {
  status: string;
  limit: string | null;
  exit_code: number | null;
  signal: number | null;
  error?: { type?: string; message?: string };
}

export interface CheckResult {
  check: string;
  tier: number;
  hard: boolean;
  passed: boolean;
  score: number;
  seconds: number | null;
  sandbox: Sandbox | null;
  keeps: string[];
}

export interface Hint {
  key: string;
  kind: string;
  priority: string;
  check: string;
  metric: string;
  observed: unknown;
  expected: unknown;
  suggestion: string;
  where: string;
  decision: 'accept' | 'reject' | null;
}

export interface Iteration {
  n: number;
  status: string;
  agent: string | null;
  score: number | null;
  gates_passed: number | null;
  targets_met: boolean | null;
  started_at: string;
  duration_s: number | null;
  checks: CheckResult[];
  skipped: string[];
  hints: Hint[];
  notes: Record<string, unknown>;
}

export interface FileDiff {
  name: string;
  status: string;
  diff: string;
}

export interface Change {
  key: string;
  from: unknown;
  to: unknown;
}

export interface Diff {
  files: FileDiff[];
  recipe: Change[];
  init_kwargs: Change[];
}

export interface Artifact {
  name: string;
  path: string;
  kind: string;
  bytes: number;
  iteration: number | null;
}

export interface Exchange {
  iteration: number;
  seq: number;
  model: string;
  status: string;
  error: string | null;
  latency_s: number | null;
  prompt_tokens: number | null;
  completion_tokens: number | null;
  request: unknown;
  response: unknown;
}

/** An answer of the API that is not 2xx: its status and the server's message. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string
  ) {
    super(message);
  }
}

/** The answer, and whether it differs from the last one for the same URL. */
export interface Fetched<T> {
  data: T;
  changed: boolean;
}

const etags = new Map<string, { etag: string; data: unknown }>();

/** The URL of an API path (for links such as artifact downloads). */
export function apiUrl(path: string): string {
  const settings = ServerConnection.makeSettings();
  return URLExt.join(settings.baseUrl, 'autopilot/api', path);
}

/** GET with If-None-Match; a 304 gives back the data seen last. */
export async function get<T>(path: string): Promise<Fetched<T>> {
  const url = apiUrl(path);
  const settings = ServerConnection.makeSettings();
  const seen = etags.get(url);
  const headers: Record<string, string> = seen ? { 'If-None-Match': seen.etag } : {};
  const response = await ServerConnection.makeRequest(url, { headers }, settings);
  if (response.status === 304 && seen) {
    return { data: seen.data as T, changed: false };
  }
  const data = await answer<T>(response);
  const etag = response.headers.get('ETag');
  if (etag) {
    etags.set(url, { etag, data });
  }
  return { data, changed: true };
}

/** POST a JSON body. */
export async function post<T>(path: string, body: unknown = {}): Promise<T> {
  const settings = ServerConnection.makeSettings();
  const response = await ServerConnection.makeRequest(
    apiUrl(path),
    { method: 'POST', body: JSON.stringify(body) },
    settings
  );
  return answer<T>(response);
}

async function answer<T>(response: Response): Promise<T> {
  let data: any = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) {
    throw new ApiError(response.status, data?.message ?? response.statusText);
  }
  return data as T;
}
