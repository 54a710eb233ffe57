/**
 * Switching a kernel to another image or device, shared by the notebook
 * widget and the menu: start the server's switch job, follow it, and wait
 * until the kernel runs again.
 */
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

/** The kernel's tfenv facts, or null when it does not run in a container. */
export async function getKernel(
  kernelId: string,
  signal?: AbortSignal
): Promise<IKernelInfo | null> {
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
 * the kernel then keeps running as before.
 */
export async function switchKernel(
  kernelId: string,
  request: ISwitchRequest,
  onJob: (job: IJob) => void,
  signal?: AbortSignal
): Promise<IKernelInfo> {
  const job = await requestAPI<IJob>(
    `kernels/${encodeURIComponent(kernelId)}/switch`,
    { method: 'POST', body: JSON.stringify(request), signal }
  );
  const final = await watchJob(job, onJob, signal);
  if (final.status === 'error') {
    throw new APIError(final.error || final.message, 0);
  }
  return settle(kernelId, signal);
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
