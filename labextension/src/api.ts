/**
 * The one way the front end talks to the server: the jupyter-tfenv REST API
 * under `{base_url}tfenv/api/` (see docs/rest-api.md).
 *
 * Every request goes through `ServerConnection.makeRequest`, so it carries
 * the same token, cookie and XSRF header as JupyterLab's own requests and
 * opens no unauthenticated path.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';
import {
  ITranslator,
  nullTranslator,
  TranslationBundle
} from '@jupyterlab/translation';

let trans: TranslationBundle = nullTranslator.load('jupyter_tfenv');

/** Use the user's language for the messages the front end writes itself. */
export function setTranslator(translator: ITranslator): void {
  trans = translator.load('jupyter_tfenv');
}

/** The translations of jupyter-tfenv's own strings. */
export function translation(): TranslationBundle {
  return trans;
}

/** A Docker image the server can run kernels in. */
export interface IImage {
  image: string;
  id: string;
  tensorflow_version: string | null;
  python_version: string | null;
  size: number;
  gpu: boolean;
  kernel_ready: boolean;
  kernels: string[];
}

/** GET images: local images, and tags the configured registry offers. */
export interface IImages {
  local: IImage[];
  registry: { repository: string; tags: string[]; error: string | null };
}

/** A pull, prepare or switch the server runs in the background. */
export interface IJob {
  id: string;
  kind: 'pull' | 'prepare' | 'switch';
  image: string;
  status: 'running' | 'done' | 'error';
  progress: { bytes_done: number; bytes_total: number };
  message: string;
  error: string | null;
  result: { [key: string]: unknown };
}

/** A running kernel that lives in a tfenv container. */
export interface IKernelInfo {
  kernel_id: string;
  container_id: string | null;
  image: string;
  tensorflow_version: string | null;
  gpus: string;
  status: 'running' | 'exited' | 'starting';
  execution_state: string;
}

/** POST kernels/<id>/switch: the image and/or GPUs to run on next. */
export interface ISwitchRequest {
  image?: string;
  gpus?: string;
}

/** A failed request, carrying the server's own explanation. */
export class APIError extends Error {
  constructor(
    message: string,
    readonly status: number
  ) {
    super(message);
  }
}

const API_ROOT = 'tfenv/api';

/**
 * Send a request to the REST API and decode its JSON answer.
 *
 * Network failures and error answers both become an `APIError` whose message
 * is the server's `message` when it sent one, so callers can show it as is.
 */
export async function requestAPI<T>(
  path: string,
  init: RequestInit = {}
): Promise<T> {
  const response = await send(path, init);
  const text = await response.text();
  let data: unknown = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = text;
    }
  }
  if (!response.ok) {
    throw new APIError(errorMessage(response, data), response.status);
  }
  return data as T;
}

/**
 * Follow a job until it ends, calling `onUpdate` with each new state.
 *
 * It reads the job's Server-Sent Events through the same authenticated
 * request path (an EventSource could not send the token header). When the
 * stream breaks off early, it falls back to asking for the job once a second.
 */
export async function watchJob(
  job: IJob,
  onUpdate: (job: IJob) => void,
  signal?: AbortSignal
): Promise<IJob> {
  let latest = job;
  onUpdate(latest);
  if (latest.status !== 'running') {
    return latest;
  }
  try {
    latest = await readEvents(latest, onUpdate, signal);
  } catch (reason) {
    if (signal?.aborted) {
      throw reason;
    }
    // The stream failed (a proxy that buffers, a dropped connection): poll.
  }
  while (latest.status === 'running') {
    await sleep(1000, signal);
    latest = await requestAPI<IJob>(`jobs/${encodeURIComponent(job.id)}`, {
      signal
    });
    onUpdate(latest);
  }
  return latest;
}

async function readEvents(
  job: IJob,
  onUpdate: (job: IJob) => void,
  signal?: AbortSignal
): Promise<IJob> {
  const path = `jobs/${encodeURIComponent(job.id)}/events`;
  const response = await send(path, { signal });
  if (!response.ok || !response.body) {
    throw new APIError(errorMessage(response, null), response.status);
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let latest = job;
  let buffer = '';
  for (;;) {
    const { done, value } = await reader.read();
    if (done) {
      return latest;
    }
    buffer += decoder.decode(value, { stream: true });
    let end = buffer.indexOf('\n\n');
    while (end >= 0) {
      const event = parseEvent(buffer.slice(0, end));
      buffer = buffer.slice(end + 2);
      if (event) {
        latest = event;
        onUpdate(latest);
        if (latest.status !== 'running') {
          await reader.cancel();
          return latest;
        }
      }
      end = buffer.indexOf('\n\n');
    }
  }
}

function parseEvent(block: string): IJob | null {
  const data = block
    .split('\n')
    .filter(line => line.startsWith('data:'))
    .map(line => line.slice(5).trimStart())
    .join('\n');
  if (!data) {
    return null;
  }
  try {
    return JSON.parse(data) as IJob;
  } catch {
    return null;
  }
}

async function send(path: string, init: RequestInit): Promise<Response> {
  const settings = ServerConnection.makeSettings();
  const url = URLExt.join(settings.baseUrl, API_ROOT, path);
  try {
    return await ServerConnection.makeRequest(url, init, settings);
  } catch (error) {
    if (init.signal?.aborted) {
      throw error;
    }
    throw new APIError(
      trans.__('Cannot reach the Jupyter server (%1).', String(error)),
      0
    );
  }
}

function errorMessage(response: Response, data: unknown): string {
  if (data && typeof data === 'object' && 'message' in data) {
    const message = (data as { message: unknown }).message;
    if (typeof message === 'string' && message) {
      return message;
    }
  }
  if (response.status === 404) {
    return trans.__(
      'The jupyter-tfenv server extension does not answer. Enable it with `%1` and restart Jupyter.',
      'jupyter server extension enable jupyter_tfenv'
    );
  }
  return `${response.status} ${response.statusText}`.trim();
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(new Error('aborted'));
      return;
    }
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => {
      clearTimeout(timer);
      reject(new Error('aborted'));
    });
  });
}
