/**
 * Switching a kernel to another image or device, shared by the notebook
 * widget and the menu: start the server's switch job, follow it, and wait
 * until the kernel runs again.
 */
import { Kernel } from '@jupyterlab/services';
import { ISignal, Signal } from '@lumino/signaling';

import {
  APIError,
  IJob,
  IKernelInfo,
  ISwitchRequest,
  requestAPI,
  translation,
  watchJob
} from './api';

/** How long a restarted kernel may take to report itself running. */
const SETTLE_TIMEOUT_MS = 120_000;

/** Finds this page's open connections to a kernel (notebooks, consoles). */
export type ConnectionFinder = (kernelId: string) => Kernel.IKernelConnection[];

let findConnections: ConnectionFinder = () => [];

const switched = new Signal<unknown, IKernelInfo>({});

/** Emitted after any switch made from this page, with the kernel as it runs now. */
export const kernelSwitched: ISignal<unknown, IKernelInfo> = switched;

/** Called once by the main plugin, which knows the open notebooks. */
export function setConnectionFinder(finder: ConnectionFinder): void {
  findConnections = finder;
}

/**
 * Reconnect this page's connections to a kernel the server restarted.
 *
 * jupyter_server tells websocket clients nothing when a kernel is restarted
 * through its kernel manager (only its own REST restart and auto-restarts are
 * announced), so a notebook could wait for the old kernel forever. A new
 * websocket makes JupyterLab ask the new kernel for its status, as after a
 * restart from its own Kernel menu.
 */
async function reconnect(
  kernelId: string,
  extra: Kernel.IKernelConnection | null
): Promise<void> {
  const connections = new Set(findConnections(kernelId));
  if (extra && extra.id === kernelId && !extra.isDisposed) {
    connections.add(extra);
  }
  await Promise.all(
    [...connections].map(connection =>
      connection.reconnect().catch(error => {
        console.warn('jupyter-tfenv: reconnecting to the kernel failed', error);
      })
    )
  );
}

/** The kernel's tfenv facts, or null when it does not run in a container. */
export async function getKernel(
  kernelId: string,
  signal?: AbortSignal
): Promise<IKernelInfo | null> {
  if (!kernelId) {
    return null;
  }
  try {
    return await requestAPI<IKernelInfo>(
      `kernels/${encodeURIComponent(kernelId)}`,
      { signal }
    );
  } catch (error) {
    if (error instanceof APIError && error.status === 404) {
      return null;
    }
    throw error;
  }
}

/** The fraction of a job's download done, or null while the size is unknown. */
export function jobFraction(job: IJob): number | null {
  const { bytes_done, bytes_total } = job.progress ?? {};
  if (!bytes_total) {
    return job.status === 'done' ? 1 : null;
  }
  return Math.min(1, bytes_done / bytes_total);
}

/**
 * Switch `kernelId` and resolve with the kernel as it runs afterwards.
 *
 * Rejects with the job's error when pulling, preparing or restarting fails;
 * the kernel then keeps running as before. `connection` is a kernel
 * connection the caller holds besides the open notebooks' (the widget's).
 */
export async function switchKernel(
  kernelId: string,
  request: ISwitchRequest,
  onJob: (job: IJob) => void,
  signal?: AbortSignal,
  connection: Kernel.IKernelConnection | null = null
): Promise<IKernelInfo> {
  const job = await requestAPI<IJob>(
    `kernels/${encodeURIComponent(kernelId)}/switch`,
    { method: 'POST', body: JSON.stringify(request), signal }
  );
  const final = await watchJob(job, onJob, signal);
  if (final.status === 'error') {
    throw new APIError(final.error || final.message, 0);
  }
  await reconnect(kernelId, connection);
  const kernel = await settle(kernelId, signal);
  switched.emit(kernel);
  return kernel;
}

/** Wait until the restarted kernel's container runs and the kernel is idle. */
async function settle(
  kernelId: string,
  signal?: AbortSignal
): Promise<IKernelInfo> {
  const deadline = Date.now() + SETTLE_TIMEOUT_MS;
  for (;;) {
    const kernel = await getKernel(kernelId, signal);
    if (!kernel) {
      throw new APIError(translation().__('Kernel %1 is gone.', kernelId), 404);
    }
    const ready =
      kernel.status === 'running' &&
      !['starting', 'restarting'].includes(kernel.execution_state);
    if (ready || Date.now() > deadline) {
      return kernel;
    }
    await new Promise(resolve => setTimeout(resolve, 500));
  }
}
